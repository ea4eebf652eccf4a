//! RTMP ingest: the only module that imports rml_rtmp. Accept loop, one task per connection, publish
//! policy, and the hand-off of FLV tag bodies to `ingest` and of its output to the storage queue.
//!
//! Per connection: handshake -> `ServerSession` -> connect (app `live` or `<bucket>/live`) -> publish
//! (stream key = channel name; a query string after it is parameters, not part of the name). Everything
//! that ends a publish — deleteStream, TCP EOF or error, an unsupported codec, a kick from the API,
//! shutdown — goes through one `finish` that flushes the open segment.

pub mod client;
mod status;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::auth::{Keys, percent_decode};
use crate::channels::{AudioStats, Channels, LiveGuard, LiveStats, VideoStats};
use crate::config::{Acl, Bucket, Config};
use crate::hls::{Output, SegmenterConfig};
use crate::ingest::{Ingest, IngestError};
use crate::meta::{ChannelStatus, Meta};
use crate::notify::{Notifier, PublishEvent};
use crate::storage::sink::{Sink, SinkCallbacks, SinkCounters, Stored};
use crate::storage::{ChannelKey, Store};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed (publishers send media continuously).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const READ_BUFFER: usize = 64 * 1024;

thread_local! {
    static READ_SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; READ_BUFFER]);
}
const LINGER: Duration = Duration::from_secs(2);
const STATS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("RTMP session: {0}")]
    Session(String),
}

/// What every connection task shares.
pub struct Context {
    pub config: Arc<Config>,
    pub channels: Arc<Channels>,
    pub store: Store,
    pub meta: Meta,
    pub keys: Keys,
    pub notifier: Notifier,
    /// `http://host:port` of the HTTP listener (download URLs in recording callbacks).
    pub base_url: String,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub connection_slots: Arc<Semaphore>,
    /// Observers of stored segments (tests, stats); None in production.
    pub on_stored: Option<mpsc::UnboundedSender<Stored>>,
}

pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ctx.shutdown.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        accept(stream, remote, Arc::clone(&ctx));
    }
}

/// Takes over an accepted connection (from our listener, or sniffed on the HTTP port) within the limit.
pub fn accept(stream: TcpStream, remote: SocketAddr, ctx: Arc<Context>) {
    let Ok(permit) = Arc::clone(&ctx.connection_slots).try_acquire_owned() else {
        warn!(%remote, limit = ctx.config.limits.max_rtmp_connections, "RTMP connection refused: connection limit reached");
        return;
    };
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        let _permit = permit;
        match Connection::new(remote, ctx).run(stream).await {
            Ok(()) => debug!(%remote, "RTMP connection closed"),
            Err(e) => info!(%remote, error = %e, "RTMP connection ended"),
        }
    });
}

enum State {
    Handshaken,
    Connected { bucket: Bucket },
    Publishing(Box<Publish>),
}

struct Publish {
    guard: LiveGuard,
    ingest: Ingest,
    tx: mpsc::Sender<Output>,
    outputs: Vec<Output>,
    /// Index of a segment whose bytes could not be queued: the rest of it is dropped, not half-stored.
    lost_index: Option<u64>,
    dropped_segments: u64,
    started: SystemTime,
    /// The push-history record of this publish (closed when it ends).
    push_id: Option<i64>,
    /// What the publish callbacks say about this session (the stop event repeats the start's fields).
    event: PublishEvent,
    /// When the stats GetLiveChannelStat reads were last refreshed, and the byte counts then.
    stats_at: std::time::Instant,
    stats_bytes: (u64, u64),
    /// Which codec configurations the published stats already show.
    stats_configs: (bool, bool),
}

struct Connection {
    remote: SocketAddr,
    ctx: Arc<Context>,
    state: State,
    /// Set when the connection must close after flushing what is queued (rejections, fatal stream errors).
    closing: bool,
    out: Vec<u8>,
}

impl Connection {
    fn new(remote: SocketAddr, ctx: Arc<Context>) -> Self {
        Connection { remote, ctx, state: State::Handshaken, closing: false, out: Vec::with_capacity(8 * 1024) }
    }

