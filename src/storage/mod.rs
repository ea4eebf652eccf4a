//! Where segments and playlists live: an `Arc<dyn ObjectStore>` (a local folder by default, S3-compatible
//! storage with the `s3` feature, optionally under a key prefix), and how we write to it.
//!
//! Layout: `<bucket>/<channel>/<seq>.ts` and `<bucket>/<channel>/<PlaylistName>`; every key is built by
//! `names::ChannelKey`, which validates each component first.

pub mod live_files;
pub mod playlists;
pub mod sink;

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::{ChannelSettings, Config, StorageKind};
use crate::hls::Playlist;
use crate::names::{ChannelKey, NameError};
use live_files::LiveFiles;
use playlists::Playlists;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("cannot prepare local storage at {path}: {source}")]
    LocalDir { path: std::path::PathBuf, source: std::io::Error },
    /// Built without the `s3` feature (`cargo build --no-default-features`).
    #[error("S3 storage is not available in this build (built without the `s3` feature); use kind = \"local\"")]
    NoS3,
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot start the local writer threads: {0}")]
    WriterThreads(std::io::Error),
}

/// Default multipart part size on S3: above the 5 MiB minimum, and above almost every live segment.
pub const S3_PART_SIZE: usize = 8 * 1024 * 1024;

/// The object store plus how we write to it.
#[derive(Clone, Debug)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Multipart part size: S3 needs >= 5 MiB per part; the local store takes any size, so small parts
    /// keep a segment streaming to disk instead of sitting in memory.
    part_size: usize,
    /// Set when segment reads are answered with a presigned URL (`segment_redirect_expires_s`).
    redirect: Option<Redirect>,
    /// The local folder's writer threads: live segments and playlists are written through them.
    live: Option<LiveFiles>,
    /// The live playlists this node's publishes hold in memory; reads of them are answered from here.
    playlists: Arc<Playlists>,
}

/// Bytes of TS the segmenter hands out at once: small when they go straight into a file (nothing waits
/// in memory for a part to fill), 64 KiB when they go to an object_store upload.
pub const LIVE_CHUNK: usize = 8 * 1024;
pub const UPLOAD_CHUNK: usize = 64 * 1024;

/// What presigns redirect URLs: the S3 client; nothing in a build without the S3 backend.
#[cfg(feature = "s3")]
type UrlSigner = Arc<dyn object_store::signer::Signer>;
#[cfg(not(feature = "s3"))]
type UrlSigner = std::convert::Infallible;

#[derive(Clone, Debug)]
struct Redirect {
    /// The S3 client itself: the prefix store in front of it does not sign.
    signer: UrlSigner,
    prefix: Option<Path>,
    expires: std::time::Duration,
}

impl Store {
    pub fn new(objects: Arc<dyn ObjectStore>, part_size: usize) -> Self {
        Store { objects, part_size, redirect: None, live: None, playlists: Arc::default() }
    }

    /// The local folder's writer threads, when this store is a local folder.
    pub fn live(&self) -> Option<&LiveFiles> {
        self.live.as_ref()
    }

    /// How many bytes of TS the segmenter should hand this store at once.
    pub fn chunk_size(&self) -> usize {
        if self.live.is_some() { LIVE_CHUNK } else { UPLOAD_CHUNK }
    }

    /// A presigned GET URL for `path`, when this store answers segment reads with redirects.
    pub async fn redirect_url(&self, path: &Path) -> Option<Result<String, object_store::Error>> {
        let r = self.redirect.as_ref()?;
        let full = match &r.prefix {
            Some(prefix) => prefix.parts().chain(path.parts()).collect(),
            None => path.clone(),
        };
        #[cfg(feature = "s3")]
        return Some(r.signer.signed_url(object_store::signer::Method::GET, &full, r.expires).await.map(String::from));
        #[cfg(not(feature = "s3"))]
        match (r.signer, full) {}
    }

