//! The metadata database: channels and their configuration, push history, and the segment index that
//! PostVodPlaylist and restarts need. One set of operations on two backends through sqlx's `Any` driver,
//! picked by `[database] url`: embedded SQLite (one file, `<data_dir>/meta.db` by default, WAL mode) or
//! PostgreSQL. Each backend has its migrations folder (`migrations/sqlite`, `migrations/postgres`),
//! applied at start.
//!
//! The SQL is written once where both backends agree: `$N` placeholders (SQLite reads them too),
//! `ON CONFLICT`, `RETURNING`, integers bound and read as i64 (times are milliseconds; flags are 0/1), and
//! text compared in byte order (SQLite's default; `COLLATE "C"` columns on PostgreSQL). Where they
//! differ, [`Backend`] says which text to use: two-argument `MAX` vs `GREATEST`, and `BEGIN IMMEDIATE`,
//! which SQLite needs so that a read-then-write transaction does not fail with SQLITE_BUSY.
//!
//! The media path never calls in here directly: index rows and outbox rows arrive batched from `journal`
//! ([`Meta::commit_batch`]).
//!
//! Not here: what the API or RTMP make of the records (validation happens before anything is written).
//! sqlx runs SQLite on its own worker threads, so no query blocks the reactor.

pub mod aliyun;
pub mod events;
pub mod lease;
pub mod notify;
pub mod snapshots;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Connection, Executor, Row};

use crate::config::{ChannelSettings, Config, Database, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot create the metadata folder {path}: {source}")]
    Dir { path: std::path::PathBuf, source: std::io::Error },
    /// The database could not be opened at start; `url` has its password redacted.
    #[error("cannot open the metadata database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    /// A query failed; `op` names the `Meta` operation it was part of.
    #[error("metadata database, {op}: {source}")]
    Query { op: &'static str, source: sqlx::Error },
    #[error("metadata database migration: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("metadata database holds an invalid record: {0}")]
    Corrupt(String),
    /// The metadata thread ended (the server is stopping) or the operation panicked there.
    #[error("metadata database, {op}: the metadata thread {}", if *.panicked { "panicked" } else { "has stopped" })]
    Stopped { op: &'static str, panicked: bool },
    #[error("segment {bucket}/{channel} seq {seq} is already indexed")]
    SegmentConflict { bucket: String, channel: String, seq: u64 },
}

impl MetaError {
    /// The database could not be reached (as opposed to refusing or failing one query): callers answer
    /// "try again later" (503) and the media path carries on without it.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            MetaError::Query {
                source: sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed,
                ..
            } | MetaError::Stopped { panicked: false, .. }
        )
    }
}

/// Row decoding outside an operation's own queries (row mappers).
impl From<sqlx::Error> for MetaError {
    fn from(source: sqlx::Error) -> Self {
        MetaError::Query { op: "decode a row", source }
    }
}

/// Names the operation a database error happened in.
pub(crate) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T, MetaError>;
}

impl<T> Op<T> for Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T, MetaError> {
        self.map_err(|source| MetaError::Query { op, source })
    }
}

impl<T> Op<T> for Result<T, sqlx::migrate::MigrateError> {
    fn op(self, _: &'static str) -> Result<T, MetaError> {
        self.map_err(MetaError::Migrate)
    }
}

/// An inner operation already named its error.
impl<T> Op<T> for Result<T, MetaError> {
    fn op(self, _: &'static str) -> Result<T, MetaError> {
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStatus {
    Enabled,
    Disabled,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Enabled => "enabled",
            ChannelStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(ChannelStatus::Enabled),
            "disabled" => Some(ChannelStatus::Disabled),
            _ => None,
        }
    }
}

/// The OSS `Snapshot` container: stored and returned; taking snapshots is a separate feature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub role_name: Option<String>,
    pub dest_bucket: Option<String>,
    pub notify_topic: Option<String>,
    pub interval: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub name: String,
    pub description: String,
    pub status: ChannelStatus,
    pub settings: ChannelSettings,
    pub snapshot: Option<Snapshot>,
    pub last_modified: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    pub start: SystemTime,
    pub end: SystemTime,
    pub remote_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    pub seq: u64,
    pub start: SystemTime,
    pub duration_ms: u64,
    pub object_key: String,
    pub discontinuity: bool,
}

/// What [`Meta::set_status`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    NoSuchChannel,
    /// The channel already had that status.
    Unchanged,
    Changed {
        resumed: bool,
        /// The change's row in `channel_status_changes`: names it in callbacks, on every node.
        change_id: i64,
    },
}

/// What a commit did not write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Segment rows whose `(bucket, channel, seq)` already existed: kept as they were.
    pub conflicts: Vec<(String, String, u64)>,
    /// Callbacks whose idempotency key was already queued: kept as they were.
    pub callback_conflicts: Vec<String>,
}

