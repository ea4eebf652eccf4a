//! Live leases: which node holds a channel live, cluster-wide (table `live_leases`). A lease is a row
//! with an expiry on the database clock; its node renews every lease it holds in one statement, and any
//! node may delete a lapsed one (its node died) and take the channel. Claiming opens the push-history
//! record in the same transaction, so every open push of a live publish is covered by a lease, and a
//! push no lease covers is a dead one that any node may close.
//!
//! Not here: the renewal loop, kicks and fencing (`cluster`), the stop callbacks of dead publishes.

use std::time::{Duration, SystemTime};

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Meta, MetaError, Op, big, flag, from_millis, millis, opt_int};

/// Is the publisher still there, or is its storage writer only storing the last segments?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Live,
    Flushing,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Live => "live",
            LeaseState::Flushing => "flushing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(LeaseState::Live),
            "flushing" => Some(LeaseState::Flushing),
            _ => None,
        }
    }
}

/// A claim being made.
#[derive(Debug, Clone)]
pub struct LeaseRequest<'a> {
    pub bucket: &'a str,
    pub channel: &'a str,
    pub node_id: &'a str,
    /// Unique per publish, across nodes and restarts: renewals and releases name it.
    pub holder: &'a str,
    pub remote_addr: &'a str,
    /// What callbacks pass on (the stop callback of a dead publish is rebuilt from the row).
    pub user_args: &'a str,
    pub since: SystemTime,
    pub lease: Duration,
}

/// A lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub bucket: String,
    pub channel: String,
    pub node_id: String,
    pub holder: String,
    pub state: LeaseState,
    pub kicked: bool,
    pub since: SystemTime,
    pub remote_addr: String,
    pub user_args: String,
    pub push_id: Option<i64>,
    /// The live stats its node last wrote (JSON, `cluster` reads it).
    pub stats: String,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This publish holds the channel; `expired` is the lapsed lease of a dead node it replaced, whose
    /// push record this claim closed.
    Claimed { push_id: i64, expired: Option<Lease> },
    /// Another publish holds it.
    Held(Lease),
}

/// One lease as a renewal found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub bucket: String,
    pub channel: String,
    pub holder: String,
    pub kicked: bool,
    /// How long ago (database clock) a publish on another node last asked to take the channel over.
    pub takeover_asked: Option<Duration>,
}

const LEASE_COLUMNS: &str =
    "bucket, channel, node_id, holder, state, kicked, since_ms, remote_addr, user_args, push_id, stats";

fn lease_from_row(r: &AnyRow) -> Result<Lease, MetaError> {
    let state: String = r.try_get(4)?;
    Ok(Lease {
        bucket: r.try_get(0)?,
        channel: r.try_get(1)?,
        node_id: r.try_get(2)?,
        holder: r.try_get(3)?,
        state: LeaseState::parse(&state).ok_or_else(|| MetaError::Corrupt(format!("lease state {state:?}")))?,
        kicked: flag(r, 5)?,
        since: from_millis(r.try_get(6)?),
        remote_addr: r.try_get(7)?,
        user_args: r.try_get(8)?,
        push_id: opt_int(r, 9)?,
        stats: r.try_get(10)?,
    })
}

