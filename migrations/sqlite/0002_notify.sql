-- Huawei stream notification (PUT /v1/{project_id}/notifications/publish): one URL per ingest domain.
CREATE TABLE huawei_publish_notify (
    bucket          TEXT    NOT NULL PRIMARY KEY,
    domain          TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    auth_sign_key   TEXT    NOT NULL DEFAULT '',
    call_back_area  TEXT    NOT NULL DEFAULT '',
    updated_ms      INTEGER NOT NULL
);

-- Huawei recording callbacks (/v1/{project_id}/record/callbacks): one per (domain, app).
CREATE TABLE huawei_record_callbacks (
    id              TEXT    NOT NULL PRIMARY KEY,
    bucket          TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    app             TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL,   -- JSON array of event types
    sign_type       TEXT    NOT NULL,
    sign_key        TEXT    NOT NULL DEFAULT '',
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    UNIQUE (domain, app)
);

-- The outbox: every callback is written here before anything is sent; the sender works through it.
-- Signatures that depend on the send time are computed per attempt from `payload` and `sign_key`.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL,   -- payload flavour, decides how it is rendered and signed
    bucket           TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    url              TEXT    NOT NULL,
    payload          TEXT    NOT NULL,   -- JSON
    sign_key         TEXT    NOT NULL DEFAULT '',
    idempotency_key  TEXT    NOT NULL UNIQUE,
    created_ms       INTEGER NOT NULL,
    next_attempt_ms  INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed'))
);
CREATE INDEX outbox_pending ON outbox (state, next_attempt_ms);
CREATE INDEX outbox_order ON outbox (url, bucket, channel, state, id);

-- One row per delivery attempt: what was sent and what came back.
CREATE TABLE delivery_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id        INTEGER NOT NULL REFERENCES outbox (id),
    time_ms          INTEGER NOT NULL,
    url              TEXT    NOT NULL,
    request_headers  TEXT    NOT NULL,   -- JSON object
    request_body     TEXT    NOT NULL,
    status           INTEGER,            -- NULL when no HTTP response arrived
    response_body    TEXT    NOT NULL DEFAULT '',
    success          INTEGER NOT NULL,
    error            TEXT    NOT NULL DEFAULT '',
    cost_ms          INTEGER NOT NULL
);
CREATE INDEX delivery_attempts_by_outbox ON delivery_attempts (outbox_id);
