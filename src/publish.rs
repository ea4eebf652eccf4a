//! Publishing: who may publish what ([`Policy`], sans-I/O), and one publish's life ([`Session`]): the
//! claim on the channel, its push history, its callbacks, the hand-off of its media to the storage queue,
//! and the storage writer that records it.
//!
//! `rtmp` turns protocol events into calls here (start, media, finish) and [`Refusal`]s into status
//! messages; nothing in here knows RTMP framing.
//!
//! Start: [`Policy::authorize`] (name, signature, bucket ACL) -> channel record from `meta` ->
//! [`Policy::admit`] (exists or auto-created, enabled, playlistName) -> claim (`channels`) -> wait for the
//! channel's previous writer to finish, then resume its window and sequence numbers from the stored
//! playlist and the segment index (refused with `NetStream.Publish.Failed` if they cannot be read) ->
//! history row -> publish callbacks (to the journal, not awaited) -> the storage writer task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::auth::{Keys, percent_decode};
use crate::channels::{AudioStats, Channels, EndReason, LiveGuard, LiveStats, VideoStats};
use crate::cluster::{ClaimError, Cluster};
use crate::config::{Acl, Bucket, ChannelSettings, Config, validate_playlist_name};
use crate::hls::live::{ChannelState, Recorder};
use crate::hls::{Output, SegmenterConfig};
use crate::ingest::{Ingest, IngestError};
use crate::journal::Journal;
use crate::meta::{ChannelRecord, ChannelStatus, Meta};
use crate::names::ChannelKey;
use crate::notify::{CallbackEvent, PublishEvent, RecordFailure};
use crate::storage::Store;
use crate::storage::sink::{Sink, Stored};

const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a takeover waits for the publish it ended to let go of the channel.
const TAKEOVER_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Why a publish is refused. The message (`Display`) is what the encoder is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("publish before connect, or a second publish on one connection")]
    NotConnected,
    #[error("the stream key's query is not valid percent-encoding")]
    BadQuery,
    #[error("{0}")]
    BadName(String),
    #[error("AccessDenied: {0}")]
    AccessDenied(String),
    #[error("NoSuchLiveChannel: channel {0} does not exist")]
    NoSuchLiveChannel(ChannelKey),
    #[error("LiveChannelDisabled: Live channel is disabled by owner.")]
    Disabled,
    #[error("InvalidArgument: {0}")]
    InvalidPlaylistName(String),
    #[error("channel {0} is already live")]
    AlreadyLive(ChannelKey),
    #[error("InternalError: {0}")]
    Internal(String),
    /// Where the channel's recording goes on could not be read (storage or database away): accepting
    /// would throw every segment of the publish away.
    #[error("ServiceUnavailable: cannot resume the channel's recording, try again later: {0}")]
    Unavailable(String),
    /// This node is draining (shutting down, or taken out of the balancer): publish to another node.
    #[error("ServiceUnavailable: this node is draining; publish again (the balancer sends you to another node)")]
    Draining,
    /// Storage is not keeping up with this node's publishers: taking one more would cost the live ones
    /// segments.
    #[error("ServiceUnavailable: this node is overloaded, {0}; publish again later or to another node")]
    Overloaded(crate::budget::Overloaded),
}

