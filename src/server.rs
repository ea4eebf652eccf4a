//! Wiring: binds the listeners, builds the shared state, runs until told to stop, and shuts down
//! gracefully (every open segment and playlist is flushed before `shutdown` returns).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Keys;
use crate::channels::Channels;
use crate::cluster::Cluster;
use crate::config::{Acl, Config, StorageKind};
use crate::journal::{self, Journal, JournalStore, WeakJournal};
use crate::meta::Meta;
use crate::notify::Notifier;
use crate::notify::sender::Sender;
use crate::storage::sink::Stored;
use crate::storage::{StorageError, Store};
use crate::{http, publish, rtmp, service};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error("cannot build the HTTP client for callbacks: {0}")]
    CallbackClient(#[from] reqwest::Error),
    /// Another server runs on this data folder: both would write the same segment names.
    #[error(
        "data folder {path} is in use by another livechannel server (lock {lock}); stop it, or give this one another data_dir"
    )]
    DataDirInUse { path: std::path::PathBuf, lock: std::path::PathBuf },
    #[error("cannot start the metadata thread: {0}")]
    MetaThread(std::io::Error),
    #[error("cannot lock the data folder {path}: {source}")]
    DataDirLock { path: std::path::PathBuf, source: std::io::Error },
}

/// Held while the server runs: an exclusive lock on `<data_dir>/livechannel.lock` when anything lives in
/// the data folder (SQLite metadata or local media). With PostgreSQL and S3 the leases are the guard.
fn lock_data_dir(config: &Config) -> Result<Option<std::fs::File>, ServerError> {
    let local_media = config.storage.as_ref().is_none_or(|s| s.kind == crate::config::StorageKind::Local);
    if config.meta_path().is_none() && !local_media {
        return Ok(None);
    }
    let dir = &config.data_dir;
    let failed = |source| ServerError::DataDirLock { path: dir.clone(), source };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let lock = dir.join("livechannel.lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::DataDirInUse { path: dir.clone(), lock }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// The runtime of the loops that only talk to the metadata database: the journal's commits, the lease
/// renewal, the kick listener, and the lease, outbox and sequence writes of the media runtime's tasks
/// (`Meta::off_media`). They run on a thread of their own so that a media runtime slowed by load (at 1000
/// streams its wake-ups took up to seconds) cannot hold up a renewal until the node's fence lapses and
/// it ends every publish it has: overload then makes segments late, not lost.
///
/// The thread lives as long as the runtime that started it, even after `Server::shutdown`: database
/// connections opened from it are registered with its I/O driver, and the pool may still hand them to
/// callers on the other runtime.
fn meta_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    let (alive, gone) = tokio::sync::oneshot::channel::<()>();
    // Not tracked: dropped, and so `gone` resolved, when the caller's runtime shuts down.
    tokio::spawn(async move {
        let _alive = alive;
        std::future::pending::<()>().await
    });
    std::thread::Builder::new().name("livechannel-meta".to_owned()).spawn(move || {
        let _ = runtime.block_on(gone);
    })?;
    Ok(handle)
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub channels: Arc<Channels>,
    pub cluster: Arc<Cluster>,
    pub store: Store,
    pub meta: Meta,
    journal: WeakJournal,
    snapshots: crate::snapshot::pool::Snapshots,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The data folder's lock, released when the server is dropped.
    _data_dir_lock: Option<std::fs::File>,
}

/// Wraps the metadata database the journal commits to (tests make it slow or failing).
pub type WrapJournalStore = Box<dyn FnOnce(Meta) -> Arc<dyn JournalStore> + Send>;

/// Hooks for tests and tools that observe the server from inside the process.
#[derive(Default)]
pub struct Observers {
    pub on_stored: Option<mpsc::UnboundedSender<Stored>>,
    /// Replaces the storage built from the config (tests use a throttled or failing store).
    pub store: Option<Store>,
    pub journal_store: Option<WrapJournalStore>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        Server::start_with(config, Observers::default()).await
    }

    pub async fn start_with(config: Config, observers: Observers) -> Result<Server, ServerError> {
        let data_dir_lock = lock_data_dir(&config)?;
        let store = match observers.store {
            Some(store) => store,
            None => Store::from_config(&config)?,
        };
        let rtmp_listener = TcpListener::bind(config.rtmp_listen).await.map_err(|source| ServerError::Bind {
            what: "RTMP",
            addr: config.rtmp_listen,
            source,
        })?;
        let http_listener = TcpListener::bind(config.http_listen).await.map_err(|source| ServerError::Bind {
            what: "HTTP",
            addr: config.http_listen,
            source,
        })?;
        let rtmp_addr = rtmp_listener.local_addr().map_err(|source| ServerError::Bind {
            what: "RTMP",
            addr: config.rtmp_listen,
            source,
        })?;
        let http_addr = http_listener.local_addr().map_err(|source| ServerError::Bind {
            what: "HTTP",
            addr: config.http_listen,
            source,
        })?;
        warn_if_open(&config, rtmp_addr, http_addr);
        if config.storage.as_ref().is_none_or(|s| s.kind == StorageKind::Local) {
            // A server killed mid-write left staged `<name>#<n>` files; ours are all newer than this.
            let media = config.data_dir.join("media");
            let started = std::time::SystemTime::now();
            tokio::task::spawn_blocking(move || match crate::storage::remove_staged_uploads(&media, started) {
                Ok(0) => {}
                Ok(n) => {
                    warn!(files = n, folder = %media.display(), "removed unfinished uploads left by an unclean stop")
                }
                Err(e) => warn!(error = %e, folder = %media.display(), "cannot clean unfinished uploads"),
            });
        }
        let tracker = TaskTracker::new();
        let meta_rt = meta_runtime().map_err(ServerError::MetaThread)?;
        let meta = Meta::open_config(&config).await?.with_home(meta_rt.clone());
        let keys = Keys::new(config.access_keys.clone());
        let notifier = Notifier::new(meta.clone(), node_ip(&config, rtmp_addr), config.node.id.clone());
        let endpoint = config.public_endpoint.clone().unwrap_or_else(|| http_addr.to_string());

        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let channels = Arc::new(Channels::default());
        let (journal, journal_rx) = Journal::new();
        let journal_store: Arc<dyn JournalStore> = match observers.journal_store {
            Some(wrap) => wrap(meta.clone()),
            None => Arc::new(meta.clone()),
        };
        // Ends once every publish and writer let go of its handle (after the listeners stopped).
        tracker.spawn_on(
            journal::run(journal_rx, journal_store, notifier.clone(), Arc::clone(journal.counters())),
            &meta_rt,
        );
        let journal_handle = journal.downgrade();
        let cluster = Cluster::new(config.node.clone(), meta.clone(), Arc::clone(&channels), &journal);
        // This node's leases from before a crash are dead (their stop callbacks go out now); then every
        // open push that no lease covers, on any node, is closed.
        let dead = cluster.recover().await?;
        let recovered = meta.recover().await?;
        if dead > 0 || recovered > 0 {
            warn!(leases = dead, pushes = recovered, node = %config.node.id, "closed publishes left open by an unclean stop");
        }
        tracker.spawn_on(Arc::clone(&cluster).run(shutdown.clone()), &meta_rt);
        tracker.spawn(crate::retention::run(Arc::clone(&config), meta.clone(), store.clone(), shutdown.clone()));
        let kicked = Arc::clone(&cluster);
        tracker.spawn_on(meta.clone().listen(move |node| kicked.on_kick(node), shutdown.clone()), &meta_rt);
        let snapshots = crate::snapshot::pool::Snapshots::start(
            config.snapshots.clone(),
            store.clone(),
            meta.clone(),
            notifier.clone(),
            &tracker,
            shutdown.clone(),
        );
        let publish_ctx = Arc::new(publish::Context {
            config: Arc::clone(&config),
            channels: Arc::clone(&channels),
            store: store.clone(),
            meta: meta.clone(),
            cluster: Arc::clone(&cluster),
            keys: keys.clone(),
            journal,
            base_url: format!("http://{endpoint}"),
            tracker: tracker.clone(),
            on_stored: observers.on_stored,
            shutdown: shutdown.clone(),
            budget: crate::budget::MediaBudget::new(config.limits.media_memory_bytes),
            snapshots: snapshots.clone(),
        });
        let rtmp_ctx = Arc::new(rtmp::Context {
            config: Arc::clone(&config),
            publish: publish_ctx,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            slots: crate::slots::Slots::new(
                config.limits.max_rtmp_connections,
                config.limits.max_rtmp_connections_per_ip,
            ),
        });
        let http_ctx = Arc::new(service::Context {
            config: Arc::clone(&config),
            store: store.clone(),
            meta: meta.clone(),
            channels: Arc::clone(&channels),
            cluster: Arc::clone(&cluster),
            keys,
            nonces: Default::default(),
            notifier: notifier.clone(),
            endpoint,
            rtmp_addr,
        });
        let sender =
            Arc::new(Sender::new(meta.clone(), config.node.id.clone(), config.notify.clone(), notifier.wake_handle())?);
        tracker.spawn(sender.run(shutdown.clone(), tracker.clone()));
        tracker.spawn(http::serve(
            http_listener,
            http_ctx,
            Some(Arc::clone(&rtmp_ctx)),
            shutdown.clone(),
            tracker.clone(),
        ));
        tracker.spawn(rtmp::serve(rtmp_listener, rtmp_ctx));
        // Scripts and tests read this line to find the ports when they asked for port 0.
        info!(rtmp = %rtmp_addr, http = %http_addr, data_dir = %config.data_dir.display(), "livechannel listening");
        Ok(Server {
            rtmp_addr,
            http_addr,
            channels,
            cluster,
            store,
            meta,
            journal: journal_handle,
            snapshots,
            shutdown,
            tracker,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Waits until every index row and callback submitted so far is committed to the metadata database.
    pub async fn sync_metadata(&self) -> bool {
        match self.journal.upgrade() {
            Some(journal) => journal.sync().await,
            None => true,
        }
    }

    /// What the snapshot pool did (taken, skipped, failed) on this server.
    pub fn snapshot_counters(&self) -> &Arc<crate::snapshot::pool::Counters> {
        self.snapshots.counters()
    }

    /// The metadata writer's counters (dropped entries, conflicts, commit failures).
    pub fn journal_counters(&self) -> &Arc<crate::journal::JournalCounters> {
        self.journal.counters()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Draining: `/readyz` answers 503 and new publishes are refused while the listeners stay up; every
    /// live publish ends after storing its open segment. Returns once every channel of this node is
    /// stored and released (other nodes may take them), or false if `grace` ran out first.
    pub async fn drain(&self, grace: Duration) -> bool {
        let ended = self.cluster.drain();
        info!(publishes = ended, "draining: no new publishes; live ones end after their open segment");
        let deadline = tokio::time::Instant::now() + grace;
        while !self.channels.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Stops accepting, ends every publish (flushing its open segment), waits for storage to finish.
    /// Returns false if `grace` ran out first.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        let done = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        if done {
            info!("shutdown complete: all segments and playlists flushed");
        } else {
            warn!(grace_s = grace.as_secs(), "shutdown grace period ran out; some uploads may be incomplete");
        }
        done
    }
}

/// The IP callbacks name as this node's: `node_address`'s host, else the RTMP listen address, else (for
/// 0.0.0.0 or ::) the address of the interface that routes outwards. The last is found by connecting a
/// UDP socket, which sends nothing.
fn node_ip(config: &Config, rtmp: SocketAddr) -> String {
    if let Some(address) = &config.node.address {
        if let Ok(ip) = address.parse::<std::net::IpAddr>() {
            return ip.to_string();
        }
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return addr.ip().to_string();
        }
        // host:port with a host name.
        return address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host).to_owned();
    }
    if !rtmp.ip().is_unspecified() {
        return rtmp.ip().to_string();
    }
    std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| {
            s.connect(("192.0.2.1", 9))?;
            s.local_addr()
        })
        .map_or_else(|_| rtmp.ip().to_string(), |a| a.ip().to_string())
}

fn warn_if_open(config: &Config, rtmp: SocketAddr, http: SocketAddr) {
    let exposed = !rtmp.ip().is_loopback() || !http.ip().is_loopback();
    let open: Vec<&str> =
        config.buckets.iter().filter(|b| b.acl == Acl::PublicReadWrite).map(|b| b.name.as_str()).collect();
    if exposed && !open.is_empty() {
        warn!(
            buckets = ?open,
            "LISTENING ON A NON-LOOPBACK ADDRESS WITH PUBLIC-READ-WRITE BUCKETS: anyone who can reach this server can publish. \
             Configure [[buckets]] with acl = \"private\" and [[access_keys]] before exposing it."
        );
    }
}
