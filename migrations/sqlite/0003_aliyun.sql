-- Aliyun-style callback configuration. AppId (EventSub) and DomainName map onto buckets.
CREATE TABLE aliyun_event_subs (
    id            TEXT    NOT NULL PRIMARY KEY,
    bucket        TEXT    NOT NULL,
    app_id        TEXT    NOT NULL,
    channel_id    TEXT    NOT NULL,   -- '' means every channel of the bucket
    users         TEXT    NOT NULL,   -- JSON array; empty means every user
    events        TEXT    NOT NULL,   -- JSON array: ChannelEvent, UserEvent
    callback_url  TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    modified_ms   INTEGER NOT NULL
);
CREATE INDEX aliyun_event_subs_by_bucket ON aliyun_event_subs (bucket, created_ms);

CREATE TABLE aliyun_record_notify (
    bucket              TEXT    NOT NULL PRIMARY KEY,
    domain              TEXT    NOT NULL,
    notify_url          TEXT    NOT NULL,
    on_demand_url       TEXT    NOT NULL DEFAULT '',
    need_status_notify  INTEGER NOT NULL DEFAULT 0,
    notify_req_auth     INTEGER NOT NULL DEFAULT 0,
    notify_auth_key     TEXT    NOT NULL DEFAULT '',
    updated_ms          INTEGER NOT NULL
);

CREATE TABLE aliyun_streams_notify (
    bucket                TEXT    NOT NULL PRIMARY KEY,
    domain                TEXT    NOT NULL,
    notify_url            TEXT    NOT NULL,
    notify_req_auth       INTEGER NOT NULL DEFAULT 0,
    notify_auth_key       TEXT    NOT NULL DEFAULT '',
    exception_notify_url  TEXT    NOT NULL DEFAULT '',
    switch_notify_url     TEXT    NOT NULL DEFAULT '',
    updated_ms            INTEGER NOT NULL
);

-- What the delivery-record queries filter on: the configuration an entry came from (subscription id)
-- and the vendor's notification type (file_created, record_started, publish, ...).
ALTER TABLE outbox ADD COLUMN source_ref TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN notify_type TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN domain TEXT NOT NULL DEFAULT '';
CREATE INDEX outbox_records ON outbox (kind, bucket, created_ms);
CREATE INDEX delivery_attempts_by_time ON delivery_attempts (time_ms);
