//! The configuration tree: TOML file + command-line overrides, deserialised once, validated into the types
//! the rest of the server uses. Every key is optional; unknown keys are an error that names the key.
//! The key names are a contract (DESIGN.md §1): extend, never rename.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The file as written. Defaults live in one place: [`Config::from_file`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub rtmp_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub public_endpoint: Option<String>,
    pub base_domain: Option<String>,
    #[serde(default)]
    pub channel_defaults: ChannelDefaultsFile,
    #[serde(default)]
    pub access_keys: Vec<AccessKey>,
    #[serde(default)]
    pub buckets: Vec<BucketFile>,
    pub storage: Option<StorageConfig>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub notify: NotifyFile,
    /// Static `X-Auth-Token` values for the Huawei-style API, each bound to one project id.
    #[serde(default)]
    pub auth_tokens: Vec<AuthToken>,
    /// The metadata database (`[database]`); absent: SQLite at `<data_dir>/meta.db`.
    pub database: Option<DatabaseFile>,
    /// This node's name in the cluster: lease rows, push history, callbacks. Default: the host name.
    pub node_id: Option<String>,
    /// How other nodes and balancers reach this node (`host[:port]`); its host is the node IP callbacks
    /// carry. Default: the RTMP listen address, or the address of the interface that routes outwards
    /// when that is unspecified (0.0.0.0).
    pub node_address: Option<String>,
    /// Leases that make a channel live on one node of the cluster (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterFile,
    /// The web console's sign-in (`[console]`); without it only public buckets are shown.
    pub console: Option<ConsoleLogin>,
    /// `[[notify_topics]]`: where a PutLiveChannel Snapshot `NotifyTopic` delivers (OSS sends to MNS;
    /// here a topic name maps to a callback URL).
    #[serde(default)]
    pub notify_topics: Vec<NotifyTopic>,
    /// How snapshots are taken (`[snapshots]`).
    #[serde(default)]
    pub snapshots: SnapshotsFile,
}

/// `[snapshots]`: the decoder pool that turns keyframes into PutLiveChannel Snapshot JPEGs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsFile {
    /// The ffmpeg that decodes keyframes. Default: `ffmpeg` on the PATH.
    pub ffmpeg: Option<PathBuf>,
    /// Keyframes decoded at once. Default: one per CPU (the decoders run at the lowest priority, so they
    /// only take CPU the media path leaves idle).
    pub workers: Option<usize>,
    /// Keyframes waiting for a worker; past that, snapshots are skipped (and counted). Default: 4 per worker (a decoder run takes up to 8 of one picture size).
    pub queue: Option<usize>,
    /// One decode that takes longer is killed and counts as failed. Default 10000.
    pub timeout_ms: Option<u64>,
    /// JPEG quality, 1-100. Default 85.
    pub jpeg_quality: Option<u8>,
}

/// The validated `[snapshots]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub ffmpeg: PathBuf,
    pub workers: usize,
    pub queue: usize,
    pub timeout: Duration,
    pub jpeg_quality: u8,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        SnapshotSettings {
            ffmpeg: PathBuf::from("ffmpeg"),
            workers,
            queue: 4 * workers,
            timeout: Duration::from_secs(10),
            jpeg_quality: 85,
        }
    }
}

/// One `[[notify_topics]]` entry: snapshot results for `name` are POSTed to `url` through the outbox.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotifyTopic {
    pub name: String,
    pub url: String,
    /// When set, each message carries `ALI-LIVE-TIMESTAMP` and `ALI-LIVE-SIGNATURE` made with this key,
    /// as Aliyun-style recording callbacks do (`md5(host|timestamp|key)`).
    #[serde(default)]
    pub sign_key: Option<String>,
}

/// The web console's one account (HTTP Basic): signed in, it shows private buckets too and may enable
/// or disable channels. Without it the console is read-only and shows public buckets only.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleLogin {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// How long a live claim outlives its node's last renewal: after this, another node may take the
    /// channel over. Default 10000.
    pub lease_ms: Option<u64>,
    /// How often a node renews its leases, checks for kicks and sweeps leases of dead nodes. Default 1000.
    pub renew_ms: Option<u64>,
}

/// This node, and how it holds channels in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: String,
    pub address: Option<String>,
    pub lease: Duration,
    pub renew: Duration,
}

/// The host name, as the kernel knows it (no crate needed on Linux), else `HOSTNAME`, else `livechannel`.
pub fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| validate_node_id(h).is_ok())
        .unwrap_or_else(|| "livechannel".to_owned())
}

/// 1..=64 of letters, digits, `.`, `_` and `-`: it goes into logs, callbacks and SQL rows unescaped.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Ok(())
    } else {
        Err(format!("node_id {id:?} must be 1..=64 of [A-Za-z0-9._-]"))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    /// `sqlite://path/to/meta.db` or `postgres://user:password@host:port/database`.
    pub url: Option<String>,
    /// Pool size (default 4). On SQLite: the read connections; writes always go through one more.
    pub max_connections: Option<u32>,
}