impl Refusal {
    /// The OSS error code the refusal corresponds to.
    pub fn oss_code(&self) -> &'static str {
        match self {
            Refusal::NotConnected | Refusal::BadQuery | Refusal::BadName(_) | Refusal::InvalidPlaylistName(_) => {
                "InvalidArgument"
            }
            Refusal::AccessDenied(_) => "AccessDenied",
            Refusal::NoSuchLiveChannel(_) => "NoSuchLiveChannel",
            Refusal::Disabled => "LiveChannelDisabled",
            Refusal::AlreadyLive(_) => "ChannelStillLive",
            Refusal::Internal(_) => "InternalError",
            Refusal::Unavailable(_) | Refusal::Draining | Refusal::Overloaded(_) => "ServiceUnavailable",
        }
    }

    /// How `/metrics` counts it.
    pub fn reason(&self) -> crate::metrics::RefusedReason {
        use crate::metrics::RefusedReason as R;
        match self {
            Refusal::NotConnected | Refusal::BadQuery | Refusal::BadName(_) | Refusal::InvalidPlaylistName(_) => {
                R::BadRequest
            }
            Refusal::AccessDenied(_) => R::AccessDenied,
            Refusal::NoSuchLiveChannel(_) => R::NoSuchChannel,
            Refusal::Disabled => R::Disabled,
            Refusal::AlreadyLive(_) => R::AlreadyLive,
            Refusal::Internal(_) => R::Internal,
            Refusal::Unavailable(_) => R::Unavailable,
            Refusal::Draining => R::Draining,
            Refusal::Overloaded(_) => R::Overloaded,
        }
    }

    /// The `NetStream.Publish.*` status code the encoder gets.
    pub fn rtmp_status(&self) -> &'static str {
        match self {
            Refusal::NotConnected => "NetStream.Publish.BadConnection",
            Refusal::BadQuery | Refusal::BadName(_) | Refusal::InvalidPlaylistName(_) | Refusal::AlreadyLive(_) => {
                "NetStream.Publish.BadName"
            }
            Refusal::AccessDenied(_) | Refusal::NoSuchLiveChannel(_) | Refusal::Disabled | Refusal::Internal(_) => {
                "NetStream.Publish.Rejected"
            }
            Refusal::Unavailable(_) | Refusal::Draining | Refusal::Overloaded(_) => "NetStream.Publish.Failed",
        }
    }
}

/// The publish URL's query as callbacks pass it on (`user_args`), less the credentials: the signature,
/// the access key id, the expiry and an STS token are ours to check, not the receiver's to see (or the
/// delivery records' to keep).
fn user_args(stream_key: &str) -> String {
    const CREDENTIALS: [&str; 4] = ["Signature", "OSSAccessKeyId", "Expires", "security-token"];
    let query = stream_key.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(k, _)| k);
            !CREDENTIALS.iter().any(|c| percent_decode(name).is_some_and(|n| n.eq_ignore_ascii_case(c)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A publish whose name and signature passed: what is left to check needs the channel record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    pub key: ChannelKey,
    /// Decoded query parameters of the stream key.
    pub params: Vec<(String, String)>,
    /// The raw query string (callbacks pass it on as `user_args`).
    pub user_args: String,
    auto_create: bool,
}

/// What the channel record said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Publish with these settings.
    Admit(ChannelSettings),
    /// The channel does not exist and the bucket creates channels on first push: create it, then admit
    /// again with the created record.
    Create,
}

/// The publish rules, without I/O.
pub struct Policy<'a> {
    pub keys: &'a Keys,
}

impl Policy<'_> {
    /// Name and signature: the stream key is `<channel>[?query]`; a signature is required unless the
    /// bucket is public-read-write, and a bad one is refused even there.
    pub fn authorize(&self, bucket: &Bucket, stream_key: &str, now: SystemTime) -> Result<Authorized, Refusal> {
        let (name, raw_params) = parse_stream_key(stream_key);
        let params: Vec<(String, String)> = raw_params
            .iter()
            .map(|(k, v)| Some((percent_decode(k)?, percent_decode(v)?)))
            .collect::<Option<_>>()
            .ok_or(Refusal::BadQuery)?;
        let key = ChannelKey::new(&bucket.name, name).map_err(|e| Refusal::BadName(e.to_string()))?;
        let signed = crate::auth::oss::verify_rtmp(&bucket.name, name, &params, self.keys, now)
            .map_err(|e| Refusal::AccessDenied(e.to_string()))?;
        if signed.is_none() && bucket.acl != Acl::PublicReadWrite {
            return Err(Refusal::AccessDenied(format!(
                "bucket {} is not public-read-write; publish with a signed URL",
                bucket.name
            )));
        }
        Ok(Authorized { key, params, user_args: user_args(stream_key), auto_create: bucket.auto_create_channels })
    }

    /// The channel must exist (or be auto-created) and be enabled. `playlistName` in the (signed) URL
    /// names this publish's playlist, as OSS does.
    pub fn admit(&self, who: &Authorized, record: Option<&ChannelRecord>) -> Result<Admission, Refusal> {
        let record = match record {
            Some(record) => record,
            None if who.auto_create => return Ok(Admission::Create),
            None => return Err(Refusal::NoSuchLiveChannel(who.key.clone())),
        };
        if record.status == ChannelStatus::Disabled {
            return Err(Refusal::Disabled);
        }
        let mut settings = record.settings.clone();
        if let Some((_, playlist)) = who.params.iter().find(|(k, _)| k == "playlistName").filter(|(_, v)| !v.is_empty())
        {
            validate_playlist_name(playlist)
                .and_then(|()| who.key.object(playlist).map(|_| ()).map_err(|e| e.to_string()))
                .map_err(Refusal::InvalidPlaylistName)?;
            settings.playlist_name = playlist.clone();
        }
        Ok(Admission::Admit(settings))
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

/// What every publish shares.
pub struct Context {
    pub config: Arc<Config>,
    pub channels: Arc<Channels>,
    pub store: Store,
    pub meta: Meta,
    /// This node's leases: one publisher per channel across the cluster.
    pub cluster: Arc<Cluster>,
    pub keys: Keys,
    pub journal: Journal,
    /// `http://host:port` of the HTTP listener (download URLs in recording callbacks).
    pub base_url: String,
    /// Storage writers run here, so shutdown waits for them.
    pub tracker: TaskTracker,
    /// Observers of stored segments (tests, stats); None in production.
    pub on_stored: Option<mpsc::UnboundedSender<Stored>>,
    /// The server stops: writers waiting out a reconnect window give up.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Media bytes waiting for storage, all publishes together.
    pub budget: Arc<crate::budget::MediaBudget>,
    /// The node's snapshot decoders (channels with a PutLiveChannel Snapshot configuration).
    pub snapshots: crate::snapshot::pool::Snapshots,
}

/// The stream could not go on.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0}")]
    Unsupported(String),
}

