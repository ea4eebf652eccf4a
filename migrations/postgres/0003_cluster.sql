-- As migrations/sqlite/0006_cluster.sql.
CREATE TABLE live_leases (
    bucket          TEXT COLLATE "C" NOT NULL,
    channel         TEXT COLLATE "C" NOT NULL,
    node_id         TEXT COLLATE "C" NOT NULL,
    holder          TEXT COLLATE "C" NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('live', 'flushing')),
    kicked          BIGINT NOT NULL DEFAULT 0,
    lease_until_ms  BIGINT NOT NULL,
    since_ms        BIGINT NOT NULL,
    remote_addr     TEXT   NOT NULL,
    user_args       TEXT   NOT NULL DEFAULT '',
    push_id         BIGINT,
    stats           TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (bucket, channel)
);
CREATE INDEX live_leases_by_node ON live_leases (node_id);
CREATE INDEX live_leases_by_expiry ON live_leases (lease_until_ms);

ALTER TABLE push_history ADD COLUMN node_id TEXT COLLATE "C" NOT NULL DEFAULT '';

ALTER TABLE outbox ADD COLUMN claimed_by TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN claim_until_ms BIGINT NOT NULL DEFAULT 0;

CREATE TABLE aliyun_nonces (
    nonce       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX aliyun_nonces_by_expiry ON aliyun_nonces (expires_ms);