/// Where metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `path` None: `<data_dir>/meta.db`, resolved when the server starts (data_dir may be overridden).
    Sqlite { path: Option<PathBuf>, max_connections: u32 },
    /// A PostgreSQL URL as libpq and sqlx read it (`postgres://` or `postgresql://`).
    Postgres { url: String, max_connections: u32 },
}

impl Database {
    pub fn max_connections(&self) -> u32 {
        match self {
            Database::Sqlite { max_connections, .. } | Database::Postgres { max_connections, .. } => *max_connections,
        }
    }
}

/// Callback delivery (`[notify]`): per-attempt timeout, attempts, backoff, concurrency per destination.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub concurrency_per_destination: Option<usize>,
    /// CIDR ranges and host names that callbacks may reach although they are internal (loopback,
    /// private, link-local...): on-premises receivers. Default: none.
    pub allowed_destinations: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthToken {
    pub token: String,
    pub project_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDefaultsFile {
    pub frag_duration: Option<u32>,
    pub frag_count: Option<u32>,
    pub playlist_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketFile {
    pub name: String,
    pub acl: Option<Acl>,
    pub auto_create_channels: Option<bool>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// What a new publish of a channel that is live already does (`idle`, `always`, `never`).
    pub publisher_takeover: Option<TakeoverPolicy>,
    /// `idle`: how long the live publisher must have sent no media before a new one takes over.
    pub takeover_after_ms: Option<u64>,
    /// After this long without a publisher, the live playlist is closed with `EXT-X-ENDLIST`, so players
    /// end instead of waiting (a later publish reopens it). Default: never (OSS behaviour).
    pub reconnect_window_ms: Option<u64>,
    /// Segments older than this many days are deleted (objects and index rows); absent: kept forever.
    pub retention_days: Option<u32>,
}

/// When a new publish may replace the live publisher of its channel. An encoder that reconnects after a
/// network blip finds its old connection still open (TCP has not noticed yet): `idle` lets it back on the
/// air as soon as the old connection has been silent for `takeover_after_ms`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TakeoverPolicy {
    /// The old publisher sent no media for `takeover_after_ms`.
    #[default]
    Idle,
    /// Always: the newest publisher wins.
    Always,
    /// Never: the channel is refused while it is live (nginx-rtmp, SRS).
    Never,
}

/// A bucket's publisher-takeover rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    pub policy: TakeoverPolicy,
    pub after: Duration,
}

impl Default for Takeover {
    fn default() -> Self {
        Takeover { policy: TakeoverPolicy::Idle, after: Duration::from_secs(3) }
    }
}

impl Takeover {
    /// Whether a publisher silent for `silent` gives way to a new one.
    pub fn allows(&self, silent: Duration) -> bool {
        match self.policy {
            TakeoverPolicy::Idle => silent >= self.after,
            TakeoverPolicy::Always => true,
            TakeoverPolicy::Never => false,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Acl {
    Private,
    PublicRead,
    PublicReadWrite,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Path-style S3 requests (`endpoint/bucket/key`); most self-hosted S3 servers want this.
    pub path_style: Option<bool>,
    /// Every object key starts with this folder (`prefix/<bucket>/<channel>/...`), so several deployments
    /// can share one S3 bucket. Default: none.
    pub prefix: Option<String>,
    /// Multipart part size in bytes: a segment smaller than this is one PUT, a larger one is uploaded in
    /// parts while it is produced. S3 needs at least 5 MiB. Default: 8 MiB for S3, 64 KiB for local.
    pub part_size: Option<usize>,
    /// How long one S3 request may be retried (connection refused, 5xx, timeouts) before the write counts as
    /// failed: the segment is then dropped whole, and the next one tried afresh. Default 10000.
    pub retry_timeout_ms: Option<u64>,
    /// S3 only: answer segment GETs with `302 Found` to a presigned URL valid this many seconds, so players
    /// (or a CDN in front) fetch segment bytes from the object store directly. Playlists are always served
    /// here. Default: none (every byte through this server).
    pub segment_redirect_expires_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    S3,
}

/// nginx-rtmp's `max_message` is 1 MiB; 4 MiB holds the keyframes of 4K streams at 50 Mbit/s.
pub const DEFAULT_MAX_RTMP_MESSAGE: u32 = 4 << 20;

/// Limits that protect the server; each has a sane default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Most concurrent RTMP connections (publishing or not).
    pub max_rtmp_connections: Option<usize>,
    /// Most concurrent RTMP connections from one IP address. Default: a quarter of max_rtmp_connections.
    pub max_rtmp_connections_per_ip: Option<usize>,
    /// A write to an RTMP client that takes longer than this closes the connection (a client that never
    /// reads). Default 10000.
    pub rtmp_send_timeout_ms: Option<u64>,
    /// Per channel: TS bytes that may wait for storage before the segment being produced is dropped.
    pub storage_queue_bytes: Option<usize>,
    /// All channels together: media bytes queued for storage or in uploads not yet complete. Past three
    /// quarters of it new publishes are refused; past it the channels holding the most lose their newest
    /// segment. Default: a sixteenth of the machine's memory, at least 64 MiB.
    pub media_memory_bytes: Option<usize>,
    /// Largest RTMP audio or video message (a keyframe) accepted from a connected client.
    pub max_rtmp_message_bytes: Option<u32>,
    /// A connection that sends nothing for this long is closed. Default 30000.
    pub rtmp_idle_timeout_ms: Option<u64>,
    /// A publisher's media may wait this long in its socket, at its recent rate, so that it is read in
    /// fewer, bigger reads (at most 32 KiB; a message already begun is read as soon as it is whole, so a
    /// keyframe that cuts a segment waits only when it is smaller than the batch). 0: every piece is read
    /// as it comes. Default 40.
    pub rtmp_read_batch_ms: Option<u64>,
    /// A publish none of whose segments could be stored for this long is ended with an RTMP error, so
    /// the encoder's operator sees that nothing is recorded. Default 30000.
    pub storage_failure_timeout_ms: Option<u64>,
    /// Most concurrent HTTP connections (players, API calls, RTMP sniffed on the HTTP port). Default 4096.
    pub max_http_connections: Option<usize>,
    /// Most concurrent HTTP connections from one IP address. Default: a quarter of max_http_connections.
    pub max_http_connections_per_ip: Option<usize>,
    /// A request body (API documents are a few hundred bytes) must arrive within this. Default 10000.
    pub http_body_timeout_ms: Option<u64>,
}

/// Delivery settings (`[notify]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub concurrency_per_destination: usize,
    /// Where callbacks may go besides the internet (`allowed_destinations`).
    pub destinations: crate::egress::Destinations,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            timeout: Duration::from_secs(5),
            max_attempts: 12,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            concurrency_per_destination: 16,
            destinations: crate::egress::Destinations::default(),
        }
    }
}

