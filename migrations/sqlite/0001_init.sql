-- Channels of each bucket, with their OSS LiveChannel configuration.
CREATE TABLE channels (
    bucket                 TEXT    NOT NULL,
    name                   TEXT    NOT NULL,
    description            TEXT    NOT NULL DEFAULT '',
    status                 TEXT    NOT NULL CHECK (status IN ('enabled', 'disabled')),
    frag_duration          INTEGER NOT NULL,
    frag_count             INTEGER NOT NULL,
    playlist_name          TEXT    NOT NULL,
    snapshot_role_name     TEXT,
    snapshot_dest_bucket   TEXT,
    snapshot_notify_topic  TEXT,
    snapshot_interval      INTEGER,
    created_ms             INTEGER NOT NULL,
    last_modified_ms       INTEGER NOT NULL,
    PRIMARY KEY (bucket, name)
);

-- One row per publish session; end_ms is NULL while it is live (or after a crash, until the next start).
CREATE TABLE push_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket       TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    start_ms     INTEGER NOT NULL,
    end_ms       INTEGER,
    remote_addr  TEXT    NOT NULL
);
CREATE INDEX push_history_by_channel ON push_history (bucket, channel, id);

-- Every stored segment: what PostVodPlaylist lists and what a restart continues from.
CREATE TABLE segments (
    bucket         TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    start_ms       INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL,
    object_key     TEXT    NOT NULL,
    discontinuity  INTEGER NOT NULL,
    PRIMARY KEY (bucket, channel, seq)
);
CREATE INDEX segments_by_time ON segments (bucket, channel, start_ms);
