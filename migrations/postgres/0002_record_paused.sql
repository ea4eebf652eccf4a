-- As migrations/sqlite/0005_record_paused.sql.
ALTER TABLE channels ADD COLUMN record_paused BIGINT NOT NULL DEFAULT 0;