/// OSS LiveChannel target settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    pub frag_duration: u32,
    pub frag_count: u32,
    pub playlist_name: String,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings { frag_duration: 5, frag_count: 3, playlist_name: "playlist.m3u8".into() }
    }
}

impl ChannelSettings {
    /// The OSS rules: FragDuration and FragCount 1..=100; PlaylistName 6..=128 chars, ends in `.m3u8`, no `/`.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.frag_duration) {
            return Err(format!("frag_duration {} is outside 1..=100", self.frag_duration));
        }
        if !(1..=100).contains(&self.frag_count) {
            return Err(format!("frag_count {} is outside 1..=100", self.frag_count));
        }
        validate_playlist_name(&self.playlist_name)
    }
}

pub fn validate_playlist_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(6..=128).contains(&len)
        || !name.ends_with(".m3u8")
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Err(format!("playlist name {name:?} must be 6..=128 characters, end in .m3u8 and contain no '/'"));
    }
    Ok(())
}

/// A configured bucket. `Default` is a private bucket with no name, for `..Default::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub acl: Acl,
    pub auto_create_channels: bool,
    pub domains: Vec<String>,
    pub takeover: Takeover,
    /// How long a channel may be without a publisher before its live playlist gets `EXT-X-ENDLIST`.
    pub reconnect_window: Option<Duration>,
    /// How long stored segments are kept (`retention_days`); None keeps them forever.
    pub retention: Option<Duration>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            name: String::new(),
            acl: Acl::Private,
            auto_create_channels: false,
            domains: Vec::new(),
            takeover: Takeover::default(),
            reconnect_window: None,
            retention: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_rtmp_connections: usize,
    pub max_rtmp_connections_per_ip: usize,
    pub rtmp_send_timeout: Duration,
    pub storage_queue_bytes: usize,
    pub media_memory_bytes: usize,
    pub max_rtmp_message_bytes: u32,
    pub rtmp_idle_timeout: Duration,
    pub rtmp_read_batch: Duration,
    pub storage_failure_timeout: Duration,
    pub max_http_connections: usize,
    pub max_http_connections_per_ip: usize,
    pub http_body_timeout: Duration,
}

/// `[limits] media_memory_bytes` when the config does not say: a sixteenth of the machine's memory,
/// at least 64 MiB (1 GiB where the machine's memory cannot be read).
fn default_media_memory() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    total.map_or(1 << 30, |bytes| (bytes / 16).max(64 << 20))
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub rtmp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_endpoint: Option<String>,
    pub base_domain: Option<String>,
    pub channel_defaults: ChannelSettings,
    pub access_keys: Vec<AccessKey>,
    pub buckets: Vec<Bucket>,
    pub storage: Option<StorageConfig>,
    pub limits: Limits,
    pub notify: NotifyConfig,
    pub auth_tokens: Vec<AuthToken>,
    pub database: Database,
    pub node: NodeConfig,
    pub console: Option<ConsoleLogin>,
    pub notify_topics: Vec<NotifyTopic>,
    pub snapshots: SnapshotSettings,
}

