-- Set when disabling the channel paused a live recording (record_paused was sent): only then does
-- enabling it again send record_resumed.
ALTER TABLE channels ADD COLUMN record_paused INTEGER NOT NULL DEFAULT 0;