/// One live publish.
pub struct Session {
    guard: LiveGuard,
    ingest: Ingest,
    tx: mpsc::Sender<Output>,
    outputs: Vec<Output>,
    /// Index of a segment whose bytes could not be queued: the rest of it is dropped, not half-stored.
    lost_index: Option<u64>,
    /// This publish's bytes in the node's media budget.
    holding: Arc<crate::budget::Holding>,
    started: SystemTime,
    /// The push-history record of this publish (closed when it ends).
    push_id: i64,
    /// What the publish callbacks say about this session (the stop event repeats the start's fields).
    event: PublishEvent,
    journal: Journal,
    cluster: Arc<Cluster>,
    /// This publish's lease (its id in `live_leases`).
    holder: String,
    /// When the stats GetLiveChannelStat reads were last refreshed, and the byte counts then.
    stats_at: Instant,
    stats_bytes: (u64, u64),
    /// Which codec configurations the published stats already show.
    stats_configs: (bool, bool),
    /// Segments stored and not stored when the stored count last moved, and when: a publish whose
    /// segments keep failing for `storage_failure_timeout` is ended.
    storage_progress: (u64, u64, Instant),
    storage_failure_timeout: Duration,
    frag_duration: u32,
    /// The stream was refused mid-way (a codec we cannot remux): its open segment is dropped, not listed.
    refused_mid_stream: bool,
    /// What the storage writer's end-of-publish line says about the publisher's side.
    summary: Option<tokio::sync::oneshot::Sender<Summary>>,
    /// Where the keyframes go when the channel takes snapshots.
    snapshots: Option<crate::snapshot::pool::Feed>,
}

/// The publisher's side of a finished publish, for the one line the storage writer logs when the
/// recording is complete (then the segment counts are final).
#[derive(Debug)]
struct Summary {
    why: String,
    remote: SocketAddr,
    seconds: u64,
    media_seconds: f64,
    bytes: u64,
    video_frames: u64,
    audio_frames: u64,
    malformed: u64,
    skipped: u64,
    forced_cuts: u64,
    retimed: u64,
}