    async fn run(mut self, mut stream: TcpStream) -> Result<(), ConnError> {
        let _ = stream.set_nodelay(true);
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream))
            .await
            .map_err(|_| ConnError::HandshakeTimeout)??;
        let (mut session, initial) =
            ServerSession::new(ServerSessionConfig::new()).map_err(|e| ConnError::Session(e.to_string()))?;
        let mut queue: VecDeque<ServerSessionResult> = initial.into();
        queue.extend(session.handle_input(&leftover).map_err(|e| ConnError::Session(e.to_string()))?);
        let result = self.drive(&mut stream, &mut session, &mut queue).await;
        self.finish_publish("connection closed").await;
        result
    }

    async fn drive(
        &mut self,
        stream: &mut TcpStream,
        session: &mut ServerSession,
        queue: &mut VecDeque<ServerSessionResult>,
    ) -> Result<(), ConnError> {
        loop {
            while let Some(result) = queue.pop_front() {
                match result {
                    ServerSessionResult::OutboundResponse(packet) => self.out.extend_from_slice(&packet.bytes),
                    ServerSessionResult::RaisedEvent(event) => self.on_event(event, session, queue).await,
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            if !self.out.is_empty() {
                stream.write_all(&self.out).await?;
                self.out.clear();
            }
            if self.closing {
                linger(stream).await;
                return Ok(());
            }
            let kick = match &self.state {
                State::Publishing(p) => p.guard.kick.clone(),
                _ => CancellationToken::new(),
            };
            tokio::select! {
                r = tokio::time::timeout(IDLE_TIMEOUT, stream.readable()) => r.map_err(|_| ConnError::Idle(IDLE_TIMEOUT))??,
                _ = self.ctx.shutdown.cancelled() => {
                    self.finish_publish("server shutting down").await;
                    return Ok(());
                }
                _ = kick.cancelled() => {
                    self.finish_publish("publish ended by the server (channel disabled or deleted)").await;
                    return Ok(());
                }
            }
            // Readiness first, then a read into this thread's scratch buffer: rml_rtmp copies what it
            // needs, so no connection has to own a read buffer while it waits (64 KiB per publisher).
            let read = READ_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match stream.try_read(&mut scratch[..]) {
                    Ok(0) => Ok(None),
                    Ok(n) => {
                        session.handle_input(&scratch[..n]).map(Some).map_err(|e| ConnError::Session(e.to_string()))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Some(Vec::new())),
                    Err(e) => Err(ConnError::Io(e)),
                }
            })?;
            match read {
                None => return Ok(()),
                Some(results) => queue.extend(results),
            }
        }
    }

    async fn on_event(
        &mut self,
        event: ServerSessionEvent,
        session: &mut ServerSession,
        queue: &mut VecDeque<ServerSessionResult>,
    ) {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => match self.bucket_for_app(&app_name) {
                Ok(bucket) => {
                    self.state = State::Connected { bucket };
                    self.respond(session.accept_request(request_id), queue);
                }
                Err(why) => {
                    warn!(remote = %self.remote, app = %app_name, "RTMP connect refused: {why}");
                    self.respond(session.reject_request(request_id, "NetConnection.Connect.Rejected", &why), queue);
                    self.closing = true;
                }
            },
            ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                match self.start_publish(&stream_key).await {
                    Ok(publish) => {
                        info!(remote = %self.remote, channel = %publish.guard.key(), "publish started");
                        self.state = State::Publishing(Box::new(publish));
                        self.respond(session.accept_request(request_id), queue);
                    }
                    Err((code, why)) => {
                        warn!(remote = %self.remote, stream_key = %redact(&stream_key), "publish refused: {why}");
                        self.respond(session.reject_request(request_id, code, &why), queue);
                        self.closing = true;
                    }
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, stream_key, .. } => {
                info!(remote = %self.remote, stream_key = %redact(&stream_key), "RTMP play refused: this server serves HLS");
                let why = "RTMP playback is not offered; play the channel over HLS";
                self.respond(session.reject_request(request_id, "NetStream.Play.Failed", why), queue);
                self.closing = true;
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.on_media(true, data, timestamp.value).await
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.on_media(false, data, timestamp.value).await
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.finish_publish("publisher sent deleteStream").await
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                debug!(remote = %self.remote, ?metadata, "stream metadata");
            }
            other => debug!(remote = %self.remote, event = ?other, "RTMP event ignored"),
        }
    }

    fn respond(
        &mut self,
        result: Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>,
        queue: &mut VecDeque<ServerSessionResult>,
    ) {
        match result {
            Ok(results) => queue.extend(results),
            Err(e) => {
                warn!(remote = %self.remote, error = %e, "RTMP session refused a response");
                self.closing = true;
            }
        }
    }

    /// `live` -> the default bucket; `<bucket>/live` -> that bucket (the form oss2's sign_rtmp_url builds).
    fn bucket_for_app(&self, app: &str) -> Result<Bucket, String> {
        let config = &self.ctx.config;
        let app = app.trim_end_matches('/');
        match app.split_once('/') {
            None if app == "live" => Ok(config.default_bucket().clone()),
            Some((bucket, "live")) => {
                config.bucket(bucket).cloned().ok_or_else(|| format!("no bucket named {bucket:?}"))
            }
            _ => Err(format!("unknown application {app:?}: publish to rtmp://HOST/live/<channel>")),
        }
    }

    /// The publish policy: name, signature (required unless the bucket is public-read-write), channel exists
    /// (or the bucket auto-creates it) and is enabled, nobody else is live on it.
    async fn start_publish(&mut self, stream_key: &str) -> Result<Publish, (&'static str, String)> {
        let State::Connected { bucket } = &self.state else {
            return Err((
                "NetStream.Publish.BadConnection",
                "publish before connect, or a second publish on one connection".into(),
            ));
        };
        let bucket = bucket.clone();
        let (name, raw_params) = parse_stream_key(stream_key);
        let params: Vec<(String, String)> = raw_params
            .iter()
            .map(|(k, v)| Some((percent_decode(k)?, percent_decode(v)?)))
            .collect::<Option<_>>()
            .ok_or(("NetStream.Publish.BadName", "the stream key's query is not valid percent-encoding".to_owned()))?;
        let key = ChannelKey::new(&bucket.name, name).map_err(|e| ("NetStream.Publish.BadName", e.to_string()))?;
        let rejected = "NetStream.Publish.Rejected";
        let signed = crate::auth::oss::verify_rtmp(&bucket.name, name, &params, &self.ctx.keys, SystemTime::now())
            .map_err(|e| (rejected, format!("AccessDenied: {e}")))?;
        if signed.is_none() && bucket.acl != Acl::PublicReadWrite {
            return Err((
                rejected,
                format!("AccessDenied: bucket {} is not public-read-write; publish with a signed URL", bucket.name),
            ));
        }
        let meta = &self.ctx.meta;
        let record = match meta.get_channel(&bucket.name, name).await {
            Ok(Some(record)) => record,
            Ok(None) if bucket.auto_create_channels => meta
                .get_or_create_channel(&bucket.name, name, &self.ctx.config.channel_defaults)
                .await
                .map_err(|e| (rejected, format!("InternalError: {e}")))?,
            Ok(None) => return Err((rejected, format!("NoSuchLiveChannel: channel {key} does not exist"))),
            Err(e) => return Err((rejected, format!("InternalError: {e}"))),
        };
        if record.status == ChannelStatus::Disabled {
            return Err((rejected, "LiveChannelDisabled: Live channel is disabled by owner.".into()));
        }
        let mut settings = record.settings;
        // As OSS does: playlistName in the (signed) URL names this publish's playlist.
        if let Some((_, playlist)) = params.iter().find(|(k, _)| k == "playlistName").filter(|(_, v)| !v.is_empty()) {
            crate::config::validate_playlist_name(playlist)
                .and_then(|()| key.object(playlist).map(|_| ()).map_err(|e| e.to_string()))
                .map_err(|e| ("NetStream.Publish.BadName", format!("InvalidArgument: {e}")))?;
            settings.playlist_name = playlist.clone();
        }
        let guard =
            self.ctx.channels.claim(&key, self.remote).map_err(|e| ("NetStream.Publish.BadName", e.to_string()))?;
        let push_id = match meta.open_push(&bucket.name, name, SystemTime::now(), &self.remote.to_string()).await {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(channel = %key, error = %e, "cannot record the push in the history");
                None
            }
        };
        let event = PublishEvent {
            bucket: bucket.name.clone(),
            channel: name.to_owned(),
            remote: self.remote,
            user_args: stream_key.split_once('?').map_or("", |(_, q)| q).to_owned(),
            publish_started: SystemTime::now(),
            publish_id: guard.publish_id(),
        };
        self.ctx.notifier.publish(&event, true).await;
        let segmenter = SegmenterConfig::new(settings.frag_duration);
        let capacity = (self.ctx.config.limits.storage_queue_bytes / segmenter.chunk_size).max(4);
        let (tx, rx) = mpsc::channel(capacity);
        let sink = Sink {
            store: self.ctx.store.clone(),
            key: key.clone(),
            playlist_name: settings.playlist_name.clone(),
            counters: Arc::new(SinkCounters::default()),
            on_stored: self.ctx.on_stored.clone(),
            meta: Some(meta.clone()),
            callbacks: Some(SinkCallbacks {
                notifier: self.ctx.notifier.clone(),
                event: event.clone(),
                stats: Arc::clone(&guard.stats),
                base_url: self.ctx.base_url.clone(),
            }),
        };
        let slot = Arc::clone(&guard.state);
        let store = self.ctx.store.clone();
        self.ctx.tracker.spawn(async move {
            // Waits here while an earlier publish of this channel is still flushing.
            let mut state = slot.lock_owned().await;
            let stale = state.as_ref().is_some_and(|s| s.playlist_name != settings.playlist_name);
            if state.is_none() || stale {
                match store.load_channel(&key, &settings).await {
                    Ok(loaded) => *state = Some(loaded),
                    Err(e) => error!(channel = %key, error = %e, "cannot load channel state; segments of this publish are not stored"),
                }
            }
            if let Some(state) = state.as_mut() {
                state.playlist.reconfigure(settings.frag_count, settings.frag_duration);
            }
            sink.run(state, rx).await;
        });
        Ok(Publish {
            guard,
            ingest: Ingest::new(segmenter),
            tx,
            outputs: Vec::with_capacity(8),
            lost_index: None,
            dropped_segments: 0,
            started: SystemTime::now(),
            push_id,
            event,
            stats_at: std::time::Instant::now(),
            stats_bytes: (0, 0),
            stats_configs: (false, false),
        })
    }

    async fn on_media(&mut self, video: bool, data: Bytes, timestamp_ms: u32) {
        let State::Publishing(publish) = &mut self.state else {
            return;
        };
        let now = SystemTime::now();
        let mut outputs = std::mem::take(&mut publish.outputs);
        let result = if video {
            publish.ingest.video(&data, timestamp_ms, now, &mut outputs)
        } else {
            publish.ingest.audio(&data, timestamp_ms, now, &mut outputs)
        };
        publish.forward(&mut outputs);
        publish.outputs = outputs;
        publish.refresh_stats();
        match result {
            Ok(()) => {}
            Err(IngestError::Unsupported(e)) => {
                error!(remote = %self.remote, channel = %publish.guard.key(), error = %e, "publish ended: stream cannot be remuxed");
                let event = publish.event.clone();
                self.ctx.notifier.record_failed(&event, "transformat_error", "UnsupportedCodec", &e.to_string()).await;
                self.out.extend_from_slice(&status::publish_error("NetStream.Publish.Rejected", &e.to_string()));
                self.closing = true;
                self.finish_publish("unsupported codec").await;
            }
            Err(e @ IngestError::Malformed { .. }) => {
                let malformed = publish.ingest.stats().malformed;
                // The first few, then every 100th: enough to diagnose without flooding the log.
                if malformed <= 3 || malformed % 100 == 0 {
                    warn!(remote = %self.remote, channel = %publish.guard.key(), malformed, error = %e, "tag dropped");
                }
            }
        }
    }

    /// Ends the publish, if any: flushes the open segment into the queue and lets the sink finish.
    async fn finish_publish(&mut self, why: &str) {
        let State::Publishing(mut publish) = std::mem::replace(&mut self.state, State::Handshaken) else {
            return;
        };
        let mut outputs = std::mem::take(&mut publish.outputs);
        publish.ingest.finish(&mut outputs);
        for output in outputs {
            if output_index(&output) == publish.lost_index {
                continue;
            }
            // The end of a publish may wait for the queue: it is the last of this stream's data.
            if publish.tx.send(output).await.is_err() {
                break;
            }
        }
        let stats = publish.ingest.stats();
        info!(
            remote = %self.remote,
            channel = %publish.guard.key(),
            why,
            seconds = publish.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            media_seconds = stats.media_seconds(),
            segments = stats.segments,
            forced_cuts = stats.forced_cuts,
            video_frames = stats.video_frames,
            audio_frames = stats.audio_frames,
            malformed = stats.malformed,
            skipped = stats.skipped,
            dropped_segments = publish.dropped_segments,
            "publish finished"
        );
        if let Some(id) = publish.push_id {
            if let Err(e) = self.ctx.meta.close_push(id, SystemTime::now()).await {
                warn!(channel = %publish.guard.key(), error = %e, "cannot close the push-history record (the next start will)");
            }
        }
        self.ctx.notifier.publish(&publish.event, false).await;
        // Dropping the guard makes the channel idle; dropping tx lets the sink drain and finish.
    }
}

