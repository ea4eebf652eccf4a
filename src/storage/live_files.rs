//! The local backend's writer for live media: segment bytes go from the storage writer (`sink`) straight
//! into the open segment's file, on a few dedicated writer threads, instead of through object_store's
//! `BufWriter` (64 KiB held per channel, and one tokio blocking-pool hop per part, per rename and per
//! playlist put).
//!
//! Files are laid out exactly as object_store's `LocalFileSystem` lays them out (its own
//! `path_to_filesystem`), so reads, listings and deletes stay on the `ObjectStore` seam. A segment is
//! written to `<object>#<n>` and renamed to `<object>` when complete, as object_store does; a killed server
//! leaves only `#<n>` files, which `remove_staged_uploads` clears at the next start.
//!
//! A write is queued, not awaited, and does not wake its writer thread: each thread drains its queue every
//! few milliseconds, and only a new file, a completion or an abort wakes it (one wake per segment, not
//! one per piece). The storage writer waits only when a file has more than
//! [`WRITE_AHEAD`] bytes queued (a disk slower than the stream), which backs up its queue as a slow store
//! does. Completion and playlist puts are answered, so the storage writer still learns each outcome in order.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::thread::Thread;
use std::time::Duration;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use tokio::sync::{Semaphore, oneshot};
use tracing::warn;

/// Bytes one file may have queued for its writer thread before the storage writer waits.
pub const WRITE_AHEAD: usize = 1 << 20;
/// Writer threads. Two, so that one write stalled in the kernel (writeback throttling) does not hold every
/// channel; each file stays on one thread, which keeps its writes in order.
const LANES: usize = 2;
/// How long a writer thread with files open sleeps between drains of its queue. Writes do not wake it
/// (waking it per write was a futex wake and a context switch per 8 KiB piece, thousands a second at 200
/// streams); new files, completions and aborts do, so a finished segment is renamed at once. At 2.8 Mbit/s
/// a stream has about 2 KiB waiting at the end of a tick.
const TICK: Duration = Duration::from_millis(5);
/// The sleep of a writer thread with no file open; anything queued then wakes it.
const IDLE: Duration = Duration::from_secs(1);

enum Command {
    Open { id: u64, path: PathBuf },
    Write { id: u64, data: Bytes, queued: Arc<Queued> },
    Finish { id: u64, done: oneshot::Sender<Result<u64, String>> },
    Abort { id: u64 },
    Put { path: PathBuf, data: Bytes, done: oneshot::Sender<Result<(), String>> },
}

/// How many bytes of one file wait for its writer thread: permits are the room left.
struct Queued {
    room: Semaphore,
}

/// The writer threads of one local media folder.
#[derive(Clone)]
pub struct LiveFiles {
    fs: Arc<LocalFileSystem>,
    lanes: Arc<[Lane]>,
    /// Playlist puts have a thread of their own: replacing a file by rename was the one operation that
    /// waited tens to hundreds of ms on ext4 (for the new file's blocks, `auto_da_alloc`), and segments
    /// must not wait behind it.
    playlists: mpsc::Sender<Command>,
    next: Arc<AtomicU64>,
}

/// The queue of one writer thread, and the thread, to wake it for what should not wait for its tick.
#[derive(Clone)]
struct Lane {
    queue: mpsc::Sender<Command>,
    thread: Thread,
}

impl Lane {
    fn send(&self, command: Command) -> Result<(), String> {
        let wake = !matches!(command, Command::Write { .. });
        self.queue.send(command).map_err(|_| STOPPED.to_owned())?;
        if wake {
            self.thread.unpark();
        }
        Ok(())
    }
}

impl std::fmt::Debug for LiveFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveFiles({}, {} writer threads)", self.fs, self.lanes.len())
    }
}

impl LiveFiles {
    /// Starts the writer threads for the folder `fs` is rooted at. They end when the last clone is dropped.
    pub fn start(fs: Arc<LocalFileSystem>) -> std::io::Result<Self> {
        let thread = |name: String, batched: bool| {
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new().name(name).spawn(move || run(rx, batched))?.thread().clone();
            Ok::<_, std::io::Error>(Lane { queue: tx, thread })
        };
        let lanes =
            (0..LANES).map(|lane| thread(format!("livechannel-files-{lane}"), true)).collect::<Result<_, _>>()?;
        // Every playlist put is waited for: that thread blocks on its queue instead of ticking.
        let playlists = thread("livechannel-playlists".to_owned(), false)?.queue;
        Ok(LiveFiles { fs, lanes, playlists, next: Arc::default() })
    }