impl Session {
    /// Runs the policy, claims the channel and starts its storage writer.
    pub async fn start(
        ctx: &Context,
        bucket: &Bucket,
        stream_key: &str,
        remote: SocketAddr,
    ) -> Result<Session, Refusal> {
        if ctx.cluster.is_draining() {
            return Err(Refusal::Draining);
        }
        let policy = Policy { keys: &ctx.keys };
        let who = policy.authorize(bucket, stream_key, SystemTime::now())?;
        let key = &who.key;
        let holding = ctx.budget.open().map_err(Refusal::Overloaded)?;
        let internal = |e: crate::meta::MetaError| Refusal::Internal(e.to_string());
        let k = key.clone();
        let record = ctx
            .meta
            .off_media("get_channel", move |m| async move { m.get_channel(k.bucket(), k.channel()).await })
            .await
            .map_err(internal)?;
        let settings = match policy.admit(&who, record.as_ref())? {
            Admission::Admit(settings) => settings,
            Admission::Create => {
                let created = ctx
                    .meta
                    .get_or_create_channel(key.bucket(), key.channel(), &ctx.config.channel_defaults)
                    .await
                    .map_err(internal)?;
                match policy.admit(&who, Some(&created))? {
                    Admission::Admit(settings) => settings,
                    Admission::Create => return Err(Refusal::Internal(format!("channel {key} was not created"))),
                }
            }
        };
        let mut guard = claim_here(ctx, bucket, key, remote).await?;
        // Waits while an earlier publish of this channel on this node is still flushing, then claims the
        // channel cluster-wide (waiting there while another node's writer flushes), then reads where the
        // recording goes on; if that cannot be read, the publish is refused rather than recorded nowhere.
        let flush = match guard.take_flush() {
            Some(lock) => Some(lock.lock_owned().await),
            None => None,
        };
        let started = SystemTime::now();
        let claimed = match ctx.cluster.claim(&guard, remote, &who.user_args, started, bucket.takeover).await {
            Ok(claimed) => claimed,
            Err(e) => {
                drop((flush, guard));
                ctx.channels.release(key);
                return Err(match e {
                    ClaimError::Held { key, node } => {
                        info!(channel = %key, node, "publish refused: the channel is live on another node");
                        Refusal::AlreadyLive(key)
                    }
                    ClaimError::Meta { ref source, .. } if source.is_unavailable() => {
                        Refusal::Unavailable(e.to_string())
                    }
                    ClaimError::Meta { .. } => Refusal::Internal(e.to_string()),
                });
            }
        };
        let state = match resume(&ctx.meta, &ctx.store, key, &settings, claimed.took_over).await {
            Ok(state) => state,
            Err(e) => {
                error!(channel = %key, error = %e, "publish refused: cannot resume the channel's recording");
                let push_id = claimed.push_id;
                let closed = ctx
                    .meta
                    .off_media("close_push", move |m| async move { m.close_push(push_id, SystemTime::now()).await });
                if let Err(e) = closed.await {
                    warn!(channel = %key, error = %e, "cannot close the push-history record (the next start will)");
                }
                ctx.cluster.release(key, &claimed.holder).await;
                drop((flush, guard));
                ctx.channels.release(key);
                return Err(Refusal::Unavailable(e));
            }
        };
        let event = PublishEvent {
            bucket: key.bucket().to_owned(),
            channel: key.channel().to_owned(),
            remote,
            user_args: who.user_args.clone(),
            publish_started: started,
            // The push-history id is a database id: unique across restarts and nodes.
            session_id: format!("p{}", claimed.push_id),
        };
        ctx.journal.callback(CallbackEvent::Publish { event: event.clone(), start: true });
        let segmenter =
            SegmenterConfig { chunk_size: ctx.store.chunk_size(), ..SegmenterConfig::new(settings.frag_duration) };
        let capacity = (ctx.config.limits.storage_queue_bytes / segmenter.chunk_size).max(4);
        let (tx, rx) = mpsc::channel(capacity);
        let sink = Sink {
            store: ctx.store.clone(),
            key: key.clone(),
            on_stored: ctx.on_stored.clone(),
            journal: Some(ctx.journal.clone()),
            event: event.clone(),
            base_url: ctx.base_url.clone(),
            fence: claimed.fence.clone(),
            health: Some(Arc::clone(&guard.health)),
            seqs: Some(crate::storage::sink::SeqReservation::new(ctx.meta.clone(), SEQ_BLOCK)),
            budget: Some(Arc::clone(&holding)),
        };
        let (summary_tx, summary_rx) = tokio::sync::oneshot::channel();
        let writer = Writer {
            journal: ctx.journal.clone(),
            reconnect: bucket.reconnect_window.map(|window| Reconnect {
                window,
                settings: ChannelSettings { playlist_name: state.playlist_name.clone(), ..settings.clone() },
                store: ctx.store.clone(),
                shutdown: ctx.shutdown.clone(),
            }),
            summary: summary_rx,
            health: Arc::clone(&guard.health),
            flush,
            channels: Arc::clone(&ctx.channels),
            cluster: Arc::clone(&ctx.cluster),
            holder: claimed.holder.clone(),
            state,
        };
        ctx.tracker.spawn(writer.run(sink, rx));
        let snapshots = record
            .as_ref()
            .and_then(|r| r.snapshot.as_ref())
            .and_then(|s| ctx.snapshots.feed(&ctx.config, key, s, &event.session()));
        let mut ingest = Ingest::new(segmenter);
        if snapshots.is_some() {
            ingest.tap_keyframes();
        }
        Ok(Session {
            snapshots,
            guard,
            ingest,
            tx,
            outputs: Vec::with_capacity(8),
            lost_index: None,
            holding,
            started,
            push_id: claimed.push_id,
            event,
            journal: ctx.journal.clone(),
            cluster: Arc::clone(&ctx.cluster),
            holder: claimed.holder,
            stats_at: Instant::now(),
            stats_bytes: (0, 0),
            stats_configs: (false, false),
            storage_progress: (0, 0, Instant::now()),
            storage_failure_timeout: ctx.config.limits.storage_failure_timeout,
            frag_duration: settings.frag_duration,
            refused_mid_stream: false,
            summary: Some(summary_tx),
        })
    }