/// Which database `Meta` talks to, where their SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The UPDATE (without its WHERE) that closes pushes whose publisher died: each ends at the end of
    /// its last stored segment, or at its start when none was stored.
    pub(crate) fn close_dead_pushes(self) -> String {
        format!(
            "UPDATE push_history SET end_ms = {}(start_ms, COALESCE((
                 SELECT MAX(s.start_ms + s.duration_ms) FROM segments s
                 WHERE s.bucket = push_history.bucket AND s.channel = push_history.channel
                   AND s.start_ms >= push_history.start_ms), start_ms))",
            self.greatest()
        )
    }

    /// The two-argument maximum of two non-NULL values.
    fn greatest(self) -> &'static str {
        match self {
            Backend::Sqlite => "MAX",
            Backend::Postgres => "GREATEST",
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Meta {
    /// Writes, and transactions. On SQLite one connection: the database has one write lock, and
    /// connections of one process that compete for it wait in SQLite's busy handler, which sleeps and
    /// retries with no queue, so under load a writer could keep missing the lock until it timed out
    /// (at 1000 publishes, the lease renewal did, and the node stopped every publish). One connection
    /// makes the pool's wait queue, first come first served, the only queue.
    pub(crate) pool: AnyPool,
    /// Plain reads, outside any transaction. On SQLite, connections that cannot write (`query_only`),
    /// reading beside the writer (WAL); on PostgreSQL the same pool as `pool`.
    pub(crate) read: AnyPool,
    backend: Backend,
    /// Bumped by every write that changes callback configuration, so caches of it know to reload; on
    /// PostgreSQL also by other nodes' changes (`events::listen`).
    config_generation: Arc<AtomicU64>,
    /// The PostgreSQL URL, for the notification listener (never logged).
    url: Option<Arc<str>>,
    /// The server's metadata thread (`server::meta_runtime`), where [`Meta::off_media`] runs writes.
    home: Option<tokio::runtime::Handle>,
}

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// What a SQLite path must escape to stay one path inside a URL.
const SQLITE_PATH: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'?').add(b'#').add(b'%').add(b'"').add(b'<').add(b'>');

const CHANNEL_COLUMNS: &str = "name, description, status, frag_duration, frag_count, playlist_name, \
     snapshot_role_name, snapshot_dest_bucket, snapshot_notify_topic, snapshot_interval, last_modified_ms";

/// An integer column read as i64 and converted; out of range is a corrupt record.
pub(crate) fn int<T: TryFrom<i64>>(r: &AnyRow, i: usize) -> Result<T, MetaError> {
    let v: i64 = r.try_get(i)?;
    T::try_from(v).map_err(|_| MetaError::Corrupt(format!("integer {v} out of range in column {i}")))
}

/// A nullable integer column.
pub(crate) fn opt_int<T: TryFrom<i64>>(r: &AnyRow, i: usize) -> Result<Option<T>, MetaError> {
    let v: Option<i64> = r.try_get(i)?;
    v.map(|v| T::try_from(v).map_err(|_| MetaError::Corrupt(format!("integer {v} out of range in column {i}"))))
        .transpose()
}

/// A 0/1 flag column (both backends store flags as integers).
pub(crate) fn flag(r: &AnyRow, i: usize) -> Result<bool, MetaError> {
    Ok(r.try_get::<i64, _>(i)? != 0)
}

/// An unsigned value bound as the i64 both backends store (values past i64::MAX saturate).
pub(crate) fn big<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

impl Meta {
    /// This handle, and every clone of it made afterwards, runs [`Meta::off_media`] on `home`.
    pub fn with_home(mut self, home: tokio::runtime::Handle) -> Meta {
        self.home = Some(home);
        self
    }

    /// Runs `f` on the metadata thread, when the server has one, and waits for its result.
    ///
    /// Why: every statement is a round trip between the database connection and the task that awaits
    /// it, and a transaction (or an acquired connection) stays held across all of them. Awaited from a
    /// media runtime slowed by load, each round trip waits for a wake-up there (up to seconds at 1000
    /// streams), so 1000 publishes claiming at once held SQLite's one writer for seconds each and the
    /// lease renewal queued behind them until the node's leases lapsed. On the metadata thread the
    /// round trips are quick and only the final answer waits for the media runtime.
    ///
    /// If the caller is dropped meanwhile, `f` still runs to its end (a claim then leaves a lease row
    /// that the next renewal releases as an orphan).
    pub async fn off_media<T, F>(&self, op: &'static str, f: impl FnOnce(Meta) -> F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, MetaError>> + Send + 'static,
    {
        match &self.home {
            None => f(self.clone()).await,
            Some(home) => home
                .spawn(f(self.clone()))
                .await
                .unwrap_or_else(|e| Err(MetaError::Stopped { op, panicked: e.is_panic() })),
        }
    }

    /// Spawns `f` where [`Meta::off_media`] runs it, without waiting for it.
    pub fn spawn_off_media<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.home {
            None => drop(tokio::spawn(f)),
            Some(home) => drop(home.spawn(f)),
        }
    }