    /// How long a redirect stays valid.
    pub fn redirect_expires(&self) -> Option<std::time::Duration> {
        self.redirect.as_ref().map(|r| r.expires)
    }

    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::LocalDir { path: dir.to_owned(), source })?;
        let fs = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true));
        let live = LiveFiles::start(Arc::clone(&fs)).map_err(StorageError::WriterThreads)?;
        Ok(Store { live: Some(live), ..Store::new(fs, 64 * 1024) })
    }

    pub fn from_config(config: &Config) -> Result<Self, StorageError> {
        let media = config.data_dir.join("media");
        let store = match &config.storage {
            None => return Store::local(&media),
            // A local folder under a prefix is the folder `<media>/<prefix>`: the same files a PrefixStore
            // over `<media>` would name, and one the writer threads can be rooted at.
            Some(s) if s.kind == StorageKind::Local => {
                let local = Store::local(&s.prefix.as_deref().map_or_else(|| media.clone(), |p| media.join(p)))?;
                return Ok(Store { part_size: s.part_size.unwrap_or(local.part_size), ..local });
            }
            Some(s) => Self::s3(s)?,
        };
        match config.storage.as_ref().and_then(|s| s.prefix.as_deref()) {
            Some(prefix) => {
                let prefixed = object_store::prefix::PrefixStore::new(Arc::clone(&store.objects), prefix);
                let redirect = store.redirect.map(|r| Redirect { prefix: Some(Path::from(prefix)), ..r });
                Ok(Store { objects: Arc::new(prefixed), redirect, ..store })
            }
            None => Ok(store),
        }
    }

    /// Credentials and region come from the config, else from the standard `AWS_*` variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`).
    #[cfg(feature = "s3")]
    fn s3(s: &crate::config::StorageConfig) -> Result<Self, StorageError> {
        // A live segment is worth retrying for seconds, not for object_store's default three minutes: the
        // stream moves on, and storage should too once the store is back. (Client options first: they
        // hold allow_http, which `with_endpoint` below sets.)
        let budget = std::time::Duration::from_millis(s.retry_timeout_ms.unwrap_or(10_000));
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_client_options(
                object_store::ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(5)),
            )
            .with_retry(object_store::RetryConfig { retry_timeout: budget, ..Default::default() })
            .with_bucket_name(s.bucket.clone().unwrap_or_default())
            .with_virtual_hosted_style_request(!s.path_style.unwrap_or(true));
        if let Some(region) = &s.region {
            b = b.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            b = b.with_region("us-east-1");
        }
        if let Some(endpoint) = &s.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        } else if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            b = b.with_allow_http(true);
        }
        if let (Some(id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        // Most segments (1-2 MB) stay below a part and cost one PUT; S3 wants parts of at least 5 MiB.
        let s3 = Arc::new(b.build()?);
        let redirect = s.segment_redirect_expires_s.map(|secs| Redirect {
            signer: Arc::clone(&s3) as Arc<dyn object_store::signer::Signer>,
            prefix: None,
            expires: std::time::Duration::from_secs(secs),
        });
        Ok(Store { part_size: s.part_size.unwrap_or(S3_PART_SIZE), redirect, ..Store::new(s3, 0) })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_: &crate::config::StorageConfig) -> Result<Self, StorageError> {
        Err(StorageError::NoS3)
    }

    /// Whether an object exists (one HEAD; not found is an answer, not an error).
    pub async fn exists(&self, path: &Path) -> Result<bool, object_store::Error> {
        match object_store::ObjectStoreExt::head(self.objects.as_ref(), path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the store answers: a HEAD of a key nobody writes.
    pub async fn reachable(&self) -> Result<(), object_store::Error> {
        self.exists(&Path::from(".livechannel-readyz")).await.map(drop)
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    pub fn playlists(&self) -> &Playlists {
        &self.playlists
    }

    /// An object, or the live playlist a publish on this node holds for that name.
    pub async fn get(&self, path: &Path, options: GetOptions) -> Result<GetResult, object_store::Error> {
        if let Some(held) = self.playlists.get(path, &options) {
            return held;
        }
        self.objects.get_opts(path, options).await
    }

    /// An object's metadata, or the held live playlist's.
    pub async fn head(&self, path: &Path) -> Result<object_store::ObjectMeta, object_store::Error> {
        if let Some(meta) = self.playlists.head(path) {
            return Ok(meta);
        }
        object_store::ObjectStoreExt::head(self.objects.as_ref(), path).await
    }

    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), object_store::Error> {
        self.objects.put(path, PutPayload::from(bytes)).await.map(|_| ())
    }

    /// The live playlist a channel's publish continues: the stored one (one GET, never a listing), or a
    /// new window when there is none or it is unreadable.
    pub async fn load_playlist(&self, key: &ChannelKey, settings: &ChannelSettings) -> Result<Playlist, StorageError> {
        let playlist_path = key.object(&settings.playlist_name)?;
        match self.objects.get(&playlist_path).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                Ok(Playlist::restore(settings.frag_count, settings.frag_duration, &bytes).unwrap_or_else(|e| {
                    tracing::warn!(channel = %key, error = %e, "stored playlist unreadable; starting a new window");
                    Playlist::new(settings.frag_count, settings.frag_duration)
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Playlist::new(settings.frag_count, settings.frag_duration)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Deletes the staged files a killed server left in a local media folder: object_store writes
/// `<name>#<n>` next to the object and renames it when the write completes, so a crash mid-write leaves
/// one behind. Only files last modified before `older_than` go (this process's own uploads are newer;
/// the data-folder lock keeps other servers out). Blocking: run it on a blocking thread. Returns how many.
pub fn remove_staged_uploads(dir: &std::path::Path, older_than: std::time::SystemTime) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            let staged = name.to_str().and_then(|n| n.rsplit_once('#')).is_some_and(|(object, n)| {
                !object.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            });
            if kind.is_file() && staged && entry.metadata()?.modified()? < older_than {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_of_a_killed_server_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let channel = dir.path().join("live/demo");
        std::fs::create_dir_all(&channel).unwrap();
        for name in ["0.ts", "1.ts#3", "playlist.m3u8#12", "playlist.m3u8", "odd#name.ts", "#7"] {
            std::fs::write(channel.join(name), b"x").unwrap();
        }
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        assert_eq!(
            remove_staged_uploads(dir.path(), std::time::SystemTime::UNIX_EPOCH).unwrap(),
            0,
            "newer files stay"
        );
        assert_eq!(remove_staged_uploads(dir.path(), later).unwrap(), 2);
        let mut left: Vec<_> =
            std::fs::read_dir(&channel).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["#7", "0.ts", "odd#name.ts", "playlist.m3u8"]);
        assert_eq!(remove_staged_uploads(&dir.path().join("absent"), later).unwrap(), 0);
    }

    #[cfg(feature = "s3")]
    #[test]
    fn an_s3_storage_section_builds_an_s3_store_whose_segments_are_one_put() {
        let config = crate::config::Config::from_file(
            toml::from_str(
                "[storage]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"media\"\n\
                 access_key_id = \"k\"\nsecret_access_key = \"s\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        let store = Store::from_config(&config).unwrap();
        assert!(store.objects().to_string().contains("media"), "{}", store.objects());
        assert_eq!(store.part_size(), S3_PART_SIZE);
    }

    #[tokio::test]
    async fn a_prefix_puts_every_key_under_its_folder_and_part_size_is_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let file: crate::config::ConfigFile =
            toml::from_str("[storage]\nkind = \"local\"\nprefix = \"deploy-a/media\"\npart_size = 131072\n").unwrap();
        let mut config = crate::config::Config::from_file(file).unwrap();
        config.data_dir = dir.path().to_owned();
        let store = Store::from_config(&config).unwrap();
        assert_eq!(store.part_size(), 128 * 1024);
        let key = ChannelKey::new("live", "demo").unwrap();
        store.put(&key.object("0.ts").unwrap(), Bytes::from_static(b"ts")).await.unwrap();
        assert!(dir.path().join("media/deploy-a/media/live/demo/0.ts").exists());
        for bad in ["prefix = \"../x\"", "prefix = \"a//b\"", "part_size = 0"] {
            let file = toml::from_str(&format!("[storage]\nkind = \"local\"\n{bad}\n")).unwrap();
            assert!(crate::config::Config::from_file(file).is_err(), "{bad} accepted");
        }
        let small = toml::from_str("[storage]\nkind = \"s3\"\nbucket = \"b\"\npart_size = 1048576\n").unwrap();
        assert!(crate::config::Config::from_file(small).is_err(), "S3 parts below 5 MiB accepted");
    }
}
