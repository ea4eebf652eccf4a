//! The live playlists of the publishes this node records, held in memory as their storage writers last
//! wrote them, and served from there: a player sees a new segment as soon as it is stored, without
//! waiting for the playlist's own write (on ext4, renaming a new playlist over the old one can wait
//! hundreds of milliseconds for the journal). The stored copy is still written every time, for other
//! nodes, listings and restarts; once a publish's writer ends, reads go back to it.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectMeta};

#[derive(Debug, Default)]
pub struct Playlists {
    held: RwLock<HashMap<Path, Held>>,
    next: AtomicU64,
}

#[derive(Debug, Clone)]
struct Held {
    owner: Owner,
    bytes: Bytes,
    meta: ObjectMeta,
}

/// Who holds a playlist: a publish's writer. A new publish of the channel replaces the entry, and the
/// old writer's release then leaves it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(u64);

impl Playlists {
    pub fn owner(&self) -> Owner {
        Owner(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// `bytes` is now the playlist at `location`.
    pub fn hold(&self, owner: Owner, location: &Path, bytes: Bytes) {
        let version = self.next.fetch_add(1, Ordering::Relaxed);
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: chrono::Utc::now(),
            size: bytes.len() as u64,
            e_tag: Some(format!("live-{version:x}-{:x}", bytes.len())),
            version: None,
        };
        let mut held = self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.insert(location.clone(), Held { owner, bytes, meta });
    }

    /// Reads of `location` go to the store again, unless another publish holds it now.
    pub fn release(&self, owner: Owner, location: &Path) {
        let mut held = self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.get(location).is_some_and(|h| h.owner == owner) {
            held.remove(location);
        }
    }

    fn find(&self, location: &Path) -> Option<Held> {
        let held = self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.get(location).cloned()
    }

    pub fn head(&self, location: &Path) -> Option<ObjectMeta> {
        self.find(location).map(|h| h.meta)
    }

    /// A held playlist as the store would return it: preconditions checked, the range applied.
    pub fn get(&self, location: &Path, options: &GetOptions) -> Option<object_store::Result<GetResult>> {
        let held = self.find(location)?;
        Some(answer(held, options))
    }
}

fn answer(held: Held, options: &GetOptions) -> object_store::Result<GetResult> {
    options.check_preconditions(&held.meta)?;
    let range = match &options.range {
        Some(r) => r
            .as_range(held.meta.size)
            .map_err(|e| object_store::Error::Generic { store: "live playlists", source: Box::new(e) })?,
        None => 0..held.meta.size,
    };
    let data = if options.head { Bytes::new() } else { held.bytes.slice(range.start as usize..range.end as usize) };
    let stream = futures::stream::once(std::future::ready(Ok(data)));
    Ok(GetResult {
        payload: GetResultPayload::Stream(stream.boxed()),
        meta: held.meta,
        range,
        attributes: Default::default(),
        extensions: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(result: GetResult) -> Bytes {
        result.bytes().await.unwrap()
    }

    #[tokio::test]
    async fn a_held_playlist_is_served_whole_by_range_and_by_head_until_its_owner_releases_it() {
        let playlists = Playlists::default();
        let path = Path::from("live/demo/playlist.m3u8");
        assert!(playlists.get(&path, &GetOptions::default()).is_none());
        let first = playlists.owner();
        playlists.hold(first, &path, Bytes::from_static(b"#EXTM3U\n#one\n"));
        let whole = playlists.get(&path, &GetOptions::default()).unwrap().unwrap();
        assert_eq!(whole.range, 0..13);
        assert_eq!(body(whole).await, &b"#EXTM3U\n#one\n"[..]);
        let ranged = GetOptions { range: Some((1..4).into()), ..Default::default() };
        assert_eq!(body(playlists.get(&path, &ranged).unwrap().unwrap()).await, &b"EXT"[..]);
        let past = GetOptions { range: Some((20..30).into()), ..Default::default() };
        assert!(playlists.get(&path, &past).unwrap().is_err());
        let head = playlists.head(&path).unwrap();
        assert_eq!(head.size, 13);

        // A new version gets a new ETag, and a request that names the old one fails its precondition.
        let old_tag = head.e_tag.unwrap();
        playlists.hold(first, &path, Bytes::from_static(b"#EXTM3U\n#two\n"));
        assert_ne!(playlists.head(&path).unwrap().e_tag.unwrap(), old_tag);
        let if_old = GetOptions { if_match: Some(old_tag), ..Default::default() };
        assert!(playlists.get(&path, &if_old).unwrap().is_err(), "If-Match of the old version fails");

        // A second publish of the channel took it over: the first one's release leaves it held.
        let second = playlists.owner();
        playlists.hold(second, &path, Bytes::from_static(b"#EXTM3U\n#three\n"));
        playlists.release(first, &path);
        assert_eq!(playlists.head(&path).unwrap().size, 15);
        playlists.release(second, &path);
        assert!(playlists.head(&path).is_none());
    }
}
