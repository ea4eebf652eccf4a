//! Where segments and playlists live: an `Arc<dyn ObjectStore>` (a local folder by default, S3-compatible
//! storage with the `s3` feature), the object key layout, and the name rules that keep every key inside it.
//!
//! Layout: `<bucket>/<channel>/<seq>.ts` and `<bucket>/<channel>/<PlaylistName>`. Path components are
//! validated before they become keys, so no request or stream key can name anything outside a channel's
//! folder (`..`, `/`, `\`, control characters, `#` which the local store uses for uploads in progress).

pub mod sink;

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::{ChannelSettings, Config, StorageKind};
use crate::hls::Playlist;
use crate::names::{ChannelKey, NameError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