impl Config {
    /// The `[[notify_topics]]` entry of that name.
    pub fn notify_topic(&self, name: &str) -> Option<&NotifyTopic> {
        self.notify_topics.iter().find(|t| t.name == name)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_file(ConfigFile::default()).expect("the embedded defaults are valid")
    }
}

/// Overrides from the command line (or `LIVECHANNEL_*` variables); they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub rtmp_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub node_id: Option<String>,
    pub node_address: Option<String>,
}

impl Config {
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut file = match path {
            None => ConfigFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?
            }
        };
        file.rtmp_listen = overrides.rtmp_listen.or(file.rtmp_listen);
        file.http_listen = overrides.http_listen.or(file.http_listen);
        file.data_dir = overrides.data_dir.or(file.data_dir);
        file.node_id = overrides.node_id.or(file.node_id);
        file.node_address = overrides.node_address.or(file.node_address);
        Config::from_file(file)
    }

    pub fn from_file(file: ConfigFile) -> Result<Config, ConfigError> {
        let invalid = ConfigError::Invalid;
        let defaults = ChannelSettings::default();
        let channel_defaults = ChannelSettings {
            frag_duration: file.channel_defaults.frag_duration.unwrap_or(defaults.frag_duration),
            frag_count: file.channel_defaults.frag_count.unwrap_or(defaults.frag_count),
            playlist_name: file.channel_defaults.playlist_name.unwrap_or(defaults.playlist_name),
        };
        channel_defaults.validate().map_err(|e| invalid(format!("[channel_defaults] {e}")))?;

        let buckets = if file.buckets.is_empty() {
            vec![Bucket {
                name: "live".into(),
                acl: Acl::PublicReadWrite,
                auto_create_channels: true,
                ..Bucket::default()
            }]
        } else {
            file.buckets
                .into_iter()
                .map(|b| Bucket {
                    takeover: Takeover {
                        policy: b.publisher_takeover.unwrap_or_default(),
                        after: b.takeover_after_ms.map_or(Takeover::default().after, Duration::from_millis),
                    },
                    reconnect_window: b.reconnect_window_ms.map(Duration::from_millis),
                    retention: b.retention_days.map(|d| Duration::from_secs(u64::from(d) * 86_400)),
                    name: b.name,
                    acl: b.acl.unwrap_or(Acl::Private),
                    auto_create_channels: b.auto_create_channels.unwrap_or(false),
                    domains: b.domains,
                })
                .collect()
        };
        for (i, b) in buckets.iter().enumerate() {
            validate_bucket_name(&b.name).map_err(|e| invalid(format!("[[buckets]] {e}")))?;
            // `/console/...` is the web console's.
            if b.name == "console" {
                return Err(invalid("[[buckets]] the bucket name \"console\" is reserved for the web console".into()));
            }
            if buckets[..i].iter().any(|o| o.name == b.name) {
                return Err(invalid(format!("[[buckets]] name {:?} appears twice", b.name)));
            }
            if b.retention.is_some_and(|r| r.is_zero()) {
                return Err(invalid(format!("[[buckets]] {:?}: retention_days must be at least 1", b.name)));
            }
            if b.reconnect_window.is_some_and(|w| w < Duration::from_secs(1)) {
                return Err(invalid(format!("[[buckets]] {:?}: reconnect_window_ms must be at least 1000", b.name)));
            }
            // Under half a second, a publisher's ordinary jitter (a long keyframe upload) looks idle.
            if b.takeover.after < Duration::from_millis(500) {
                return Err(invalid(format!("[[buckets]] {:?}: takeover_after_ms must be at least 500", b.name)));
            }
        }
        for (i, k) in file.access_keys.iter().enumerate() {
            if k.id.is_empty() || k.secret.is_empty() {
                return Err(invalid("[[access_keys]] id and secret must not be empty".into()));
            }
            if file.access_keys[..i].iter().any(|o| o.id == k.id) {
                return Err(invalid(format!("[[access_keys]] id {:?} appears twice", k.id)));
            }
        }
        if let Some(s) = &file.storage {
            if s.kind == StorageKind::S3 && s.bucket.as_deref().unwrap_or("").is_empty() {
                return Err(invalid("[storage] kind = \"s3\" needs bucket".into()));
            }
            if s.kind == StorageKind::S3 && s.part_size.is_some_and(|p| p < 5 << 20) {
                return Err(invalid("[storage] part_size must be at least 5242880 (5 MiB) for S3".into()));
            }
            if s.part_size == Some(0) {
                return Err(invalid("[storage] part_size must be > 0".into()));
            }
            match s.segment_redirect_expires_s {
                Some(_) if s.kind != StorageKind::S3 => {
                    return Err(invalid("[storage] segment_redirect_expires_s needs kind = \"s3\"".into()));
                }
                // SigV4 presigned URLs live at most 7 days; under a minute a slow player's URL expires mid-fetch.
                Some(t) if !(60..=604_800).contains(&t) => {
                    return Err(invalid("[storage] segment_redirect_expires_s must be 60 to 604800".into()));
                }
                _ => {}
            }
            if let Some(p) = &s.prefix
                && p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(invalid(format!("[storage] prefix {p:?} must be folder names joined by '/'")));
            }
        }
        let limits = Limits {
            max_rtmp_connections: file.limits.max_rtmp_connections.unwrap_or(4096),
            max_rtmp_connections_per_ip: file
                .limits
                .max_rtmp_connections_per_ip
                .unwrap_or_else(|| (file.limits.max_rtmp_connections.unwrap_or(4096) / 4).max(1)),
            rtmp_send_timeout: Duration::from_millis(file.limits.rtmp_send_timeout_ms.unwrap_or(10_000)),
            storage_queue_bytes: file.limits.storage_queue_bytes.unwrap_or(8 << 20),
            media_memory_bytes: file.limits.media_memory_bytes.unwrap_or_else(default_media_memory),
            max_rtmp_message_bytes: file.limits.max_rtmp_message_bytes.unwrap_or(DEFAULT_MAX_RTMP_MESSAGE),
            rtmp_idle_timeout: Duration::from_millis(file.limits.rtmp_idle_timeout_ms.unwrap_or(30_000)),
            rtmp_read_batch: Duration::from_millis(file.limits.rtmp_read_batch_ms.unwrap_or(40)),
            storage_failure_timeout: Duration::from_millis(file.limits.storage_failure_timeout_ms.unwrap_or(30_000)),
            max_http_connections: file.limits.max_http_connections.unwrap_or(4096),
            max_http_connections_per_ip: file
                .limits
                .max_http_connections_per_ip
                .unwrap_or_else(|| (file.limits.max_http_connections.unwrap_or(4096) / 4).max(1)),
            http_body_timeout: Duration::from_millis(file.limits.http_body_timeout_ms.unwrap_or(10_000)),
        };
        if limits.max_http_connections == 0
            || limits.max_http_connections_per_ip == 0
            || limits.http_body_timeout < Duration::from_millis(100)
        {
            return Err(invalid(
                "[limits] max_http_connections and max_http_connections_per_ip must be > 0, http_body_timeout_ms >= 100"
                    .into(),
            ));
        }
        // Encoders send media many times a second; below a second a paused stream's keepalive gap trips it.
        if limits.rtmp_idle_timeout < Duration::from_secs(1) || limits.storage_failure_timeout < Duration::from_secs(1)
        {
            return Err(invalid(
                "[limits] rtmp_idle_timeout_ms and storage_failure_timeout_ms must be at least 1000".into(),
            ));
        }
        // Beyond a second, the media a batch holds back would be noticed by players of a low-latency playlist.
        if limits.rtmp_read_batch > Duration::from_secs(1) {
            return Err(invalid("[limits] rtmp_read_batch_ms must be at most 1000".into()));
        }
        // RTMP message lengths are 24-bit; below 64 KiB a high-bitrate keyframe would not fit.
        if !(64 << 10..=(1 << 24) - 1).contains(&limits.max_rtmp_message_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_rtmp_message_bytes = {}: must be between 65536 and 16777215",
                limits.max_rtmp_message_bytes
            )));
        }
        if limits.max_rtmp_connections_per_ip == 0 || limits.rtmp_send_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "[limits] max_rtmp_connections_per_ip must be > 0 and rtmp_send_timeout_ms >= 100".into(),
            ));
        }
        if limits.media_memory_bytes < limits.storage_queue_bytes {
            return Err(invalid(format!(
                "[limits] media_memory_bytes = {} is below storage_queue_bytes = {}: one channel could not queue a segment",
                limits.media_memory_bytes, limits.storage_queue_bytes
            )));
        }
        if limits.max_rtmp_connections == 0 || limits.storage_queue_bytes < 256 * 1024 {
            return Err(invalid("[limits] max_rtmp_connections must be > 0 and storage_queue_bytes >= 262144".into()));
        }
        let d = NotifyConfig::default();
        let ms = std::time::Duration::from_millis;
        let notify = NotifyConfig {
            timeout: file.notify.timeout_ms.map_or(d.timeout, ms),
            max_attempts: file.notify.max_attempts.unwrap_or(d.max_attempts),
            retry_base: file.notify.retry_base_ms.map_or(d.retry_base, ms),
            retry_max: file.notify.retry_max_ms.map_or(d.retry_max, ms),
            concurrency_per_destination: file
                .notify
                .concurrency_per_destination
                .unwrap_or(d.concurrency_per_destination),
            destinations: crate::egress::Destinations::parse(
                file.notify.allowed_destinations.as_deref().unwrap_or(&[]),
            )
            .map_err(|e| invalid(format!("[notify] {e}")))?,
        };
        if notify.max_attempts == 0 || notify.concurrency_per_destination == 0 || notify.timeout.is_zero() {
            return Err(invalid(
                "[notify] timeout_ms, max_attempts and concurrency_per_destination must be > 0".into(),
            ));
        }
        if file.auth_tokens.iter().any(|t| t.token.len() < 16 || t.project_id.is_empty()) {
            return Err(invalid("[[auth_tokens]] token must be at least 16 characters and project_id set".into()));
        }
        let database = database(file.database.as_ref())?;
        let node = NodeConfig {
            id: file.node_id.unwrap_or_else(default_node_id),
            address: file.node_address.filter(|a| !a.is_empty()),
            lease: Duration::from_millis(file.cluster.lease_ms.unwrap_or(10_000)),
            renew: Duration::from_millis(file.cluster.renew_ms.unwrap_or(1_000)),
        };
        validate_node_id(&node.id).map_err(invalid)?;
        // Three renewals fit in a lease, so one slow round trip does not lose it.
        if node.renew < Duration::from_millis(100) || node.lease < node.renew * 3 {
            return Err(invalid(format!(
                "[cluster] renew_ms must be >= 100 and lease_ms at least 3 x renew_ms (got {} and {})",
                node.renew.as_millis(),
                node.lease.as_millis()
            )));
        }
        if let Some(c) = &file.console
            && (c.user.is_empty() || c.user.contains(':') || c.password.chars().count() < 12)
        {
            return Err(invalid("[console] user must be set (no ':') and password at least 12 characters".into()));
        }
        for (i, t) in file.notify_topics.iter().enumerate() {
            let uri: Option<hyper::Uri> = t.url.parse().ok();
            let web = uri.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
            });
            if t.name.is_empty() || t.name.len() > 256 || !web {
                return Err(invalid(format!(
                    "[[notify_topics]] {:?}: name must be 1-256 bytes and url an http(s) URL (got {:?})",
                    t.name, t.url
                )));
            }
            if file.notify_topics[..i].iter().any(|o| o.name == t.name) {
                return Err(invalid(format!("[[notify_topics]] name {:?} appears twice", t.name)));
            }
        }
        let defaults = SnapshotSettings::default();
        let f = &file.snapshots;
        let workers = f.workers.unwrap_or(defaults.workers);
        let snapshots = SnapshotSettings {
            ffmpeg: f.ffmpeg.clone().unwrap_or(defaults.ffmpeg),
            workers,
            queue: f.queue.unwrap_or(4 * workers),
            timeout: f.timeout_ms.map_or(defaults.timeout, Duration::from_millis),
            jpeg_quality: f.jpeg_quality.unwrap_or(defaults.jpeg_quality),
        };
        if !(1..=64).contains(&snapshots.workers)
            || !(1..=4096).contains(&snapshots.queue)
            || snapshots.timeout < Duration::from_millis(100)
            || !(1..=100).contains(&snapshots.jpeg_quality)
        {
            return Err(invalid(
                "[snapshots] workers must be 1-64, queue 1-4096, timeout_ms >= 100, jpeg_quality 1-100".into(),
            ));
        }
        Ok(Config {
            snapshots,
            notify_topics: file.notify_topics,
            console: file.console,
            node,
            notify,
            database,
            auth_tokens: file.auth_tokens,
            rtmp_listen: file.rtmp_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1935))),
            http_listen: file.http_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: file.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            public_endpoint: file.public_endpoint,
            base_domain: file.base_domain,
            channel_defaults,
            access_keys: file.access_keys,
            buckets,
            storage: file.storage,
            limits,
        })
    }

    pub fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.name == name)
    }

    /// The bucket a vendor API's domain names: the bucket's own name, `<bucket>.<base_domain>`, or one of
    /// the bucket's `domains` aliases (DESIGN.md §1).
    pub fn bucket_for_domain(&self, domain: &str) -> Option<&Bucket> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        self.buckets.iter().find(|b| {
            b.name == domain
                || b.domains.iter().any(|d| d.eq_ignore_ascii_case(&domain))
                || self
                    .base_domain
                    .as_deref()
                    .is_some_and(|base| domain == format!("{}.{}", b.name, base.to_ascii_lowercase()))
        })
    }

    /// The SQLite file metadata lives in, when it lives in SQLite.
    pub fn meta_path(&self) -> Option<PathBuf> {
        match &self.database {
            Database::Sqlite { path: Some(path), .. } => Some(path.clone()),
            Database::Sqlite { path: None, .. } => Some(self.data_dir.join("meta.db")),
            Database::Postgres { .. } => None,
        }
    }

    /// The bucket used when a publish URL names none (app `live`).
    pub fn default_bucket(&self) -> &Bucket {
        &self.buckets[0]
    }
}