    fn lane(&self, id: u64) -> &Lane {
        &self.lanes[(id % self.lanes.len() as u64) as usize]
    }

    /// Opens the staged file of a new object at `location` (created on the first write to it).
    pub fn create(&self, location: &Path) -> Result<LiveFile, String> {
        let path = self.fs.path_to_filesystem(location).map_err(|e| e.to_string())?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let lane = self.lane(id).clone();
        lane.send(Command::Open { id, path })?;
        let queued = Arc::new(Queued { room: Semaphore::new(WRITE_AHEAD) });
        Ok(LiveFile { id, lane, queued, open: true })
    }

    /// Writes a whole object (a playlist), replacing the old one atomically (see [`replace`]).
    pub async fn put(&self, location: &Path, data: Bytes) -> Result<(), String> {
        let path = self.fs.path_to_filesystem(location).map_err(|e| e.to_string())?;
        let (done, answer) = oneshot::channel();
        self.playlists.send(Command::Put { path, data, done }).map_err(|_| STOPPED.to_owned())?;
        answer.await.map_err(|_| STOPPED.to_owned())?
    }
}

/// What a write holds of its file's [`WRITE_AHEAD`]: its size, within the bound (a bigger one waits until
/// the file's queue is empty).
fn charge(data: &Bytes) -> u32 {
    data.len().clamp(1, WRITE_AHEAD) as u32
}

const STOPPED: &str = "the local writer thread stopped";

/// One object being written. Dropped without `finish`, its staged file is removed.
pub struct LiveFile {
    id: u64,
    lane: Lane,
    queued: Arc<Queued>,
    open: bool,
}

impl LiveFile {
    /// Queues `data`; waits only while the file has [`WRITE_AHEAD`] bytes queued already. A write that
    /// fails is reported by `finish`.
    pub async fn write(&mut self, data: Bytes) -> Result<(), String> {
        self.queued.room.acquire_many(charge(&data)).await.map_err(|_| STOPPED.to_owned())?.forget();
        let queued = Arc::clone(&self.queued);
        self.lane.send(Command::Write { id: self.id, data, queued })
    }

    /// Bytes handed to `write` that are not in the file yet.
    pub fn queued(&self) -> usize {
        WRITE_AHEAD - self.queued.room.available_permits().min(WRITE_AHEAD)
    }

    /// Renames the staged file to the object once every queued byte is written; the object's size, or
    /// the first error of any write.
    pub async fn finish(mut self) -> Result<u64, String> {
        self.open = false;
        let (done, answer) = oneshot::channel();
        self.lane.send(Command::Finish { id: self.id, done })?;
        answer.await.map_err(|_| STOPPED.to_owned())?
    }
}

impl Drop for LiveFile {
    fn drop(&mut self) {
        if self.open {
            let _ = self.lane.send(Command::Abort { id: self.id });
        }
    }
}

/// A file on a writer thread: created at its first write, so an upload that is abandoned before any byte
/// leaves nothing behind.
struct Staged {
    dest: PathBuf,
    file: Option<(File, PathBuf)>,
    written: u64,
    error: Option<String>,
}

impl Staged {
    fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let result = match &mut self.file {
            Some((file, _)) => file.write_all(data),
            None => new_staged(&self.dest).and_then(|(mut file, path)| {
                let r = file.write_all(data);
                self.file = Some((file, path));
                r
            }),
        };
        match result {
            Ok(()) => self.written += data.len() as u64,
            Err(e) => self.fail(format!("cannot write {}: {e}", self.dest.display())),
        }
    }

    fn fail(&mut self, error: String) {
        if let Some((_, staged)) = self.file.take() {
            let _ = std::fs::remove_file(staged);
        }
        self.error = Some(error);
    }

    fn finish(mut self) -> Result<u64, String> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.file.is_none() {
            // An empty object still exists once complete.
            self.write(&[]);
            if self.file.is_none() {
                return Err(self.error.unwrap_or_else(|| format!("cannot create {}", self.dest.display())));
            }
        }
        let Some((file, staged)) = self.file.take() else { unreachable!("created above") };
        drop(file);
        match std::fs::rename(&staged, &self.dest) {
            Ok(()) => Ok(self.written),
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                Err(format!("cannot rename {} to {}: {e}", staged.display(), self.dest.display()))
            }
        }
    }

    fn abort(mut self) {
        if let Some((_, staged)) = self.file.take() {
            let _ = std::fs::remove_file(staged);
        }
    }
}