    /// Opens (creating if needed) the SQLite database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Meta, MetaError> {
        Meta::open_sqlite(path, 4).await
    }

    /// Opens what `[database]` names: SQLite (by default at `<data_dir>/meta.db`) or PostgreSQL.
    pub async fn open_config(config: &Config) -> Result<Meta, MetaError> {
        match (&config.database, config.meta_path()) {
            (Database::Postgres { url, max_connections }, _) => Meta::open_postgres(url, *max_connections).await,
            (db, Some(path)) => Meta::open_sqlite(&path, db.max_connections()).await,
            (_, None) => Err(MetaError::Corrupt("no SQLite path configured".into())),
        }
    }

    /// Opens the SQLite database with at most `max_connections` connections (`[database] max_connections`).
    pub async fn open_sqlite(path: &Path, max_connections: u32) -> Result<Meta, MetaError> {
        sqlx::any::install_default_drivers();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| MetaError::Dir { path: dir.to_owned(), source })?;
        }
        let absolute = std::path::absolute(path).map_err(|source| MetaError::Dir { path: path.to_owned(), source })?;
        // The Any driver takes a URL: the path is percent-encoded so that spaces, `?` and `#` stay in it.
        let encoded = percent_encoding::utf8_percent_encode(&absolute.to_string_lossy(), SQLITE_PATH).to_string();
        let url = format!("sqlite://{encoded}?mode=rwc");
        let shown = absolute.display().to_string();
        let connect = |connections: u32, pragmas: &'static str| {
            AnyPoolOptions::new()
                .max_connections(connections)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(pragmas).await?;
                        Ok(())
                    })
                })
                .connect(&url)
        };
        // WAL + NORMAL: a power cut may lose the last commits but never corrupts the file. The busy
        // timeout covers other processes (the writer here is the only one in this process).
        let pool = connect(1, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000")
            .await
            .map_err(|source| MetaError::Open { url: shown.clone(), source })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.op("open")?;
        let read = connect(max_connections.max(1), "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON")
            .await
            .map_err(|source| MetaError::Open { url: shown.clone(), source })?;
        Ok(Meta { pool, read, backend: Backend::Sqlite, config_generation: Arc::default(), url: None, home: None })
    }

    /// Connects to PostgreSQL and applies pending migrations (under the migrator's advisory lock, so
    /// nodes that start together do not race). An unreachable server is an error naming the URL, with
    /// its password redacted.
    pub async fn open_postgres(url: &str, max_connections: u32) -> Result<Meta, MetaError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        // For an unreachable server the pool only says "timed out": one direct connection first says why
        // (refused, unknown host, wrong password, no such database).
        let probe = tokio::time::timeout(Duration::from_secs(10), sqlx::AnyConnection::connect(url))
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
            .map_err(|source| MetaError::Open { url: shown.clone(), source })?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            // An API call waits this long for a connection before it answers 503 (the database is away).
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| MetaError::Open { url: shown.clone(), source })?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await.op("open")?;
        Ok(Meta {
            read: pool.clone(),
            pool,
            backend: Backend::Postgres,
            config_generation: Arc::default(),
            url: Some(url.into()),
            home: None,
        })
    }

    /// The next value of the named counter: unique across nodes and restarts (idempotency keys of events
    /// that no other row names).
    pub async fn next_id(&self, name: &str) -> Result<i64, MetaError> {
        let row = sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .op("next_id")?;
        Ok(row.try_get(0)?)
    }

    /// One round trip (readiness probes).
    pub async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.read).await.op("ping")?;
        Ok(())
    }

    /// Callbacks not yet delivered or given up, on every node.
    pub async fn pending_callbacks(&self) -> Result<i64, MetaError> {
        let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.read)
            .await
            .op("pending_callbacks")?;
        Ok(row.try_get(0)?)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Which version of the callback configuration the database holds (in this process's view).
    pub fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// Called after a committed change of callback configuration: this node's caches reload at once,
    /// other nodes' when the notification reaches them (or their cache's time to live runs out).
    async fn config_changed(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.notify_nodes(events::Topic::Config, "").await;
    }

    /// Another node changed callback configuration (or notifications may have been missed).
    pub(crate) fn config_changed_elsewhere(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Serializes read-then-write transactions about one key across nodes. PostgreSQL's READ COMMITTED
    /// lets two transactions both pass a count check and both insert; a transaction-scoped advisory lock
    /// on the key makes the second wait for the first to commit. SQLite's `BEGIN IMMEDIATE` already
    /// admits one writer at a time.
    pub(crate) async fn lock_key(&self, tx: &mut sqlx::AnyConnection, key: &str) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(key).execute(tx).await?;
        }
        Ok(())
    }

    /// A transaction that takes the write lock at once. A deferred one that reads first and writes later
    /// fails with SQLITE_BUSY (no retry) when another connection committed in between, in WAL mode.
    /// PostgreSQL's default (READ COMMITTED, row locks taken by the writes) needs nothing more.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Closes every push left open by a crash that no lease covers (a live publish's push is opened with
    /// its lease, in one transaction, so an uncovered open push is a dead one, on whichever node): its
    /// end is the end of its last stored segment (or its start when none was stored). A starting node
    /// deletes its own leases first ([`Meta::expire_leases`]). Returns how many were closed.
    pub async fn recover(&self) -> Result<u64, MetaError> {
        let done = sqlx::query(&format!(
            "{} WHERE end_ms IS NULL AND NOT EXISTS (SELECT 1 FROM live_leases l WHERE l.push_id = push_history.id)",
            self.backend.close_dead_pushes()
        ))
        .execute(&self.pool)
        .await
        .op("recover")?;
        Ok(done.rows_affected())
    }

    pub async fn put_channel(&self, bucket: &str, c: &ChannelRecord) -> Result<(), MetaError> {
        let now = millis(c.last_modified);
        let snap = c.snapshot.as_ref();
        sqlx::query(
            "INSERT INTO channels (bucket, name, description, status, frag_duration, frag_count, playlist_name,
                 snapshot_role_name, snapshot_dest_bucket, snapshot_notify_topic, snapshot_interval,
                 created_ms, last_modified_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (bucket, name) DO UPDATE SET
                 description = excluded.description, status = excluded.status,
                 frag_duration = excluded.frag_duration, frag_count = excluded.frag_count,
                 playlist_name = excluded.playlist_name, snapshot_role_name = excluded.snapshot_role_name,
                 snapshot_dest_bucket = excluded.snapshot_dest_bucket,
                 snapshot_notify_topic = excluded.snapshot_notify_topic,
                 snapshot_interval = excluded.snapshot_interval, last_modified_ms = excluded.last_modified_ms",
        )
        .bind(bucket)
        .bind(&c.name)
        .bind(&c.description)
        .bind(c.status.as_str())
        .bind(i64::from(c.settings.frag_duration))
        .bind(i64::from(c.settings.frag_count))
        .bind(&c.settings.playlist_name)
        .bind(snap.and_then(|s| s.role_name.clone()))
        .bind(snap.and_then(|s| s.dest_bucket.clone()))
        .bind(snap.and_then(|s| s.notify_topic.clone()))
        .bind(snap.map(|s| i64::from(s.interval)))
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .op("put_channel")?;
        Ok(())
    }

    /// Creates the channel with `settings` unless it exists; returns the record either way.
    pub async fn get_or_create_channel(
        &self,
        bucket: &str,
        name: &str,
        settings: &ChannelSettings,
    ) -> Result<ChannelRecord, MetaError> {
        let now = millis(SystemTime::now());
        sqlx::query(
            "INSERT INTO channels (bucket, name, description, status, frag_duration, frag_count, playlist_name,
                 created_ms, last_modified_ms)
             VALUES ($1, $2, '', 'enabled', $3, $4, $5, $6, $7) ON CONFLICT (bucket, name) DO NOTHING",
        )
        .bind(bucket)
        .bind(name)
        .bind(i64::from(settings.frag_duration))
        .bind(i64::from(settings.frag_count))
        .bind(&settings.playlist_name)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .op("get_or_create_channel")?;
        self.get_channel(bucket, name)
            .await
            .op("get_or_create_channel")?
            .ok_or_else(|| MetaError::Corrupt(format!("channel {bucket}/{name} vanished after insert")))
    }

    pub async fn get_channel(&self, bucket: &str, name: &str) -> Result<Option<ChannelRecord>, MetaError> {
        let row = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE bucket = $1 AND name = $2"))
            .bind(bucket)
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .op("get_channel")?;
        row.map(|r| channel_from_row(&r)).transpose()
    }

    /// Channels whose name starts with `prefix` and sorts after `marker`, in byte order, at most `limit`.
    pub async fn list_channels(
        &self,
        bucket: &str,
        prefix: &str,
        marker: &str,
        limit: u32,
    ) -> Result<Vec<ChannelRecord>, MetaError> {
        // substr() rather than LIKE: LIKE treats % and _ in the prefix as wildcards and ignores case.
        let rows = sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels
             WHERE bucket = $1 AND substr(name, 1, length($2)) = $3 AND name > $4
             ORDER BY name LIMIT $5"
        ))
        .bind(bucket)
        .bind(prefix)
        .bind(prefix)
        .bind(marker)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .op("list_channels")?;
        rows.iter().map(channel_from_row).collect()
    }

    /// Deletes the channel and its push history (a channel created later under the same name starts
    /// afresh). The segment index stays, like the segments themselves.
    pub async fn delete_channel(&self, bucket: &str, name: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await.op("delete_channel")?;
        let done = sqlx::query("DELETE FROM channels WHERE bucket = $1 AND name = $2")
            .bind(bucket)
            .bind(name)
            .execute(&mut *tx)
            .await
            .op("delete_channel")?;
        sqlx::query("DELETE FROM push_history WHERE bucket = $1 AND channel = $2 AND end_ms IS NOT NULL")
            .bind(bucket)
            .bind(name)
            .execute(&mut *tx)
            .await
            .op("delete_channel")?;
        tx.commit().await.op("delete_channel")?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a channel's status. Each transition is one conditional UPDATE, so of two concurrent callers
    /// only one sees it (and sends its callback); `resumed` says that the change ended a pause that
    /// [`Meta::mark_paused`] recorded.
    pub async fn set_status(&self, bucket: &str, name: &str, status: ChannelStatus) -> Result<StatusChange, MetaError> {
        let now = millis(SystemTime::now());
        let mut tx = self.write_tx().await.op("set_status")?;
        let mut run = async |sql: &'static str| {
            let done = sqlx::query(sql).bind(now).bind(bucket).bind(name).execute(&mut *tx).await.op("set_status")?;
            Ok::<bool, MetaError>(done.rows_affected() > 0)
        };
        let change = if status == ChannelStatus::Enabled {
            if run("UPDATE channels SET status = 'enabled', record_paused = 0, last_modified_ms = $1
                    WHERE bucket = $2 AND name = $3 AND status = 'disabled' AND record_paused = 1")
            .await?
            {
                Some(true)
            } else if run("UPDATE channels SET status = 'enabled', last_modified_ms = $1
                           WHERE bucket = $2 AND name = $3 AND status = 'disabled'")
            .await?
            {
                Some(false)
            } else {
                None
            }
        } else if run("UPDATE channels SET status = 'disabled', last_modified_ms = $1
                       WHERE bucket = $2 AND name = $3 AND status = 'enabled'")
        .await?
        {
            Some(false)
        } else {
            None
        };
        let result = match change {
            Some(resumed) => {
                let row = sqlx::query(
                    "INSERT INTO channel_status_changes (bucket, channel, status, time_ms) VALUES ($1, $2, $3, $4)
                     RETURNING id",
                )
                .bind(bucket)
                .bind(name)
                .bind(status.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .op("set_status")?;
                StatusChange::Changed { resumed, change_id: row.try_get(0)? }
            }
            None if run("UPDATE channels SET last_modified_ms = $1 WHERE bucket = $2 AND name = $3").await? => {
                StatusChange::Unchanged
            }
            None => StatusChange::NoSuchChannel,
        };
        tx.commit().await.op("set_status")?;
        Ok(result)
    }

    /// Disabling the channel paused its live recording (`record_paused` was sent).
    pub async fn mark_paused(&self, bucket: &str, name: &str) -> Result<(), MetaError> {
        sqlx::query("UPDATE channels SET record_paused = 1 WHERE bucket = $1 AND name = $2 AND status = 'disabled'")
            .bind(bucket)
            .bind(name)
            .execute(&self.pool)
            .await
            .op("mark_paused")?;
        Ok(())
    }

    /// Records the start of a publish; the returned id closes it.
    pub async fn open_push(
        &self,
        bucket: &str,
        channel: &str,
        start: SystemTime,
        remote: &str,
    ) -> Result<i64, MetaError> {
        let row = sqlx::query(
            "INSERT INTO push_history (bucket, channel, start_ms, remote_addr) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(bucket)
        .bind(channel)
        .bind(millis(start))
        .bind(remote)
        .fetch_one(&self.pool)
        .await
        .op("open_push")?;
        Ok(row.try_get(0)?)
    }

    pub async fn close_push(&self, id: i64, end: SystemTime) -> Result<(), MetaError> {
        let greatest = self.backend.greatest();
        sqlx::query(&format!("UPDATE push_history SET end_ms = {greatest}(start_ms, $1) WHERE id = $2"))
            .bind(millis(end))
            .bind(id)
            .execute(&self.pool)
            .await
            .op("close_push")?;
        Ok(())
    }

    /// The `limit` most recent finished pushes, oldest first.
    pub async fn history(&self, bucket: &str, channel: &str, limit: u32) -> Result<Vec<PushRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT start_ms, end_ms, remote_addr FROM (
                 SELECT id, start_ms, end_ms, remote_addr FROM push_history
                 WHERE bucket = $1 AND channel = $2 AND end_ms IS NOT NULL ORDER BY id DESC LIMIT $3) recent
             ORDER BY id",
        )
        .bind(bucket)
        .bind(channel)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .op("history")?;
        rows.iter()
            .map(|r| {
                Ok(PushRecord {
                    start: from_millis(r.try_get(0)?),
                    end: from_millis(r.try_get(1)?),
                    remote_addr: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Indexes one segment. A row for the same `(bucket, channel, seq)` is never replaced: that is
    /// [`MetaError::SegmentConflict`].
    pub async fn add_segment(&self, bucket: &str, channel: &str, s: &SegmentRecord) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await.op("add_segment")?;
        let conflicts =
            insert_segments(&mut tx, &[(bucket.to_owned(), channel.to_owned(), s.clone())]).await.op("add_segment")?;
        tx.commit().await.op("add_segment")?;
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(MetaError::SegmentConflict { bucket: bucket.to_owned(), channel: channel.to_owned(), seq: s.seq })
        }
    }

    /// One transaction of the journal: segment-index rows and outbox rows. Segment rows that collide with
    /// existing ones are left out and reported; everything else is written or nothing is.
    pub async fn commit_batch(
        &self,
        segments: &[(String, String, SegmentRecord)],
        callbacks: &[notify::NewCallback],
    ) -> Result<Committed, MetaError> {
        self.commit_journal(segments, callbacks, &[]).await
    }

    /// [`Meta::commit_batch`], plus the sequence numbers ended publishes give back (after their last
    /// index rows, which come earlier in the same or an earlier batch).
    pub async fn commit_journal(
        &self,
        segments: &[(String, String, SegmentRecord)],
        callbacks: &[notify::NewCallback],
        seq_returns: &[lease::SeqReturn],
    ) -> Result<Committed, MetaError> {
        let mut tx = self.write_tx().await.op("commit_batch")?;
        let done = Committed {
            conflicts: insert_segments(&mut tx, segments).await.op("commit_batch")?,
            callback_conflicts: notify::insert_callbacks(&mut tx, callbacks).await.op("commit_batch")?,
        };
        for r in seq_returns {
            lease::return_seqs(&mut tx, r).await.op("commit_batch")?;
        }
        tx.commit().await.op("commit_batch")?;
        Ok(done)
    }

    /// Removes one segment's index row (its object is being deleted), so no VOD playlist names it again.
    /// Sequence numbers are not reused after this: reservations outlive the rows (see `lease`). True when
    /// a row was removed.
    pub async fn delete_segment(&self, bucket: &str, channel: &str, seq: u64) -> Result<bool, MetaError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM segments WHERE bucket = $1 AND channel = $2 AND seq = $3")
            .bind(bucket)
            .bind(channel)
            .bind(seq)
            .execute(&self.pool)
            .await
            .op("delete_segment")?;
        Ok(done.rows_affected() > 0)
    }

    /// Up to `limit` segments of a bucket that ended before `before`, oldest first, leaving out each
    /// channel's last `keep` indexed segments (the live window is among them): what retention deletes next.
    pub async fn expired_segments(
        &self,
        bucket: &str,
        before: SystemTime,
        keep: u64,
        limit: u32,
    ) -> Result<Vec<(String, SegmentRecord)>, MetaError> {
        let rows = sqlx::query(
            "SELECT s.channel, s.seq, s.start_ms, s.duration_ms, s.object_key, s.discontinuity FROM segments s
             WHERE s.bucket = $1 AND s.start_ms + s.duration_ms < $2
               AND s.seq + $3 <= (SELECT MAX(t.seq) FROM segments t WHERE t.bucket = s.bucket AND t.channel = s.channel)
             ORDER BY s.start_ms LIMIT $4",
        )
        .bind(bucket)
        .bind(millis(before))
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .op("expired_segments")?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    SegmentRecord {
                        seq: int(r, 1)?,
                        start: from_millis(r.try_get(2)?),
                        duration_ms: int(r, 3)?,
                        object_key: r.try_get(4)?,
                        discontinuity: flag(r, 5)?,
                    },
                ))
            })
            .collect()
    }

    /// The highest indexed sequence number of a channel: where its next publish continues.
    pub async fn max_segment_seq(&self, bucket: &str, channel: &str) -> Result<Option<u64>, MetaError> {
        let row = sqlx::query("SELECT MAX(seq) FROM segments WHERE bucket = $1 AND channel = $2")
            .bind(bucket)
            .bind(channel)
            .fetch_one(&self.read)
            .await
            .op("max_segment_seq")?;
        opt_int(&row, 0)
    }

    /// Segments whose media overlaps `[from, to)`, in sequence order.
    pub async fn segments_between(
        &self,
        bucket: &str,
        channel: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<SegmentRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT seq, start_ms, duration_ms, object_key, discontinuity FROM segments
             WHERE bucket = $1 AND channel = $2 AND start_ms < $3 AND start_ms + duration_ms > $4
             ORDER BY seq",
        )
        .bind(bucket)
        .bind(channel)
        .bind(millis(to))
        .bind(millis(from))
        .fetch_all(&self.read)
        .await
        .op("segments_between")?;
        rows.iter()
            .map(|r| {
                Ok(SegmentRecord {
                    seq: int(r, 0)?,
                    start: from_millis(r.try_get(1)?),
                    duration_ms: int(r, 2)?,
                    object_key: r.try_get(3)?,
                    discontinuity: flag(r, 4)?,
                })
            })
            .collect()
    }
}

