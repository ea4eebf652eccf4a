//! Where segments and playlists live: an `Arc<dyn ObjectStore>` (a local folder by default, S3-compatible
//! storage with the `s3` feature), the object key layout, and the name rules that keep every key inside it.
//!
//! Layout: `<bucket>/<channel>/<seq>.ts` and `<bucket>/<channel>/<PlaylistName>`. Path components are
//! validated before they become keys, so no request or stream key can name anything outside a channel's
//! folder (`..`, `/`, `\`, control characters, `#` which the local store uses for uploads in progress).

pub mod sink;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::{ChannelSettings, Config, StorageKind};
use crate::hls::{Playlist, parse_segment_file_name};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot prepare local storage at {path}: {source}")]
    LocalDir { path: std::path::PathBuf, source: std::io::Error },
    /// object_store's `aws` feature needs `subtle >= 2.5` (through rustls) while rml_rtmp 0.8's handshake
    /// pins `crypto-mac 0.10` -> `subtle = "=2.4"`: the two cannot be in one build until one side moves.
    #[error(
        "S3 storage is not available in this build (object_store/aws conflicts with rml_rtmp's pinned crypto crates); use kind = \"local\""
    )]
    NoS3,
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Checks one path component that came from outside (stream key, URL).
pub fn validate_component(name: &str, max_len: usize) -> Result<(), StorageError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > max_len {
        Some("too long")
    } else if name == "." || name == ".." {
        Some("a relative path component")
    } else if name.chars().any(|c| c.is_control() || matches!(c, '/' | '\\' | '#' | '%' | '?' | '*')) {
        Some("contains a character that is not allowed (/ \\ # % ? * or a control character)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StorageError::InvalidName { name: name.chars().take(80).collect(), reason }),
        None => Ok(()),
    }
}

/// A channel's address: bucket and channel name, both validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    bucket: String,
    channel: String,
}

impl ChannelKey {
    /// OSS allows channel names up to 64 bytes without '/'.
    pub fn new(bucket: &str, channel: &str) -> Result<Self, StorageError> {
        validate_component(bucket, 63)?;
        validate_component(channel, 64)?;
        Ok(ChannelKey { bucket: bucket.to_owned(), channel: channel.to_owned() })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn prefix(&self) -> Path {
        Path::from_iter([self.bucket.as_str(), self.channel.as_str()])
    }

    /// The key of a file in this channel's folder; the file name is validated too.
    pub fn object(&self, file: &str) -> Result<Path, StorageError> {
        validate_component(file, 128)?;
        Ok(Path::from_iter([self.bucket.as_str(), self.channel.as_str(), file]))
    }
}

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.channel)
    }
}

/// The object store plus how we write to it.
#[derive(Clone, Debug)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Multipart part size: S3 needs >= 5 MiB per part; the local store takes any size, so small parts
    /// keep a segment streaming to disk instead of sitting in memory.
    part_size: usize,
}

impl Store {
    pub fn new(objects: Arc<dyn ObjectStore>, part_size: usize) -> Self {
        Store { objects, part_size }
    }

    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::LocalDir { path: dir.to_owned(), source })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Store::new(Arc::new(fs), 64 * 1024))
    }

    pub fn from_config(config: &Config) -> Result<Self, StorageError> {
        match &config.storage {
            None => Store::local(&config.data_dir.join("media")),
            Some(s) if s.kind == StorageKind::Local => Store::local(&config.data_dir.join("media")),
            Some(s) => Self::s3(s),
        }
    }

    #[cfg(feature = "s3")]
    fn s3(s: &crate::config::StorageConfig) -> Result<Self, StorageError> {
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(s.bucket.clone().unwrap_or_default())
            .with_region(s.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_virtual_hosted_style_request(!s.path_style.unwrap_or(true));
        if let Some(endpoint) = &s.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        // S3 multipart parts must be at least 5 MiB (but the last); most segments are one part.
        Ok(Store::new(Arc::new(b.build()?), 5 * 1024 * 1024))
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_: &crate::config::StorageConfig) -> Result<Self, StorageError> {
        Err(StorageError::NoS3)
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    pub async fn get(&self, path: &Path, options: GetOptions) -> Result<GetResult, object_store::Error> {
        self.objects.get_opts(path, options).await
    }

    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), object_store::Error> {
        self.objects.put(path, PutPayload::from(bytes)).await.map(|_| ())
    }

    /// The highest segment sequence number stored for a channel, from a listing of its folder. This is what
    /// makes sequence numbers continue across restarts even when the playlist is missing or stale.
    pub async fn last_segment_seq(&self, key: &ChannelKey) -> Result<Option<u64>, object_store::Error> {
        let prefix = key.prefix();
        let mut listing = self.objects.list(Some(&prefix));
        let mut last = None;
        while let Some(meta) = listing.try_next().await? {
            if let Some(seq) = meta.location.filename().and_then(parse_segment_file_name) {
                last = last.max(Some(seq));
            }
        }
        Ok(last)
    }

    /// What a channel's first publish in this process continues from: the stored playlist's window and the
    /// next free sequence number.
    pub async fn load_channel(
        &self,
        key: &ChannelKey,
        settings: &ChannelSettings,
    ) -> Result<sink::ChannelState, StorageError> {
        let playlist_path = key.object(&settings.playlist_name)?;
        let playlist = match self.objects.get(&playlist_path).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                match Playlist::restore(settings.frag_count, settings.frag_duration, &bytes) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(channel = %key, error = %e, "stored playlist unreadable; starting a new window");
                        Playlist::new(settings.frag_count, settings.frag_duration)
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => Playlist::new(settings.frag_count, settings.frag_duration),
            Err(e) => return Err(e.into()),
        };
        let stored = self.last_segment_seq(key).await?;
        let next_seq = stored.max(playlist.last_seq()).map_or(0, |s| s + 1);
        Ok(sink::ChannelState { playlist, next_seq, playlist_name: settings.playlist_name.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_channel_folder_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "x#1", "a%2e", "new\nline", "q?x"] {
            assert!(ChannelKey::new("live", bad).is_err(), "{bad:?} accepted");
        }
        assert!(ChannelKey::new("live", &"x".repeat(65)).is_err());
        let key = ChannelKey::new("live", "demo-1_ü").unwrap();
        assert!(key.object("../x.ts").is_err());
        // object_store percent-encodes non-ASCII in keys; reads and writes both go through `object`.
        assert_eq!(key.object("7.ts").unwrap().as_ref(), "live/demo-1_%C3%BC/7.ts");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn an_s3_storage_section_builds_an_s3_store_with_multipart_parts_s3_accepts() {
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
        assert_eq!(store.part_size(), 5 * 1024 * 1024);
    }
}