/// `[database]`: the URL's scheme picks the backend. A password in the URL never reaches an error message.
fn database(file: Option<&DatabaseFile>) -> Result<Database, ConfigError> {
    let max_connections = file.and_then(|d| d.max_connections).unwrap_or(4);
    if max_connections == 0 {
        return Err(ConfigError::Invalid("[database] max_connections must be > 0".into()));
    }
    let Some(url) = file.and_then(|d| d.url.as_deref()) else {
        return Ok(Database::Sqlite { path: None, max_connections });
    };
    if let Some(path) = url.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        return Ok(Database::Sqlite { path: Some(PathBuf::from(path)), max_connections });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::Postgres { url: url.to_owned(), max_connections });
    }
    let shown = redact_url(url);
    Err(ConfigError::Invalid(format!("[database] url {shown}: expected sqlite://PATH or postgres://...")))
}

/// A URL with any password replaced by `***`, for logs and errors. One that does not parse is shown as its
/// scheme only: it might hold a password in a form we cannot find.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have credentials at all, which this one has.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => format!("{}://…", url.split_once("://").map_or("?", |(scheme, _)| scheme)),
    }
}

/// OSS bucket naming: 3..=63 of lowercase letters, digits and '-', not starting or ending with '-'.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("bucket name {name:?} must be 3..=63 of [a-z0-9-], not starting or ending with '-'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|source| ConfigError::Parse { path: "t".into(), source })?;
        Config::from_file(file)
    }

    #[test]
    fn no_config_means_the_embedded_defaults() {
        let c = Config::default();
        assert_eq!(c.rtmp_listen.to_string(), "127.0.0.1:1935");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.buckets.len(), 1);
        assert_eq!(c.default_bucket().name, "live");
        assert_eq!(c.default_bucket().acl, Acl::PublicReadWrite);
        assert!(c.default_bucket().auto_create_channels);
        assert_eq!(c.channel_defaults, ChannelSettings::default());
    }

    #[test]
    fn the_example_file_runs_as_it_is_on_local_storage_and_sqlite() {
        let example = include_str!("../fixtures/config/example.toml");
        let c = parse(example).unwrap();
        assert_eq!(c.storage, None, "the example must not point media at a server the user does not have");
        assert_eq!(c.database, Database::Sqlite { path: None, max_connections: 4 });
        // The README's oss2 example uses this key and bucket.
        assert_eq!((c.access_keys[0].id.as_str(), c.access_keys[0].secret.as_str()), ("AKIDEXAMPLE", "SECRETEXAMPLE"));
        assert_eq!(c.bucket("examplebucket").map(|b| b.acl), Some(Acl::Private));
        assert_eq!(c.default_bucket().takeover, Takeover::default());

        // Every optional setting it shows, uncommented, is a valid key with a valid value.
        let all: String = example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&all).unwrap();
        assert_eq!(c.public_endpoint.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(c.buckets[0].domains, vec!["push.example.com".to_string()]);
        assert_eq!(c.storage.as_ref().unwrap().kind, StorageKind::Local);
        assert_eq!(c.auth_tokens[0].project_id, "0123456789abcdef0123456789abcdef");
        assert_eq!((c.notify.max_attempts, c.notify.retry_max.as_secs()), (12, 300));
        assert_eq!(c.limits.rtmp_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.storage_failure_timeout, Duration::from_secs(30));
        assert_eq!(c.notify_topics[0].sign_key.as_deref(), Some("snapkey0123456789"));
        assert_eq!((c.snapshots.workers, c.snapshots.queue, c.snapshots.jpeg_quality), (2, 8, 85));
    }

    #[test]
    fn snapshot_settings_have_defaults_and_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.snapshots.ffmpeg, PathBuf::from("ffmpeg"));
        assert!(c.snapshots.workers >= 1 && c.snapshots.queue == 4 * c.snapshots.workers);
        assert_eq!(c.snapshots.timeout, Duration::from_secs(10));
        let c = parse("[snapshots]\nffmpeg = \"/opt/ffmpeg/bin/ffmpeg\"\nworkers = 3\ntimeout_ms = 2500\n").unwrap();
        assert_eq!((c.snapshots.workers, c.snapshots.queue, c.snapshots.timeout), (3, 12, Duration::from_millis(2500)));
        for bad in ["workers = 0", "queue = 0", "timeout_ms = 10", "jpeg_quality = 0", "jpeg_quality = 101"] {
            let e = parse(&format!("[snapshots]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains("[snapshots]"), "{bad}: {e}");
        }
        assert!(parse("[snapshots]\nthreads = 2\n").unwrap_err().to_string().contains("threads"));
    }

    #[test]
    fn the_production_example_names_s3_and_postgres() {
        let c = parse(include_str!("../fixtures/config/s3-postgres.toml")).unwrap();
        assert_eq!(c.storage.as_ref().map(|s| s.kind), Some(StorageKind::S3));
        assert!(matches!(c.database, Database::Postgres { .. }));
        assert_eq!(c.default_bucket().acl, Acl::PublicRead);
    }

    #[test]
    fn publisher_takeover_is_per_bucket_and_idle_by_default() {
        let c = parse(
            "[[buckets]]\nname = \"aaa\"\n[[buckets]]\nname = \"bbb\"\npublisher_takeover = \"never\"\n\
                       [[buckets]]\nname = \"ccc\"\npublisher_takeover = \"always\"\ntakeover_after_ms = 800\n",
        )
        .unwrap();
        let [a, b, c] = ["aaa", "bbb", "ccc"].map(|n| c.bucket(n).unwrap().takeover);
        assert_eq!(a, Takeover { policy: TakeoverPolicy::Idle, after: Duration::from_secs(3) });
        assert!(!a.allows(Duration::from_millis(2999)) && a.allows(Duration::from_secs(3)));
        assert!(!b.allows(Duration::from_secs(3600)));
        assert!(c.allows(Duration::ZERO));
        let short = parse("[[buckets]]\nname = \"aaa\"\ntakeover_after_ms = 100\n").unwrap_err().to_string();
        assert!(short.contains("takeover_after_ms"), "{short}");
        assert!(parse("[[buckets]]\nname = \"aaa\"\npublisher_takeover = \"sometimes\"\n").is_err());
        assert!(parse("[limits]\nrtmp_idle_timeout_ms = 10\n").is_err());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse("rtmp_listen = \"127.0.0.1:1\"\nfrag_duraton = 3\n").unwrap_err().to_string();
        assert!(err.contains("frag_duraton"), "{err}");
        let err = parse("[channel_defaults]\nfragcount = 3\n").unwrap_err().to_string();
        assert!(err.contains("fragcount"), "{err}");
    }

    #[test]
    fn channel_defaults_follow_the_oss_limits() {
        assert!(parse("[channel_defaults]\nfrag_duration = 0\n").is_err());
        assert!(parse("[channel_defaults]\nfrag_count = 101\n").is_err());
        assert!(parse("[channel_defaults]\nplaylist_name = \".m3u8\"\n").is_err());
        assert!(parse("[channel_defaults]\nplaylist_name = \"x/abc.m3u8\"\n").is_err());
        let c = parse("[channel_defaults]\nfrag_duration = 2\nplaylist_name = \"index.m3u8\"\n").unwrap();
        assert_eq!(c.channel_defaults.frag_duration, 2);
        assert_eq!(c.channel_defaults.frag_count, 3);
        assert_eq!(c.channel_defaults.playlist_name, "index.m3u8");
    }

    #[test]
    fn segment_redirects_need_s3_and_a_sane_lifetime() {
        let s3 = "[storage]\nkind = \"s3\"\nbucket = \"b\"\n";
        let c = parse(&format!("{s3}segment_redirect_expires_s = 300\n")).unwrap();
        assert_eq!(c.storage.unwrap().segment_redirect_expires_s, Some(300));
        for bad in [0, 59, 604_801] {
            assert!(parse(&format!("{s3}segment_redirect_expires_s = {bad}\n")).is_err(), "{bad}");
        }
        let local = parse("[storage]\nkind = \"local\"\nsegment_redirect_expires_s = 300\n").unwrap_err();
        assert!(local.to_string().contains("needs kind = \"s3\""), "{local}");
    }

    #[test]
    fn buckets_are_validated() {
        assert!(parse("[[buckets]]\nname = \"Bad_Name\"\n").is_err());
        assert!(parse("[[buckets]]\nname = \"abc\"\n[[buckets]]\nname = \"abc\"\n").is_err());
        assert!(parse("[[buckets]]\nname = \"abc\"\nacl = \"public\"\n").is_err());
        let c = parse("[[buckets]]\nname = \"abc\"\n").unwrap();
        assert_eq!(c.buckets[0].acl, Acl::Private, "an explicit bucket is private unless it says otherwise");
    }

    #[test]
    fn the_database_url_picks_the_backend_and_never_shows_a_password() {
        let c = parse("data_dir = \"/srv/lc\"\n").unwrap();
        assert_eq!(c.database, Database::Sqlite { path: None, max_connections: 4 });
        assert_eq!(c.meta_path().as_deref(), Some(Path::new("/srv/lc/meta.db")));
        let c = parse("[database]\nurl = \"sqlite:///var/lib/lc/m.db\"\nmax_connections = 8\n").unwrap();
        assert_eq!(c.database, Database::Sqlite { path: Some("/var/lib/lc/m.db".into()), max_connections: 8 });
        assert_eq!(c.meta_path().as_deref(), Some(Path::new("/var/lib/lc/m.db")));
        let pg = parse("[database]\nurl = \"postgres://livechannel:secret@127.0.0.1:5432/lc\"\nmax_connections = 16\n");
        let url = "postgres://livechannel:secret@127.0.0.1:5432/lc".to_owned();
        assert_eq!(pg.unwrap().database, Database::Postgres { url, max_connections: 16 });
        let other = parse("[database]\nurl = \"mysql://root:secret@h/x\"\n").unwrap_err().to_string();
        assert!(other.contains("mysql://root:***@h/x") && !other.contains("secret"), "{other}");
        assert!(parse("[database]\nmax_connections = 0\n").is_err());
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://u:p@ss@h:1/db?x=1"), "postgres://u:***@h:1/db?x=1");
        assert_eq!(redact_url("postgres://u:p%40ss@h:1/db?x=1"), "postgres://u:***@h:1/db?x=1");
        assert!(!redact_url("postgres://u:se cret@[::1").contains("se cret"));
    }
}