    pub fn key(&self) -> &ChannelKey {
        self.guard.key()
    }

    /// Kicked when the server ends this publish (API, drain, takeover, failing storage, lost lease).
    pub fn kick(&self) -> &crate::channels::Kick {
        &self.guard.kick
    }

    /// One FLV tag body. Never waits: if storage is behind, the segment being produced is dropped.
    pub fn media(
        &mut self,
        video: bool,
        data: &Bytes,
        timestamp_ms: u32,
        remote: SocketAddr,
    ) -> Result<(), MediaError> {
        let now = SystemTime::now();
        self.guard.health.media_at(now);
        let mut outputs = std::mem::take(&mut self.outputs);
        let result = if video {
            self.ingest.video(data, timestamp_ms, now, &mut outputs)
        } else {
            self.ingest.audio(data, timestamp_ms, now, &mut outputs)
        };
        self.forward(&mut outputs);
        self.outputs = outputs;
        if let Some(feed) = &mut self.snapshots
            && let Some((access_unit, pts)) = self.ingest.take_keyframe()
        {
            feed.offer(self.ingest.video_config(), &access_unit, pts);
        }
        self.refresh_stats();
        self.check_storage();
        if let Some(gop) = self.ingest.take_long_gop() {
            warn!(
                %remote,
                channel = %self.key(),
                keyframe_interval_s = gop,
                frag_duration_s = self.frag_duration,
                "the encoder's keyframe interval is longer than FragDuration: segments will be that long and \
                 viewers that much further behind; set the encoder's keyframe interval to FragDuration (README: Publishing)"
            );
        }
        if let Some(track) = self.ingest.take_retiming() {
            warn!(
                %remote,
                channel = %self.key(),
                ?track,
                "the encoder's timestamps jump about or stand still: this track's timestamps are repaired from \
                 its frame rate, and audio/video sync follows the encoder's order of frames"
            );
        }
        match result {
            Ok(()) => Ok(()),
            Err(IngestError::Unsupported(e)) => {
                error!(%remote, channel = %self.key(), error = %e, "publish ended: stream cannot be remuxed");
                self.refused_mid_stream = true;
                self.journal.callback(CallbackEvent::RecordFailed {
                    event: self.event.clone(),
                    failure: RecordFailure::TransformatError,
                    code: "UnsupportedCodec",
                    message: e.to_string(),
                });
                Err(MediaError::Unsupported(e.to_string()))
            }
            Err(e @ IngestError::Malformed { .. }) => {
                let malformed = self.ingest.stats().malformed;
                // The first few, then every 100th: enough to diagnose without flooding the log.
                if malformed <= 3 || malformed.is_multiple_of(100) {
                    warn!(%remote, channel = %self.key(), malformed, error = %e, "tag dropped");
                }
                Ok(())
            }
        }
    }