impl Publish {
    /// About once a second: what GetLiveChannelStat shows (sizes, rates, codecs from the live stream).
    fn refresh_stats(&mut self) {
        let elapsed = self.stats_at.elapsed();
        let s = self.ingest.stats();
        // The codec configuration is published at once (callbacks want the picture size even for a
        // publish shorter than a second); rates wait for a measurable interval.
        let configs = (s.video.is_some(), s.audio.is_some());
        if elapsed < STATS_INTERVAL && configs == self.stats_configs {
            return;
        }
        self.stats_configs = configs;
        let secs = elapsed.as_secs_f64();
        let rate = |now: u64, then: u64| {
            if elapsed < STATS_INTERVAL / 2 { 0 } else { (now.saturating_sub(then) as f64 / secs).round() as u64 }
        };
        let stats = LiveStats {
            video: s.video.as_ref().map(|v| VideoStats {
                width: v.width.unwrap_or(0),
                height: v.height.unwrap_or(0),
                frame_rate: s.frame_rate().map_or(0, |f| f.round() as u32),
                bandwidth: rate(s.video_bytes, self.stats_bytes.0),
                codec: "H264",
            }),
            audio: s.audio.as_ref().map(|a| AudioStats {
                sample_rate: a.sample_rate,
                bandwidth: rate(s.audio_bytes, self.stats_bytes.1),
                codec: "AAC",
            }),
        };
        self.stats_bytes = (s.video_bytes, s.audio_bytes);
        self.stats_at = std::time::Instant::now();
        *self.guard.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// Queues outputs for storage without ever waiting: if the queue is full, the segment being produced is
    /// dropped whole (and reported), so ingest keeps flowing and nothing half-written is ever listed.
    fn forward(&mut self, outputs: &mut Vec<Output>) {
        for output in outputs.drain(..) {
            let index = output_index(&output);
            if index == self.lost_index {
                continue;
            }
            match self.tx.try_send(output) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.lost_index = index;
                    self.dropped_segments += 1;
                    warn!(channel = %self.guard.key(), segment = ?index, "storage is too slow: dropping the segment being produced");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.lost_index = index;
                }
            }
        }
    }
}