/// For tests that run on both backends: `LIVECHANNEL_TEST_POSTGRES` names a PostgreSQL server (a URL
/// whose role may create databases), and each test gets a database of its own there.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};

    use sqlx::{Connection, Executor};

    pub const POSTGRES_ENV: &str = "LIVECHANNEL_TEST_POSTGRES";

    /// Creates an empty database on the server of `LIVECHANNEL_TEST_POSTGRES` and returns its URL.
    /// Panics (failing the test, never skipping it) when the variable is unset or the server refuses.
    pub async fn fresh_postgres_database() -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let admin = std::env::var(POSTGRES_ENV)
            .unwrap_or_else(|_| panic!("{POSTGRES_ENV} is not set: it must name a PostgreSQL server for this test"));
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={}: {e}", crate::config::redact_url(&admin)));
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let name = format!("lc_test_{stamp}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let mut url = reqwest::Url::parse(&admin).unwrap_or_else(|e| panic!("{POSTGRES_ENV}: {e}"));
        url.set_path(&name);
        url.to_string()
    }
}

/// Inserts a segment row unless its `(bucket, channel, seq)` exists; returns whether it did.
/// Rows per multi-row statement: a batch of the journal (up to 512 entries) is a few statements, well
/// under both backends' limits on bound parameters (SQLite 32766, PostgreSQL 65535).
pub(crate) const ROWS_PER_STATEMENT: usize = 128;