    /// Ends the publish: flushes the open segment into the queue, closes the history record, sends the
    /// stop callbacks. The storage writer finishes on its own; dropping the claim makes the channel idle.
    pub async fn finish(mut self, meta: &Meta, why: &str, remote: SocketAddr) {
        let mut outputs = std::mem::take(&mut self.outputs);
        // A refused stream's open segment is a fragment of what the encoder meant to send (often one
        // frame): the storage writer aborts it instead of listing a 0.03 s segment.
        if !self.refused_mid_stream {
            self.ingest.finish(&mut outputs);
        }
        for output in outputs {
            if output_index(&output) == self.lost_index {
                continue;
            }
            // The end of a publish may wait for the queue: it is the last of this stream's data.
            if self.tx.send(output).await.is_err() {
                break;
            }
        }
        let stats = self.ingest.stats();
        if let Some(tx) = self.summary.take() {
            let _ = tx.send(Summary {
                why: why.to_owned(),
                remote,
                seconds: self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                media_seconds: stats.media_seconds(),
                bytes: stats.video_bytes + stats.audio_bytes,
                video_frames: stats.video_frames,
                audio_frames: stats.audio_frames,
                malformed: stats.malformed,
                skipped: stats.skipped,
                forced_cuts: stats.forced_cuts,
                retimed: stats.retimed,
            });
        }
        let push_id = self.push_id;
        let closed =
            meta.off_media("close_push", move |m| async move { m.close_push(push_id, SystemTime::now()).await });
        if let Err(e) = closed.await {
            warn!(channel = %self.key(), error = %e, "cannot close the push-history record (the next start will)");
        }
        self.cluster.flushing(self.key(), &self.holder).await;
        self.journal.callback(CallbackEvent::Publish { event: self.event.clone(), start: false });
    }

    /// Ends the publish (with an RTMP error) once segments have kept failing to be stored for the
    /// configured time: the encoder's operator must learn that nothing is recorded.
    fn check_storage(&mut self) {
        let c = self.guard.health.counts();
        let (stored, lost, since) = self.storage_progress;
        if c.stored != stored {
            self.storage_progress = (c.stored, c.failed + c.dropped, Instant::now());
            return;
        }
        if c.failed + c.dropped > lost
            && since.elapsed() >= self.storage_failure_timeout
            && !self.guard.kick.is_kicked()
        {
            error!(
                channel = %self.key(),
                failed = c.failed,
                dropped = c.dropped,
                seconds = since.elapsed().as_secs(),
                last_error = self.guard.health.last_error().as_deref().unwrap_or("(storage too slow)"),
                "ending the publish: no segment could be stored"
            );
            self.guard.kick.kick(EndReason::StorageFailing);
        }
    }

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
            segments: self.guard.health.counts(),
            store_error: self.guard.health.last_error(),
        };
        self.stats_bytes = (s.video_bytes, s.audio_bytes);
        self.stats_at = Instant::now();
        *self.guard.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// Queues outputs for storage without ever waiting: if the queue is full, or the node's media budget
    /// says this publish holds more than its share, the segment being produced is dropped whole (and
    /// reported), so ingest keeps flowing and nothing half-written is ever listed.
    fn forward(&mut self, outputs: &mut Vec<Output>) {
        for output in outputs.drain(..) {
            let index = output_index(&output);
            if index == self.lost_index {
                continue;
            }
            let bytes = match &output {
                Output::Chunk { data, .. } => data.len(),
                Output::Closed(_) => 0,
            };
            // A segment's end marker holds no bytes: it always goes, so queued chunks are never orphaned.
            if bytes > 0 && !self.holding.try_charge(bytes) {
                self.drop_segment(
                    index,
                    "the node's media memory budget is full and this channel holds more than its share",
                );
                continue;
            }
            match self.tx.try_send(output) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.holding.release(bytes);
                    self.drop_segment(index, "storage is too slow");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.holding.release(bytes);
                    self.lost_index = index;
                }
            }
        }
    }

    fn drop_segment(&mut self, index: Option<u64>, why: &str) {
        self.lost_index = index;
        self.guard.health.dropped();
        crate::metrics::metrics().segment(crate::metrics::SegmentOutcome::Dropped);
        warn!(
            channel = %self.guard.key(),
            segment = ?index,
            queued_bytes = self.holding.held(),
            "{why}: dropping the segment being produced"
        );
    }
}