fn output_index(output: &Output) -> Option<u64> {
    Some(match output {
        Output::Chunk { index, .. } => *index,
        Output::Closed(segment) => segment.index,
    })
}

/// Closes our side after an error status, then keeps reading (and discarding) for a moment: a client that
/// is busy writing media only reads the status on its next write, which must not fail with EPIPE first.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn handshake(stream: &mut TcpStream) -> Result<Vec<u8>, ConnError> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(ConnError::Handshake("peer closed during the handshake".into()));
        }
        match handshake.process_bytes(&buf[..n]).map_err(|e| ConnError::Handshake(e.to_string()))? {
            HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// `name?k=v&k2=v2` -> (`name`, [(k, v), ...]). The query is never part of the channel name.
pub fn parse_stream_key(key: &str) -> (&str, Vec<(&str, &str)>) {
    match key.split_once('?') {
        None => (key, Vec::new()),
        Some((name, query)) => {
            let params =
                query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
            (name, params)
        }
    }
}

/// Stream keys may carry signatures: log the name only.
fn redact(stream_key: &str) -> &str {
    parse_stream_key(stream_key).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_is_parameters_not_part_of_the_channel_name() {
        assert_eq!(parse_stream_key("demo"), ("demo", vec![]));
        let (name, params) = parse_stream_key("demo?Expires=1&Signature=abc%3D&playlistName=x.m3u8&flag");
        assert_eq!(name, "demo");
        assert_eq!(params, vec![("Expires", "1"), ("Signature", "abc%3D"), ("playlistName", "x.m3u8"), ("flag", "")]);
        assert_eq!(redact("demo?Signature=secret"), "demo");
    }
}