/// Creates the folders `dest` goes in; false when they were there already (a NotFound was not theirs).
fn make_parent(dest: &FsPath) -> std::io::Result<bool> {
    match dest.parent() {
        Some(parent) if !parent.exists() => std::fs::create_dir_all(parent).map(|()| true),
        _ => Ok(false),
    }
}

/// `<dest>#<n>` for the first free n, its folders created as needed (object_store's layout).
fn new_staged(dest: &FsPath) -> std::io::Result<(File, PathBuf)> {
    let mut n = 1u32;
    loop {
        let mut staged = dest.as_os_str().to_owned();
        staged.push(format!("#{n}"));
        let staged = PathBuf::from(staged);
        match OpenOptions::new().write(true).create_new(true).open(&staged) {
            Ok(file) => return Ok((file, staged)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound && make_parent(dest)? => {}
            Err(e) => return Err(e),
        }
    }
}

/// Replaces the object at `dest` with `data`, atomically for readers, without creating or deleting an
/// inode once the spare exists. The text goes into the spare `<dest>#0` (a staged name: listings skip it and
/// the start-up clean-up removes it), and the spare and `dest` swap names (`RENAME_EXCHANGE`), so the spare
/// holds the old text until the next put. Why not stage and rename over `dest`: that deletes the old inode,
/// one per segment for every live playlist, and ext4 without a journal then skips every inode deleted in
/// the last minutes (`recently_deleted`) each time it allocates one, so every new segment file paid a scan
/// over them (that scan was 15-18 % of the server's CPU in the profiles at 200 streams, BENCHMARKS.md).
/// Where the swap is not supported (no `dest` yet, or a filesystem without it) the spare is renamed over.
fn replace(dest: &FsPath, data: &[u8]) -> Result<(), String> {
    let mut spare = dest.as_os_str().to_owned();
    spare.push("#0");
    let spare = PathBuf::from(spare);
    let open = || OpenOptions::new().write(true).create(true).truncate(true).open(&spare);
    let written = match open() {
        Err(e) if e.kind() == ErrorKind::NotFound => match make_parent(dest) {
            Ok(true) => open(),
            Ok(false) => Err(e),
            Err(mkdir) => Err(mkdir),
        },
        other => other,
    }
    .and_then(|mut file| file.write_all(data));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&spare);
        return Err(format!("cannot write {}: {e}", spare.display()));
    }
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, &spare, CWD, dest, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::rename(&spare, dest).map_err(|e| {
            let _ = std::fs::remove_file(&spare);
            format!("cannot rename {} to {}: {e}", spare.display(), dest.display())
        }),
    }
}

/// A writer thread. `batched`: drain the queue, then sleep a [`TICK`] (writes do not wake it); otherwise
/// block on the queue.
fn run(rx: mpsc::Receiver<Command>, batched: bool) {
    let mut files: HashMap<u64, Staged> = HashMap::new();
    loop {
        if !batched {
            match rx.recv() {
                Ok(command) => apply(&mut files, command),
                Err(_) => break,
            }
            continue;
        }
        match rx.try_recv() {
            Ok(command) => apply(&mut files, command),
            // A wake sent after the queue was found empty is kept by the thread's token: nothing waits a tick.
            Err(TryRecvError::Empty) => std::thread::park_timeout(if files.is_empty() { IDLE } else { TICK }),
            Err(TryRecvError::Disconnected) => break,
        }
    }
    for (_, staged) in files.drain() {
        staged.abort();
    }
}