fn output_index(output: &Output) -> Option<u64> {
    Some(match output {
        Output::Chunk { index, .. } => *index,
        Output::Closed(segment) => segment.index,
    })
}

/// The storage writer task of one publish: it holds the channel's flush lock until its last segment and
/// playlist are stored.
struct Writer {
    journal: Journal,
    /// The bucket's reconnect window: after it, the playlist is closed if nobody published since.
    reconnect: Option<Reconnect>,
    summary: tokio::sync::oneshot::Receiver<Summary>,
    health: Arc<crate::channels::Health>,
    flush: Option<tokio::sync::OwnedMutexGuard<()>>,
    channels: Arc<Channels>,
    cluster: Arc<Cluster>,
    holder: String,
    state: ChannelState,
}

impl Writer {
    async fn run(self, sink: Sink, rx: mpsc::Receiver<Output>) {
        let key = sink.key.clone();
        let recorder = sink.run(Recorder::new(self.state), rx).await;
        let last_seq = recorder.state().playlist.last_seq();
        // The numbers this publish reserved and did not use go back, after its last index rows (the
        // journal keeps the order, and holds them while the database is away), so the next publish
        // continues without a jump.
        self.journal.return_seqs(crate::meta::lease::SeqReturn {
            bucket: key.bucket().to_owned(),
            channel: key.channel().to_owned(),
            end: recorder.seq_limit(),
            next: recorder.next_seq(),
        });
        // A re-publish waiting for this writer should find them back; a database that is away only
        // delays that (the next publish then skips the numbers), never the release of the channel.
        let _ = tokio::time::timeout(RETURN_WAIT, self.journal.sync()).await;
        // The access log's end line: the publisher's side (sent before the queue closed) and the
        // storage side, now final.
        let c = self.health.counts();
        match self.summary.await {
            Ok(s) => info!(
                remote = %s.remote,
                channel = %key,
                why = s.why,
                seconds = s.seconds,
                media_seconds = s.media_seconds,
                bytes = s.bytes,
                segments = c.stored,
                failed_segments = c.failed,
                dropped_segments = c.dropped + c.failed,
                forced_cuts = s.forced_cuts,
                video_frames = s.video_frames,
                audio_frames = s.audio_frames,
                malformed = s.malformed,
                skipped = s.skipped,
                retimed_frames = s.retimed,
                "publish ended"
            ),
            Err(_) => {
                info!(channel = %key, segments = c.stored, dropped_segments = c.dropped + c.failed, "publish ended (without its summary)")
            }
        }
        // The lease goes before the local flush lock: a publish waiting here claims it next.
        self.cluster.release(&key, &self.holder).await;
        drop(self.flush);
        self.channels.release(&key);
        if let (Some(reconnect), Some(last_seq)) = (self.reconnect, last_seq) {
            reconnect.end_playlist(&key, last_seq, &self.channels, &self.cluster).await;
        }
    }
}

/// What closing an abandoned channel's playlist needs.
struct Reconnect {
    window: Duration,
    settings: ChannelSettings,
    store: Store,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Reconnect {
    /// After the window, if no publish of the channel went live on any node and the stored playlist
    /// still ends with this publish's last segment, rewrites it with `EXT-X-ENDLIST`: a viewer who
    /// opens a channel that went offline gets an ended stream, not old video presented as live. The
    /// next publish's first segment reopens it (with a discontinuity). A stop or restart within the
    /// window leaves the playlist open, as OSS does.
    async fn end_playlist(self, key: &ChannelKey, last_seq: u64, channels: &Arc<Channels>, cluster: &Cluster) {
        tokio::select! {
            _ = tokio::time::sleep(self.window) => {}
            _ = self.shutdown.cancelled() => return,
        }
        // A publish that starts here while the playlist is rewritten waits for this hold.
        let Some(_hold) = channels.hold_idle(key) else { return };
        match cluster.live(key).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                warn!(channel = %key, error = %e, "cannot tell whether the channel is live elsewhere; its playlist stays open");
                return;
            }
        }
        let mut playlist = match self.store.load_playlist(key, &self.settings).await {
            Ok(p) => p,
            Err(e) => {
                warn!(channel = %key, error = %e, "cannot read the playlist to close it");
                return;
            }
        };
        // Another publish (here or on another node) wrote since: its own window applies.
        if playlist.last_seq() != Some(last_seq) || playlist.is_ended() {
            return;
        }
        playlist.end();
        let Ok(path) = key.object(&self.settings.playlist_name) else { return };
        match self.store.put(&path, Bytes::from(playlist.render())).await {
            Ok(()) => {
                info!(channel = %key, window_s = self.window.as_secs(), "no publisher for the reconnect window: the playlist now ends (EXT-X-ENDLIST)")
            }
            Err(e) => warn!(channel = %key, error = %e, "cannot close the playlist"),
        }
    }
}