/// `($1, $2), ($3, $4)`: the VALUES list of `rows` rows of `cols` parameters each.
pub(crate) fn values_list(rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", r * cols + c + 1);
        }
        sql.push(')');
    }
    sql
}

/// Indexes segments with one statement per [`ROWS_PER_STATEMENT`] rows, not one per row: each statement
/// is a round trip to the database's thread or server, made while the transaction holds the write lock
/// (SQLite's is the whole database's, and a lease renewal waits behind it). Returns the rows left out
/// because their `(bucket, channel, seq)` was already indexed, in input order.
async fn insert_segments(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    segments: &[(String, String, SegmentRecord)],
) -> Result<Vec<(String, String, u64)>, MetaError> {
    let mut conflicts = Vec::new();
    for chunk in segments.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO segments (bucket, channel, seq, start_ms, duration_ms, object_key, discontinuity)
             VALUES {} ON CONFLICT (bucket, channel, seq) DO NOTHING RETURNING bucket, channel, seq",
            values_list(chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for (bucket, channel, s) in chunk {
            query = query
                .bind(bucket)
                .bind(channel)
                .bind(big(s.seq))
                .bind(millis(s.start))
                .bind(big(s.duration_ms))
                .bind(&s.object_key)
                .bind(i64::from(s.discontinuity));
        }
        let rows = query.fetch_all(&mut **tx).await.op("insert_segments")?;
        let mut inserted = HashSet::with_capacity(rows.len());
        for r in &rows {
            inserted.insert((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?, int::<u64>(r, 2)?));
        }
        // A key twice in one batch is inserted once: the first is the one stored.
        for (bucket, channel, s) in chunk {
            if !inserted.remove(&(bucket.clone(), channel.clone(), s.seq)) {
                conflicts.push((bucket.clone(), channel.clone(), s.seq));
            }
        }
    }
    Ok(conflicts)
}

