-- The snapshot index (issue 12): one row per stored `<channel>/<unix_ms>.jpg` in the Snapshot DestBucket,
-- written with its NotifyTopic message in one transaction. DescribeLiveStreamSnapshotInfo reads it by the
-- channel's own bucket; retention deletes by the bucket the objects are in.
CREATE TABLE snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket        TEXT    NOT NULL,   -- the channel's bucket
    channel       TEXT    NOT NULL,
    dest_bucket   TEXT    NOT NULL,   -- where the object is
    object_key    TEXT    NOT NULL,   -- inside dest_bucket: <channel>/<unix_ms>.jpg
    created_ms    INTEGER NOT NULL,   -- wall time of the capture (the object name's unix_ms)
    media_ms      INTEGER NOT NULL,   -- the keyframe's presentation time on the publish's timeline
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    size          INTEGER NOT NULL
);
CREATE INDEX snapshots_by_channel ON snapshots (bucket, channel, created_ms);
CREATE INDEX snapshots_by_dest ON snapshots (dest_bucket, created_ms);
