-- Several nodes on one database (issue 11).
-- live_leases: the one publisher of a channel, cluster-wide. A row is a claim that its node renews; once
-- lease_until_ms (database clock) passes, any node may delete it and take the channel. state 'flushing':
-- the publisher is gone but its storage writer still stores the last segments; the next publish waits.
CREATE TABLE live_leases (
    bucket          TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    node_id         TEXT    NOT NULL,
    holder          TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('live', 'flushing')),
    kicked          INTEGER NOT NULL DEFAULT 0,
    lease_until_ms  INTEGER NOT NULL,
    since_ms        INTEGER NOT NULL,
    remote_addr     TEXT    NOT NULL,
    user_args       TEXT    NOT NULL DEFAULT '',
    push_id         INTEGER,
    stats           TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (bucket, channel)
);
CREATE INDEX live_leases_by_node ON live_leases (node_id);
CREATE INDEX live_leases_by_expiry ON live_leases (lease_until_ms);

-- Which node opened a push: a starting node closes only its own (and those no lease covers).
ALTER TABLE push_history ADD COLUMN node_id TEXT NOT NULL DEFAULT '';

-- Outbox claims: a node sends a row only while its claim lasts, so N nodes do not send N copies.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN claim_until_ms INTEGER NOT NULL DEFAULT 0;

-- Aliyun SignatureNonce values seen, shared by every node (a replay to another node is refused too).
CREATE TABLE aliyun_nonces (
    nonce       TEXT    NOT NULL PRIMARY KEY,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX aliyun_nonces_by_expiry ON aliyun_nonces (expires_ms);

-- Every status change of a channel: its id names the change in callbacks' idempotency keys (unique
-- across nodes and restarts, unlike a per-process counter).
CREATE TABLE channel_status_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket   TEXT    NOT NULL,
    channel  TEXT    NOT NULL,
    status   TEXT    NOT NULL CHECK (status IN ('enabled', 'disabled')),
    time_ms  INTEGER NOT NULL
);

-- Named counters for ids that must be unique on every node (a VOD playlist's callbacks).
CREATE TABLE counters (
    name   TEXT    NOT NULL PRIMARY KEY,
    value  INTEGER NOT NULL
);