fn channel_from_row(r: &AnyRow) -> Result<ChannelRecord, MetaError> {
    let status: String = r.try_get(2)?;
    let interval: Option<u32> = opt_int(r, 9)?;
    let role: Option<String> = r.try_get(6)?;
    let dest: Option<String> = r.try_get(7)?;
    let topic: Option<String> = r.try_get(8)?;
    let snapshot = (interval.is_some() || role.is_some() || dest.is_some() || topic.is_some()).then(|| Snapshot {
        role_name: role,
        dest_bucket: dest,
        notify_topic: topic,
        interval: interval.unwrap_or(0),
    });
    Ok(ChannelRecord {
        name: r.try_get(0)?,
        description: r.try_get(1)?,
        status: ChannelStatus::parse(&status).ok_or_else(|| MetaError::Corrupt(format!("status {status:?}")))?,
        settings: ChannelSettings { frag_duration: int(r, 3)?, frag_count: int(r, 4)?, playlist_name: r.try_get(5)? },
        snapshot,
        last_modified: from_millis(r.try_get(10)?),
    })
}

/// Unit tests of everything that touches `meta` run once per backend: `<test>::sqlite` always, and
/// `<test>::postgres`, ignored unless asked for (`--include-ignored`) and failing when
/// `LIVECHANNEL_TEST_POSTGRES` is unset.
#[cfg(test)]
pub(crate) mod both {
    use super::Meta;

    pub enum Db {
        Sqlite(tempfile::TempDir),
        Postgres(String),
    }

    impl Db {
        pub async fn new(postgres: bool) -> Db {
            if postgres {
                Db::Postgres(super::testing::fresh_postgres_database().await)
            } else {
                Db::Sqlite(tempfile::tempdir().expect("temporary folder"))
            }
        }

        /// Opens the test's database; again after a drop, it is the same one (a restart).
        pub async fn open(&self) -> Meta {
            match self {
                Db::Sqlite(dir) => Meta::open(&dir.path().join("meta.db")).await.expect("open SQLite"),
                Db::Postgres(url) => Meta::open_postgres(url, 4).await.expect("open PostgreSQL"),
            }
        }
    }