/// Sequence numbers a publish reserves at a time (and again when half are used): minutes of segments,
/// more than a lease lasts, so a database outage ends the publish through its lease long before the
/// block runs out.
const SEQ_BLOCK: u64 = 100;
/// How long an ended publish waits for its unused sequence numbers to be given back.
const RETURN_WAIT: Duration = Duration::from_secs(2);

/// The stored playlist's window, and a block of sequence numbers reserved in the database after every
/// number any earlier publish of the channel reserved, on any node. After taking over a dead node's
/// lease, that is after anything the dead node may have stored, indexed or not, or still be uploading:
/// no `<seq>.ts` is ever written twice.
async fn resume(
    meta: &Meta,
    store: &Store,
    key: &ChannelKey,
    settings: &ChannelSettings,
    took_over: bool,
) -> Result<ChannelState, String> {
    let playlist = store.load_playlist(key, settings).await.map_err(|e| format!("stored playlist: {e}"))?;
    let k = key.clone();
    let max_seq = meta
        .off_media("max_segment_seq", move |m| async move { m.max_segment_seq(k.bucket(), k.channel()).await })
        .await
        .map_err(|e| e.to_string())?;
    let mut state = ChannelState::resume(playlist, max_seq, settings.playlist_name.clone());
    let known = state.next_seq;
    let k = key.clone();
    let seqs =
        meta.off_media("reserve_seqs", move |m| async move {
            m.reserve_seqs(k.bucket(), k.channel(), known, SEQ_BLOCK).await
        })
        .await
        .map_err(|e| format!("reserving sequence numbers: {e}"))?;
    (state.next_seq, state.seq_limit) = (seqs.start, seqs.end);
    if took_over {
        info!(channel = %key, indexed_up_to = known, next_seq = state.next_seq, "took over a dead node's channel: its recording continues after every number that node reserved");
    }
    Ok(state)
}

#[cfg(test)]
mod tests;

/// Claims the channel on this node. If a publish of it is live here and the bucket's takeover rule lets
/// the new one in (an encoder reconnecting while its old connection still looks open), the old one is
/// ended and the new one claims the channel once it has let go.
async fn claim_here(
    ctx: &Context,
    bucket: &Bucket,
    key: &ChannelKey,
    remote: SocketAddr,
) -> Result<LiveGuard, Refusal> {
    let refused = |e: crate::channels::AlreadyLive| Refusal::AlreadyLive(e.0);
    let first = match ctx.channels.claim(key, remote) {
        Ok(guard) => return Ok(guard),
        Err(e) => e,
    };
    let Some(old) = ctx.channels.live(key) else { return ctx.channels.claim(key, remote).map_err(refused) };
    let silent = old.health.silent_for(SystemTime::now());
    if !bucket.takeover.allows(silent) {
        return Err(refused(first));
    }
    info!(
        channel = %key,
        old_remote = %old.remote,
        new_remote = %remote,
        silent_ms = silent.as_millis() as u64,
        policy = ?bucket.takeover.policy,
        "publisher takeover: the new publish replaces the live one"
    );
    crate::metrics::metrics().takeover();
    old.kick.kick(EndReason::TakenOver);
    let deadline = tokio::time::Instant::now() + TAKEOVER_RELEASE_WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match ctx.channels.claim(key, remote) {
            Ok(guard) => return Ok(guard),
            // Still the publish we ended, finishing: wait. Anyone else (another new publish won): refused.
            Err(_)
                if tokio::time::Instant::now() < deadline
                    && ctx.channels.live(key).is_some_and(|l| l.publish_id == old.publish_id) => {}
            Err(e) => return Err(refused(e)),
        }
    }
}
