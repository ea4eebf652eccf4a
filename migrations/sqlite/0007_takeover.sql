-- Publisher takeover across nodes (issue 15): a new publish on another node asks the holder to give the
-- channel up. takeover_ms is when (database clock) it last asked; 0 = never. The holder decides, because
-- only it knows when its publisher last sent media.
ALTER TABLE live_leases ADD COLUMN takeover_ms INTEGER NOT NULL DEFAULT 0;