    macro_rules! on_both {
        (async fn $name:ident($db:ident) $body:block) => {
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                use $crate::meta::both::Db;

                #[tokio::test]
                async fn sqlite() {
                    test_body(Db::new(false).await).await
                }

                #[tokio::test]
                #[ignore = "needs LIVECHANNEL_TEST_POSTGRES (a PostgreSQL URL)"]
                async fn postgres() {
                    test_body(Db::new(true).await).await
                }

                async fn test_body($db: Db) $body
            }
        };
    }
    pub(crate) use on_both;
}

#[cfg(test)]
mod tests {
    use super::both::on_both;
    use super::*;

    fn record(name: &str) -> ChannelRecord {
        ChannelRecord {
            name: name.into(),
            description: "d".into(),
            status: ChannelStatus::Enabled,
            settings: ChannelSettings::default(),
            snapshot: None,
            last_modified: from_millis(1_736_150_400_000),
        }
    }

    on_both! { async fn channels_history_and_segments_survive_a_reopen(db) {
        {
            let meta = db.open().await;
            for n in ["b", "a%", "a_", "ab", "c"] {
                meta.put_channel("live", &record(n)).await.unwrap();
            }
            let mut snap = record("s");
            snap.snapshot = Some(Snapshot { role_name: Some("r".into()), interval: 5, ..Default::default() });
            meta.put_channel("live", &snap).await.unwrap();
            meta.put_channel("other", &record("a")).await.unwrap();
            let id = meta.open_push("live", "ab", from_millis(1_000), "127.0.0.1:5").await.unwrap();
            meta.add_segment(
                "live",
                "ab",
                &SegmentRecord {
                    seq: 7,
                    start: from_millis(2_000),
                    duration_ms: 3_000,
                    object_key: "live/ab/7.ts".into(),
                    discontinuity: true,
                },
            )
            .await
            .unwrap();
            meta.open_push("live", "c", from_millis(1_000), "127.0.0.1:6").await.unwrap();
            meta.close_push(id, from_millis(9_000)).await.unwrap();
        }
        let meta = db.open().await;
        // The push to `c` never closed (a crash): recovery closes it at its start (no segments).
        assert_eq!(meta.recover().await.unwrap(), 1);
        assert_eq!(meta.history("live", "c", 10).await.unwrap()[0].end, from_millis(1_000));
        let names: Vec<String> =
            meta.list_channels("live", "a", "", 100).await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a%", "a_", "ab"], "byte order; % and _ are not wildcards");
        let names: Vec<String> =
            meta.list_channels("live", "", "a_", 2).await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["ab", "b"]);
        assert_eq!(meta.list_channels("live", "a%", "", 10).await.unwrap().len(), 1);
        assert_eq!(meta.get_channel("live", "s").await.unwrap().unwrap().snapshot.unwrap().interval, 5);
        assert_eq!(meta.history("live", "ab", 10).await.unwrap()[0].remote_addr, "127.0.0.1:5");
        let segs = meta.segments_between("live", "ab", from_millis(4_000), from_millis(4_500)).await.unwrap();
        assert_eq!(segs.len(), 1);
        assert!(segs[0].discontinuity);
        assert!(meta.segments_between("live", "ab", from_millis(5_000), from_millis(6_000)).await.unwrap().is_empty());
        let change = |c: StatusChange| match c {
            StatusChange::Changed { resumed, change_id } => Some((resumed, change_id)),
            _ => None,
        };
        let (resumed, first) = change(meta.set_status("live", "ab", ChannelStatus::Disabled).await.unwrap()).unwrap();
        assert!(!resumed);
        assert_eq!(meta.set_status("live", "ab", ChannelStatus::Disabled).await.unwrap(), StatusChange::Unchanged);
        assert_eq!(meta.set_status("live", "zz", ChannelStatus::Enabled).await.unwrap(), StatusChange::NoSuchChannel);
        // Only an enable that ends a recorded pause says "resumed", and only once.
        meta.mark_paused("live", "ab").await.unwrap();
        let (resumed, second) = change(meta.set_status("live", "ab", ChannelStatus::Enabled).await.unwrap()).unwrap();
        assert!(resumed);
        assert!(second > first, "every change has its own id");
        meta.set_status("live", "ab", ChannelStatus::Disabled).await.unwrap();
        let (resumed, _) = change(meta.set_status("live", "ab", ChannelStatus::Enabled).await.unwrap()).unwrap();
        assert!(!resumed);
        meta.set_status("live", "ab", ChannelStatus::Disabled).await.unwrap();
        assert_eq!(meta.get_channel("live", "ab").await.unwrap().unwrap().status, ChannelStatus::Disabled);
        assert!(meta.delete_channel("live", "ab").await.unwrap());
        assert!(!meta.delete_channel("live", "ab").await.unwrap());
        assert!(meta.get_channel("live", "ab").await.unwrap().is_none());
        let created = meta.get_or_create_channel("live", "new", &ChannelSettings::default()).await.unwrap();
        assert_eq!(created.status, ChannelStatus::Enabled);
    }}

    on_both! { async fn expired_segments_leave_each_channels_newest_and_deleted_rows_are_gone(db) {
        let meta = db.open().await;
        for (channel, count) in [("a", 5u64), ("b", 2)] {
            for seq in 0..count {
                let s = SegmentRecord {
                    seq,
                    start: from_millis(1_000 * seq as i64),
                    duration_ms: 1_000,
                    object_key: format!("live/{channel}/{seq}.ts"),
                    discontinuity: false,
                };
                meta.add_segment("live", channel, &s).await.unwrap();
            }
        }
        let seqs = |v: Vec<(String, SegmentRecord)>| v.into_iter().map(|(c, s)| (c, s.seq)).collect::<Vec<_>>();
        // Keep the last 2 of each: a loses 0..=2, b nothing; ended before 3.5 s: a's 0, 1 and 2.
        let old = meta.expired_segments("live", from_millis(3_500), 2, 10).await.unwrap();
        assert_eq!(seqs(old), [("a".to_owned(), 0), ("a".to_owned(), 1), ("a".to_owned(), 2)]);
        assert_eq!(seqs(meta.expired_segments("live", from_millis(3_500), 2, 1).await.unwrap()), [("a".to_owned(), 0)]);
        assert!(meta.expired_segments("other", from_millis(9_000), 0, 10).await.unwrap().is_empty());
        assert!(meta.delete_segment("live", "a", 0).await.unwrap());
        assert!(!meta.delete_segment("live", "a", 0).await.unwrap());
        let old = meta.expired_segments("live", from_millis(3_500), 2, 10).await.unwrap();
        assert_eq!(seqs(old), [("a".to_owned(), 1), ("a".to_owned(), 2)]);
    }}

    on_both! { async fn history_keeps_the_ten_most_recent_oldest_first(db) {
        let meta = db.open().await;
        for i in 0..12 {
            let id = meta.open_push("live", "x", from_millis(i * 1000), &format!("h:{i}")).await.unwrap();
            meta.close_push(id, from_millis(i * 1000 + 500)).await.unwrap();
        }
        let h = meta.history("live", "x", 10).await.unwrap();
        assert_eq!(h.len(), 10);
        assert_eq!(h[0].remote_addr, "h:2");
        assert_eq!(h[9].remote_addr, "h:11");
    }}

    /// A one-second segment at `seq` seconds, discontinuous when `seq` is a multiple of 7.
    fn seg(seq: u64, key: &str) -> SegmentRecord {
        SegmentRecord {
            seq,
            start: from_millis(1_000 * seq as i64),
            duration_ms: 1_000,
            object_key: key.into(),
            discontinuity: seq.is_multiple_of(7),
        }
    }

    on_both! { async fn an_indexed_seq_is_never_replaced_and_the_highest_seq_is_where_a_channel_continues(db) {
        let meta = db.open().await;
        assert_eq!(meta.max_segment_seq("live", "a").await.unwrap(), None);
        meta.add_segment("live", "a", &seg(3, "first")).await.unwrap();
        let again = meta.add_segment("live", "a", &seg(3, "second")).await.unwrap_err();
        assert!(matches!(again, MetaError::SegmentConflict { seq: 3, .. }), "{again}");
        let batch = [
            ("live".to_owned(), "a".to_owned(), seg(3, "third")),
            ("live".to_owned(), "a".to_owned(), seg(4, "fourth")),
            ("live".to_owned(), "b".to_owned(), seg(3, "other channel")),
        ];
        let done = meta.commit_batch(&batch, &[]).await.unwrap();
        assert_eq!(done.conflicts, [("live".to_owned(), "a".to_owned(), 3)], "the rest of the batch is written");
        let rows = meta.segments_between("live", "a", from_millis(0), from_millis(10_000)).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.object_key.as_str()).collect::<Vec<_>>(), ["first", "fourth"]);
        assert_eq!(meta.max_segment_seq("live", "a").await.unwrap(), Some(4));
        assert_eq!(meta.max_segment_seq("live", "b").await.unwrap(), Some(3));
    }}

    on_both! { async fn a_batch_larger_than_one_statement_reports_exactly_its_conflicts_in_order(db) {
        let meta = db.open().await;
        meta.add_segment("live", "a", &seg(250, "indexed before")).await.unwrap();
        // Three statements' worth: a row already indexed, and a key twice in the batch (the first is kept).
        let mut batch: Vec<_> = (0..300).map(|i| ("live".to_owned(), "a".to_owned(), seg(i, &format!("a{i}")))).collect();
        batch.insert(10, ("live".to_owned(), "a".to_owned(), seg(5, "a5 again")));
        batch.push(("live".to_owned(), "b".to_owned(), seg(250, "b250")));
        let done = meta.commit_batch(&batch, &[]).await.unwrap();
        assert_eq!(done.conflicts, [("live".to_owned(), "a".to_owned(), 5), ("live".to_owned(), "a".to_owned(), 250)]);
        let rows = meta.segments_between("live", "a", from_millis(0), from_millis(1_000_000)).await.unwrap();
        assert_eq!(rows.len(), 300);
        assert_eq!(rows[5].object_key, "a5");
        assert_eq!(rows[250].object_key, "indexed before");
        assert_eq!((rows[299].object_key.as_str(), rows[299].seq, rows[299].duration_ms), ("a299", 299, 1_000));
        assert_eq!(rows.iter().filter(|r| r.discontinuity).count(), 43, "flags kept per row");
        assert_eq!(meta.max_segment_seq("live", "b").await.unwrap(), Some(250));
    }}

    #[tokio::test]
    async fn sqlite_reads_go_through_connections_that_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.db")).await.unwrap();
        let write = sqlx::query("INSERT INTO counters (name, value) VALUES ('x', 1)").execute(&meta.read).await;
        assert!(write.is_err(), "a write on a read connection would compete for the write lock");
        assert_eq!(meta.next_id("x").await.unwrap(), 1, "the writer writes");
    }

    on_both! { async fn counters_hand_out_each_value_once_across_handles(db) {
        let (a, b) = (db.open().await, db.open().await);
        let mut got = Vec::new();
        for i in 0..10 {
            got.push(if i % 2 == 0 { a.next_id("vod").await.unwrap() } else { b.next_id("vod").await.unwrap() });
        }
        assert_eq!(got, (1..=10).collect::<Vec<i64>>());
        assert_eq!(a.next_id("other").await.unwrap(), 1, "each name counts on its own");
    }}
}