fn apply(files: &mut HashMap<u64, Staged>, command: Command) {
    match command {
        Command::Open { id, path } => {
            files.insert(id, Staged { dest: path, file: None, written: 0, error: None });
        }
        Command::Write { id, data, queued } => {
            if let Some(staged) = files.get_mut(&id) {
                staged.write(&data);
            }
            queued.room.add_permits(charge(&data) as usize);
        }
        Command::Finish { id, done } => {
            let result = files.remove(&id).map_or_else(|| Err("no such upload".to_owned()), Staged::finish);
            if let Err(e) = &result {
                warn!(error = %e, "segment file not completed");
            }
            let _ = done.send(result);
        }
        Command::Abort { id } => {
            if let Some(staged) = files.remove(&id) {
                staged.abort();
            }
        }
        Command::Put { path, data, done } => {
            let _ = done.send(replace(&path, &data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &FsPath) -> LiveFiles {
        LiveFiles::start(Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())).unwrap()
    }

    fn names(dir: &FsPath) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_file_is_staged_while_written_and_appears_whole_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let live = files(dir.path());
        let mut file = live.create(&Path::from("live/demo/7.ts")).unwrap();
        file.write(Bytes::from_static(b"first ")).await.unwrap();
        file.write(Bytes::from_static(b"second")).await.unwrap();
        let folder = dir.path().join("live/demo");
        // The writes are queued; once written they are in the staged file only.
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while file.queued() > 0 || names(&folder) != ["7.ts#1"] {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writes land in 7.ts#1");
        assert_eq!(file.finish().await.unwrap(), 12);
        assert_eq!(names(&folder), ["7.ts"]);
        assert_eq!(std::fs::read(folder.join("7.ts")).unwrap(), b"first second");
    }

    #[tokio::test]
    async fn a_file_dropped_before_it_is_finished_leaves_nothing_and_a_put_replaces_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let live = files(dir.path());
        let mut file = live.create(&Path::from("live/demo/1.ts")).unwrap();
        file.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(file);
        live.put(&Path::from("live/demo/playlist.m3u8"), Bytes::from_static(b"one")).await.unwrap();
        live.put(&Path::from("live/demo/playlist.m3u8"), Bytes::from_static(b"two")).await.unwrap();
        // The abort and the puts may be on different writer threads: wait until both are done.
        let empty = live.create(&Path::from("live/demo/2.ts")).unwrap();
        assert_eq!(empty.finish().await.unwrap(), 0, "an empty object still exists once complete");
        let folder = dir.path().join("live/demo");
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while names(&folder) != ["2.ts", "playlist.m3u8", "playlist.m3u8#0"] {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("left: {:?}", names(&folder)));
        assert_eq!(std::fs::read(folder.join("playlist.m3u8")).unwrap(), b"two");
    }

    #[tokio::test]
    async fn replacing_a_playlist_swaps_two_inodes_and_creates_or_deletes_none() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let live = files(dir.path());
        let location = Path::from("live/demo/playlist.m3u8");
        let folder = dir.path().join("live/demo");
        let inodes = || {
            let mut inodes: Vec<u64> = ["playlist.m3u8", "playlist.m3u8#0"]
                .iter()
                .map(|name| std::fs::metadata(folder.join(name)).unwrap().ino())
                .collect();
            inodes.sort();
            inodes
        };
        live.put(&location, Bytes::from_static(b"first")).await.unwrap();
        assert_eq!(names(&folder), ["playlist.m3u8"], "the first put renames its spare into place");
        live.put(&location, Bytes::from_static(b"second, longer")).await.unwrap();
        let pair = inodes();
        for text in ["third", "fourth and last"] {
            live.put(&location, Bytes::from(text)).await.unwrap();
            assert_eq!(std::fs::read(folder.join("playlist.m3u8")).unwrap(), text.as_bytes());
            assert_eq!(inodes(), pair, "the same two files, swapped");
        }
        // The spare is a staged name: listings skip it and the start-up clean-up removes it.
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(object_store::ObjectStore::list(&fs, None))
            .await
            .unwrap()
            .into_iter()
            .map(|meta| meta.location.to_string())
            .collect();
        assert_eq!(listed, ["live/demo/playlist.m3u8"]);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(crate::storage::remove_staged_uploads(dir.path(), later).unwrap(), 1);
        assert_eq!(names(&folder), ["playlist.m3u8"]);
    }

    #[tokio::test]
    async fn a_write_that_fails_is_reported_when_the_file_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let live = files(dir.path());
        // A folder where the segment's folder should be: the file cannot be created.
        std::fs::write(dir.path().join("live"), b"not a folder").unwrap();
        let mut file = live.create(&Path::from("live/demo/3.ts")).unwrap();
        file.write(Bytes::from_static(b"ts")).await.unwrap();
        let e = file.finish().await.unwrap_err();
        assert!(e.contains("live/demo/3.ts"), "{e}");
        assert!(live.put(&Path::from("live/demo/playlist.m3u8"), Bytes::new()).await.is_err());
    }

    #[tokio::test]
    async fn a_file_whose_writes_are_not_done_makes_its_writer_wait_at_the_write_ahead_bound() {
        let dir = tempfile::tempdir().unwrap();
        let live = files(dir.path());
        let mut file = live.create(&Path::from("live/demo/4.ts")).unwrap();
        // Every permit taken and none given back yet: the next write waits for room.
        let queued = Arc::clone(&file.queued);
        let held = queued.room.acquire_many(WRITE_AHEAD as u32).await.unwrap();
        assert_eq!(file.queued(), WRITE_AHEAD);
        let mut write = Box::pin(file.write(Bytes::from_static(b"x")));
        assert!(futures::poll!(&mut write).is_pending());
        drop(held);
        write.await.unwrap();
        assert_eq!(file.finish().await.unwrap(), 1);
    }
}