impl Backend {
    /// The database's clock in Unix milliseconds: every node compares lease expiries on one clock, so
    /// skew between nodes does not shorten or stretch a lease.
    pub(crate) fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// Closes a dead publish's push record at the end of its last stored segment (or its start).
async fn close_dead_push(tx: &mut sqlx::AnyConnection, backend: Backend, push_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("{} WHERE id = $1 AND end_ms IS NULL", backend.close_dead_pushes()))
        .bind(push_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn seq_counter(bucket: &str, channel: &str) -> String {
    format!("seq/{bucket}/{channel}")
}

/// A publish that ended cleanly gives back the numbers it reserved and did not use (`next..end`), so
/// the next publish continues without a jump. Through the journal, so it lands when the database is
/// back if it is away; it changes nothing once the counter moved (someone reserved after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqReturn {
    pub bucket: String,
    pub channel: String,
    pub end: u64,
    pub next: u64,
}

pub(crate) async fn return_seqs(tx: &mut sqlx::AnyConnection, r: &SeqReturn) -> Result<bool, sqlx::Error> {
    if r.next > r.end {
        return Ok(false);
    }
    let done = sqlx::query("UPDATE counters SET value = $3 WHERE name = $1 AND value = $2")
        .bind(seq_counter(&r.bucket, &r.channel))
        .bind(big(r.end))
        .bind(big(r.next))
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

impl Meta {
    /// Claims the channel for this publish unless a live lease holds it. A lapsed lease is deleted (its
    /// push closed) and replaced. On success the push record is open, in the same transaction.
    pub async fn claim_lease(&self, req: &LeaseRequest<'_>) -> Result<Claim, MetaError> {
        let now = self.backend.now_ms();
        let mut tx = self.write_tx().await.op("claim_lease")?;
        let expired = sqlx::query(&format!(
            "DELETE FROM live_leases WHERE bucket = $1 AND channel = $2 AND lease_until_ms < {now}
             RETURNING {LEASE_COLUMNS}"
        ))
        .bind(req.bucket)
        .bind(req.channel)
        .fetch_optional(&mut *tx)
        .await
        .op("claim_lease")?
        .map(|r| lease_from_row(&r))
        .transpose()?;
        if let Some(push_id) = expired.as_ref().and_then(|e| e.push_id) {
            close_dead_push(&mut tx, self.backend, push_id).await.op("claim_lease")?;
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO live_leases (bucket, channel, node_id, holder, state, lease_until_ms, since_ms,
                 remote_addr, user_args)
             VALUES ($1, $2, $3, $4, 'live', {now} + $5, $6, $7, $8)
             ON CONFLICT (bucket, channel) DO NOTHING RETURNING holder"
        ))
        .bind(req.bucket)
        .bind(req.channel)
        .bind(req.node_id)
        .bind(req.holder)
        .bind(big(req.lease.as_millis()))
        .bind(millis(req.since))
        .bind(req.remote_addr)
        .bind(req.user_args)
        .fetch_optional(&mut *tx)
        .await
        .op("claim_lease")?;
        if inserted.is_none() {
            let held =
                sqlx::query(&format!("SELECT {LEASE_COLUMNS} FROM live_leases WHERE bucket = $1 AND channel = $2"))
                    .bind(req.bucket)
                    .bind(req.channel)
                    .fetch_one(&mut *tx)
                    .await
                    .op("claim_lease")?;
            let held = lease_from_row(&held)?;
            tx.commit().await.op("claim_lease")?;
            return Ok(Claim::Held(held));
        }
        let push = sqlx::query(
            "INSERT INTO push_history (bucket, channel, start_ms, remote_addr, node_id) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(req.bucket)
        .bind(req.channel)
        .bind(millis(req.since))
        .bind(req.remote_addr)
        .bind(req.node_id)
        .fetch_one(&mut *tx)
        .await
        .op("claim_lease")?;
        let push_id: i64 = push.try_get(0)?;
        sqlx::query("UPDATE live_leases SET push_id = $1 WHERE bucket = $2 AND channel = $3")
            .bind(push_id)
            .bind(req.bucket)
            .bind(req.channel)
            .execute(&mut *tx)
            .await
            .op("claim_lease")?;
        tx.commit().await.op("claim_lease")?;
        Ok(Claim::Claimed { push_id, expired })
    }

    /// Extends every unexpired lease of `node_id` by `lease`; returns the node's live leases after that
    /// (the renewed ones, and any claimed since). A lease this node thinks it held before the renewal
    /// and that is not returned was lost (it lapsed, or another node took the channel).
    pub async fn renew_leases(&self, node_id: &str, lease: Duration) -> Result<Vec<Renewed>, MetaError> {
        let now = self.backend.now_ms();
        // The rows are read afterwards, not returned by the UPDATE: a statement holds SQLite's write
        // lock until its last row is taken, and rows go to the async side 50 at a time, each hand-off a
        // wake-up of the task; at 1000 leases on a loaded runtime that held every writer for seconds.
        // Both statements on one connection: the read pool is where every publish's start-up reads
        // queue, and at 1000 publishes starting at once the renewal waited there until its leases lapsed.
        let mut conn = self.pool.acquire().await.op("renew_leases")?;
        sqlx::query(&format!(
            "UPDATE live_leases SET lease_until_ms = {now} + $2 WHERE node_id = $1 AND lease_until_ms >= {now}"
        ))
        .bind(node_id)
        .bind(big(lease.as_millis()))
        .execute(&mut *conn)
        .await
        .op("renew_leases")?;
        let rows = sqlx::query(&format!(
            "SELECT bucket, channel, holder, kicked, CASE WHEN takeover_ms > 0 THEN {now} - takeover_ms ELSE -1 END
             FROM live_leases WHERE node_id = $1 AND lease_until_ms >= {now}"
        ))
        .bind(node_id)
        .fetch_all(&mut *conn)
        .await
        .op("renew_leases")?;
        drop(conn);
        rows.iter()
            .map(|r| {
                Ok(Renewed {
                    bucket: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    holder: r.try_get(2)?,
                    kicked: flag(r, 3)?,
                    takeover_asked: u64::try_from(r.try_get::<i64, _>(4)?).ok().map(Duration::from_millis),
                })
            })
            .collect()
    }

    /// The publisher of `holder` is gone; its writer still stores (the next publish waits for it).
    pub async fn lease_flushing(&self, bucket: &str, channel: &str, holder: &str) -> Result<bool, MetaError> {
        let done =
            sqlx::query("UPDATE live_leases SET state = 'flushing' WHERE bucket = $1 AND channel = $2 AND holder = $3")
                .bind(bucket)
                .bind(channel)
                .bind(holder)
                .execute(&self.pool)
                .await
                .op("lease_flushing")?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `holder`'s lease (its last segment is stored). False if it was not held any more.
    pub async fn release_lease(&self, bucket: &str, channel: &str, holder: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM live_leases WHERE bucket = $1 AND channel = $2 AND holder = $3")
            .bind(bucket)
            .bind(channel)
            .bind(holder)
            .execute(&self.pool)
            .await
            .op("release_lease")?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks whichever node holds the channel live to end the publish (it sees the flag at its next
    /// renewal). Returns that node's id, or None if nobody publishes.
    pub async fn kick_lease(&self, bucket: &str, channel: &str) -> Result<Option<String>, MetaError> {
        let now = self.backend.now_ms();
        let row = sqlx::query(&format!(
            "UPDATE live_leases SET kicked = 1
             WHERE bucket = $1 AND channel = $2 AND state = 'live' AND lease_until_ms >= {now} RETURNING node_id"
        ))
        .bind(bucket)
        .bind(channel)
        .fetch_optional(&self.pool)
        .await
        .op("kick_lease")?;
        let node: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
        if let Some(node) = &node {
            // The holder polls every renewal; the notification makes it act now.
            self.notify_nodes(super::events::Topic::Kick, node).await;
        }
        Ok(node)
    }

    /// A new publish of the channel asks `holder` (on whichever node) to give it up; the holder's node
    /// decides at its next renewal, by its bucket's takeover rule. Returns that node's id, or None if
    /// `holder` no longer holds the channel live.
    pub async fn request_takeover(
        &self,
        bucket: &str,
        channel: &str,
        holder: &str,
    ) -> Result<Option<String>, MetaError> {
        let now = self.backend.now_ms();
        let row = sqlx::query(&format!(
            "UPDATE live_leases SET takeover_ms = {now}
             WHERE bucket = $1 AND channel = $2 AND holder = $3 AND state = 'live' AND lease_until_ms >= {now}
             RETURNING node_id"
        ))
        .bind(bucket)
        .bind(channel)
        .bind(holder)
        .fetch_optional(&self.pool)
        .await
        .op("request_takeover")?;
        let node: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
        if let Some(node) = &node {
            self.notify_nodes(super::events::Topic::Kick, node).await;
        }
        Ok(node)
    }

    /// The unexpired live lease of a channel, on whichever node.
    pub async fn live_lease(&self, bucket: &str, channel: &str) -> Result<Option<Lease>, MetaError> {
        let now = self.backend.now_ms();
        let row = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM live_leases
             WHERE bucket = $1 AND channel = $2 AND state = 'live' AND lease_until_ms >= {now}"
        ))
        .bind(bucket)
        .bind(channel)
        .fetch_optional(&self.read)
        .await
        .op("live_lease")?;
        row.map(|r| lease_from_row(&r)).transpose()
    }

    /// Deletes lapsed leases (or, with `node_id`, every lease of that node: it restarted, so none of them
    /// lives) and closes their push records. Returns what was deleted: the caller owes each its stop
    /// callbacks. Two nodes sweeping at once each get a disjoint set.
    pub async fn expire_leases(&self, node_id: Option<&str>) -> Result<Vec<Lease>, MetaError> {
        let now = self.backend.now_ms();
        let mut tx = self.write_tx().await.op("expire_leases")?;
        let rows = sqlx::query(&format!(
            "DELETE FROM live_leases WHERE lease_until_ms < {now} OR node_id = $1 RETURNING {LEASE_COLUMNS}"
        ))
        // No node is called "": without one, only lapsed leases go.
        .bind(node_id.unwrap_or(""))
        .fetch_all(&mut *tx)
        .await
        .op("expire_leases")?;
        let leases = rows.iter().map(lease_from_row).collect::<Result<Vec<_>, _>>()?;
        for push_id in leases.iter().filter_map(|l| l.push_id) {
            close_dead_push(&mut tx, self.backend, push_id).await.op("expire_leases")?;
        }
        tx.commit().await.op("expire_leases")?;
        Ok(leases)
    }

    /// Reserves `count` segment sequence numbers for the channel's new holder, from the first that no
    /// publish on any node reserved before and not below `at_least` (what the index and the stored
    /// playlist know). Called under the channel's lease, so no other node reserves meanwhile. A dead
    /// node may have stored segments it never indexed, but only inside its reservation: numbers from
    /// here on were never anyone's. The counter row is `seq/<bucket>/<channel>` in `counters`.
    pub async fn reserve_seqs(
        &self,
        bucket: &str,
        channel: &str,
        at_least: u64,
        count: u64,
    ) -> Result<std::ops::Range<u64>, MetaError> {
        let name = seq_counter(bucket, channel);
        let mut tx = self.write_tx().await.op("reserve_seqs")?;
        let current: Option<i64> = sqlx::query("SELECT value FROM counters WHERE name = $1")
            .bind(&name)
            .fetch_optional(&mut *tx)
            .await
            .op("reserve_seqs")?
            .map(|r| r.try_get(0))
            .transpose()?;
        let start = current.map_or(0, |v| v.max(0) as u64).max(at_least);
        let end = start.saturating_add(count);
        sqlx::query("INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2")
            .bind(&name)
            .bind(big(end))
            .execute(&mut *tx)
            .await
            .op("reserve_seqs")?;
        tx.commit().await.op("reserve_seqs")?;
        Ok(start..end)
    }

    /// Extends this holder's reservation that ends at `end` by `count`; None if the counter moved
    /// (another node took the channel and reserved after it).
    pub async fn extend_seqs(
        &self,
        bucket: &str,
        channel: &str,
        end: u64,
        count: u64,
    ) -> Result<Option<u64>, MetaError> {
        let row = sqlx::query("UPDATE counters SET value = value + $3 WHERE name = $1 AND value = $2 RETURNING value")
            .bind(seq_counter(bucket, channel))
            .bind(big(end))
            .bind(big(count))
            .fetch_optional(&self.pool)
            .await
            .op("extend_seqs")?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.map(|v| v.max(0) as u64))
    }

    /// Writes the live stats of this node's publishes into their lease rows, in one transaction.
    pub async fn write_lease_stats(&self, rows: &[(String, String, String, String)]) -> Result<(), MetaError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement per chunk rather than per row: every statement is a round trip made while the
        // transaction holds the write lock, and at 1000 publishes a row each held SQLite's for seconds,
        // long enough for the lease renewal behind it to time out.
        let mut tx = self.write_tx().await.op("write_lease_stats")?;
        for chunk in rows.chunks(super::ROWS_PER_STATEMENT) {
            let sql = format!(
                "WITH v (bucket, channel, holder, stats) AS (VALUES {})
                 UPDATE live_leases SET stats = v.stats FROM v
                 WHERE live_leases.bucket = v.bucket AND live_leases.channel = v.channel AND live_leases.holder = v.holder",
                super::values_list(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql).persistent(false);
            for (bucket, channel, holder, stats) in chunk {
                query = query.bind(bucket).bind(channel).bind(holder).bind(stats);
            }
            query.execute(&mut *tx).await.op("write_lease_stats")?;
        }
        tx.commit().await.op("write_lease_stats")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::both::on_both;

    fn req<'a>(channel: &'a str, node: &'a str, holder: &'a str, lease_ms: u64) -> LeaseRequest<'a> {
        LeaseRequest {
            bucket: "live",
            channel,
            node_id: node,
            holder,
            remote_addr: "192.0.2.1:5000",
            user_args: "a=1",
            since: from_millis(1_736_150_400_000),
            lease: Duration::from_millis(lease_ms),
        }
    }

    on_both! { async fn one_live_lease_per_channel_and_a_lapsed_one_is_taken_over(db) {
        let meta = db.open().await;
        let Claim::Claimed { push_id: first, expired: None } = meta.claim_lease(&req("c", "a", "a-1", 60_000)).await.unwrap()
        else { panic!("the first claim wins") };
        let Claim::Held(held) = meta.claim_lease(&req("c", "b", "b-1", 60_000)).await.unwrap() else {
            panic!("a live lease is not taken over")
        };
        assert_eq!((held.node_id.as_str(), held.holder.as_str(), held.state), ("a", "a-1", LeaseState::Live));
        assert_eq!(held.push_id, Some(first));
        assert_eq!(meta.live_lease("live", "c").await.unwrap().unwrap().holder, "a-1");

        // A lease that lapsed (its node stopped renewing) goes to the next claim, which closes its push.
        meta.claim_lease(&req("d", "a", "a-2", 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(meta.live_lease("live", "d").await.unwrap().is_none(), "lapsed leases are not live");
        let Claim::Claimed { push_id, expired: Some(dead) } = meta.claim_lease(&req("d", "b", "b-2", 60_000)).await.unwrap()
        else { panic!("a lapsed lease is taken over") };
        assert_eq!((dead.node_id.as_str(), dead.holder.as_str(), dead.user_args.as_str()), ("a", "a-2", "a=1"));
        assert_ne!(Some(push_id), dead.push_id);
        let closed: Option<i64> = sqlx::query_scalar("SELECT end_ms FROM push_history WHERE id = $1")
            .bind(dead.push_id.unwrap()).fetch_one(&meta.pool).await.unwrap();
        assert!(closed.is_some(), "the dead publish's push is closed");

        // Renewal returns only the node's unexpired leases, with their kick flags.
        assert_eq!(meta.kick_lease("live", "c").await.unwrap().as_deref(), Some("a"));
        let renewed = meta.renew_leases("a", Duration::from_secs(60)).await.unwrap();
        let renewed_c = Renewed { bucket: "live".into(), channel: "c".into(), holder: "a-1".into(), kicked: true, takeover_asked: None };
        assert_eq!(renewed, [renewed_c]);
        assert_eq!(meta.renew_leases("b", Duration::from_secs(60)).await.unwrap().len(), 1);

        // A takeover request names the holder it saw; the holder's renewal learns how long ago it came.
        assert_eq!(meta.request_takeover("live", "c", "a-0").await.unwrap(), None, "a holder that is gone");
        assert_eq!(meta.request_takeover("live", "c", "a-1").await.unwrap().as_deref(), Some("a"));
        let renewed = meta.renew_leases("a", Duration::from_secs(60)).await.unwrap();
        let asked = renewed[0].takeover_asked.expect("the request is seen");
        assert!(asked < Duration::from_secs(5), "{asked:?}");

        // Flushing: not live for stat or kick, still held against a new claim; released by its holder only.
        assert!(meta.lease_flushing("live", "c", "a-1").await.unwrap());
        assert!(meta.live_lease("live", "c").await.unwrap().is_none());
        assert_eq!(meta.kick_lease("live", "c").await.unwrap(), None);
        assert!(matches!(meta.claim_lease(&req("c", "b", "b-3", 60_000)).await.unwrap(),
            Claim::Held(Lease { state: LeaseState::Flushing, .. })));
        assert!(!meta.release_lease("live", "c", "b-3").await.unwrap(), "only the holder releases");
        assert!(meta.release_lease("live", "c", "a-1").await.unwrap());
        assert!(matches!(meta.claim_lease(&req("c", "b", "b-3", 60_000)).await.unwrap(), Claim::Claimed { expired: None, .. }));

        // Stats reach the row; a restarted node's leases all go, lapsed or not; others' stay.
        meta.write_lease_stats(&[("live".into(), "c".into(), "b-3".into(), "{\"x\":1}".into())]).await.unwrap();
        assert_eq!(meta.live_lease("live", "c").await.unwrap().unwrap().stats, "{\"x\":1}");
        // Many rows, more than one statement holds, each to its own lease; a holder that is gone changes nothing.
        let many: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
        for name in &many {
            meta.claim_lease(&req(name, "b", &format!("{name}-1"), 60_000)).await.unwrap();
        }
        let mut rows: Vec<_> =
            many.iter().map(|n| ("live".to_owned(), n.clone(), format!("{n}-1"), format!("{{\"n\":\"{n}\"}}"))).collect();
        rows.push(("live".into(), "c".into(), "a-1".into(), "stale".into()));
        meta.write_lease_stats(&rows).await.unwrap();
        for name in [&many[0], &many[127], &many[128], &many[299]] {
            assert_eq!(meta.live_lease("live", name).await.unwrap().unwrap().stats, format!("{{\"n\":\"{name}\"}}"));
        }
        assert_eq!(meta.live_lease("live", "c").await.unwrap().unwrap().stats, "{\"x\":1}");
        for name in &many {
            assert!(meta.release_lease("live", name, &format!("{name}-1")).await.unwrap());
        }
        meta.claim_lease(&req("e", "a", "a-3", 60_000)).await.unwrap();
        let gone = meta.expire_leases(Some("a")).await.unwrap();
        assert_eq!(gone.iter().map(|l| l.holder.as_str()).collect::<Vec<_>>(), ["a-3"]);
        assert_eq!(meta.expire_leases(None).await.unwrap(), []);
        assert_eq!(meta.renew_leases("b", Duration::from_secs(60)).await.unwrap().len(), 2);
    }}

    on_both! { async fn sequence_numbers_are_reserved_in_blocks_that_never_overlap(db) {
        let meta = db.open().await;
        // The first holder: from what the index knows (here, segments up to 4 exist).
        let a = meta.reserve_seqs("live", "c", 5, 100).await.unwrap();
        assert_eq!(a, 5..105);
        assert_eq!(meta.extend_seqs("live", "c", 105, 100).await.unwrap(), Some(205));
        // It dies: the next holder starts after everything the dead one may have written.
        let b = meta.reserve_seqs("live", "c", 40, 100).await.unwrap();
        assert_eq!(b, 205..305);
        assert_eq!(meta.extend_seqs("live", "c", 205, 100).await.unwrap(), None, "the dead holder cannot extend");
        // A clean end gives the unused numbers back, so the next publish goes on without a jump.
        let back = SeqReturn { bucket: "live".into(), channel: "c".into(), end: 305, next: 212 };
        meta.commit_journal(&[], &[], std::slice::from_ref(&back)).await.unwrap();
        let mut conn = meta.pool.acquire().await.unwrap();
        assert!(!return_seqs(&mut conn, &back).await.unwrap(), "only the reservation's own end");
        drop(conn);
        assert_eq!(meta.reserve_seqs("live", "c", 0, 100).await.unwrap(), 212..312);
        assert_eq!(meta.reserve_seqs("live", "other", 0, 100).await.unwrap(), 0..100, "per channel");
    }}

    on_both! { async fn recovery_closes_only_pushes_no_lease_covers(db) {
        let meta = db.open().await;
        let Claim::Claimed { push_id: live, .. } = meta.claim_lease(&req("live1", "b", "b-1", 60_000)).await.unwrap()
        else { panic!() };
        let orphan = meta.open_push("live", "old", from_millis(1_000), "192.0.2.9:1").await.unwrap();
        assert_eq!(meta.recover().await.unwrap(), 1, "only the push without a lease is closed");
        let open: Vec<i64> = sqlx::query_scalar("SELECT id FROM push_history WHERE end_ms IS NULL")
            .fetch_all(&meta.pool).await.unwrap();
        assert_eq!(open, [live]);
        assert_ne!(orphan, live);
    }}
}
