//! RTMP ingest: the only module that imports rml_rtmp. Accept loop, one task per connection, and the
//! translation of session events into `publish` calls (start, media, finish) and of refusals into
//! `onStatus` messages.
//!
//! Per connection: handshake -> `ServerSession` -> connect (app `live` or `<bucket>/live`) -> publish
//! (stream key = channel name; a query string after it is parameters, not part of the name). Everything
//! that ends a publish — deleteStream, TCP EOF or error, an unsupported codec, a kick from the API,
//! shutdown — goes through one `finish` that flushes the open segment.

pub mod batch;
mod blocks;
pub mod client;
pub mod guard;
mod status;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::channels::{EndReason, Kick};
use crate::config::{Bucket, Config};
use crate::metrics::{RefusedReason, metrics};
use crate::publish::{self, MediaError, Refusal, Session, parse_stream_key};
use batch::ReadBatch;
use guard::{Guard, Media, Piece};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER: usize = 64 * 1024;
/// The most handed to rml_rtmp at once (see `feed_session`).
const SESSION_FEED: usize = 2 * 1024;

thread_local! {
    static READ_SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; READ_BUFFER]);
}
const LINGER: Duration = Duration::from_secs(2);
/// How long a publishing connection whose low-water mark holds bytes back may be silent before it reads
/// what sits below the mark (`batch`): one timer a second per silent connection, none while media flows.
const HELD_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Opened and closed without a byte: a balancer's or monitor's TCP health check.
    #[error("closed before the handshake (a TCP health check)")]
    ClosedBeforeHandshake,
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("the client read nothing for {0:?} (a write did not complete)")]
    SendTimeout(Duration),
    #[error("RTMP session: {0}")]
    Session(String),
    #[error("refused input: {0}")]
    Refused(#[from] guard::Refusal),
    #[error("RTMP session panicked in {0} (a bug in rml_rtmp or here); connection closed")]
    Panicked(&'static str),
}

/// What every connection task shares.
pub struct Context {
    pub config: Arc<Config>,
    pub publish: Arc<publish::Context>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Open connections, in all and per remote IP.
    pub slots: Arc<crate::slots::Slots>,
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
    let slot = match ctx.slots.take(remote.ip()) {
        Ok(slot) => slot,
        Err(crate::slots::Full::All) => {
            warn!(%remote, limit = ctx.slots.max, "RTMP connection refused: connection limit reached");
            metrics().refused(RefusedReason::ConnectionLimit);
            return;
        }
        Err(crate::slots::Full::Address) => {
            warn!(%remote, limit = ctx.slots.per_ip_max(), "RTMP connection refused: per-address limit reached");
            metrics().refused(RefusedReason::PerAddressLimit);
            return;
        }
    };
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        let _slot = slot;
        match Connection::new(remote, ctx).run(stream).await {
            Ok(()) => debug!(%remote, "RTMP connection closed"),
            Err(e @ ConnError::ClosedBeforeHandshake) => debug!(%remote, error = %e, "RTMP connection ended"),
            Err(e) => info!(%remote, error = %e, "RTMP connection ended"),
        }
    });
}

/// The kick of the publish on a connection, followed across reads (see `drive`).
#[derive(Default)]
struct KickWatch(Option<(Kick, futures::future::BoxFuture<'static, EndReason>)>);

impl KickWatch {
    /// Follows `kick` from now on (keeping the wait when it is the one already followed), or nothing.
    fn follow(&mut self, kick: Option<&Kick>) {
        match (kick, &self.0) {
            (Some(kick), Some((followed, _))) if followed.same(kick) => {}
            (Some(kick), _) => self.0 = Some((kick.clone(), Box::pin(kick.clone().kicked()))),
            (None, _) => self.0 = None,
        }
    }

    /// Resolves when the followed kick is kicked; never when none is followed.
    async fn kicked(&mut self) -> EndReason {
        match &mut self.0 {
            Some((_, wait)) => wait.await,
            None => std::future::pending().await,
        }
    }
}

/// What one read from the client gave.
enum Read {
    Eof,
    Bytes(usize),
    /// Nothing was waiting (readiness was stale, or the idle probe found the socket empty).
    Nothing,
}

enum State {
    Handshaken,
    Connected { bucket: Bucket },
    Publishing(Box<Session>),
}

struct Connection {
    remote: SocketAddr,
    ctx: Arc<Context>,
    state: State,
    /// Set when the connection must close after flushing what is queued (rejections, fatal stream errors).
    closing: bool,
    /// Why the connection is closing, when the client is at fault.
    failed: Option<ConnError>,
    out: Vec<u8>,
    guard: Guard,
    /// The message stream of the accepted publish.
    media_stream: Option<u32>,
}

impl Connection {
    fn new(remote: SocketAddr, ctx: Arc<Context>) -> Self {
        let guard = Guard::new(guard::Limits { max_message_bytes: ctx.config.limits.max_rtmp_message_bytes });
        Connection {
            remote,
            ctx,
            state: State::Handshaken,
            closing: false,
            failed: None,
            out: Vec::new(),
            guard,
            media_stream: None,
        }
    }

    async fn run(mut self, mut stream: TcpStream) -> Result<(), ConnError> {
        let _ = stream.set_nodelay(true);
        // The futures of the rare steps (the handshake, starting and ending a publish, lingering) are boxed:
        // inline, each would make every connection's task as big as the biggest of them, for its whole life.
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(handshake(&mut stream)))
            .await
            .map_err(|_| ConnError::HandshakeTimeout)??;
        let (mut session, initial) =
            ServerSession::new(ServerSessionConfig::new()).map_err(|e| ConnError::Session(e.to_string()))?;
        let mut queue: VecDeque<Input> = initial.into_iter().map(Input::Session).collect();
        self.feed(&mut session, &leftover, &mut queue)?;
        let result = self.drive(&mut stream, &mut session, &mut queue).await;
        self.finish_publish("connection closed").await;
        result
    }

    async fn drive(
        &mut self,
        stream: &mut TcpStream,
        session: &mut ServerSession,
        queue: &mut VecDeque<Input>,
    ) -> Result<(), ConnError> {
        // Waited for across reads, not made afresh for each: a new wait on the shutdown token registered
        // and removed a waiter under a lock every connection shares, and a new `timeout` put a timer
        // in the wheel and took it out, once per read, thousands of times a second.
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut kick = KickWatch::default();
        let idle = self.ctx.config.limits.rtmp_idle_timeout;
        let mut heard = tokio::time::Instant::now();
        let mut idle_timer = std::pin::pin!(tokio::time::sleep_until(heard + idle));
        let held_check = HELD_CHECK.min(idle);
        let mut batch = ReadBatch::new(self.ctx.config.limits.rtmp_read_batch, heard.into_std());
        loop {
            while let Some(input) = queue.pop_front() {
                match input {
                    Input::Media(media) => self.on_media(media).await,
                    Input::Session(ServerSessionResult::OutboundResponse(packet)) => {
                        self.out.extend_from_slice(&packet.bytes)
                    }
                    Input::Session(ServerSessionResult::RaisedEvent(event)) => {
                        self.on_event(event, session, queue).await
                    }
                    Input::Session(ServerSessionResult::UnhandleableMessageReceived(_)) => {}
                }
            }
            // What was read has been handled: the connection holds no message block while it waits.
            self.guard.release_buffers();
            if !self.out.is_empty() {
                let limit = self.ctx.config.limits.rtmp_send_timeout;
                tokio::time::timeout(limit, stream.write_all(&self.out))
                    .await
                    .map_err(|_| ConnError::SendTimeout(limit))??;
                self.out.clear();
                // Responses are small; a connection that once sent a big one does not keep its buffer.
                if self.out.capacity() > 16 * 1024 {
                    self.out = Vec::new();
                }
            }
            if self.closing {
                Box::pin(linger(stream)).await;
                return self.failed.take().map_or(Ok(()), Err);
            }
            kick.follow(match &self.state {
                State::Publishing(p) => Some(p.kick()),
                _ => None,
            });
            let publishing = matches!(self.state, State::Publishing(_));
            let was_holding = batch.holding();
            if let Some(mark) = batch.next(publishing, self.guard.bytes_before_next_message()) {
                if let Err(e) = set_low_water(stream, mark) {
                    // Reads stay correct without the mark; they are only smaller.
                    debug!(remote = %self.remote, error = %e, "SO_RCVLOWAT not set");
                }
                if batch.holding() && !was_holding {
                    idle_timer.as_mut().reset(heard + held_check);
                }
            }
            // The idle timer, the shutdown and a kick read what sits below the mark before acting on it.
            let mut probe = false;
            tokio::select! {
                r = stream.readable() => {
                    r?;
                    heard = tokio::time::Instant::now();
                }
                // A connection that sends nothing for `idle` is closed (publishers send media continuously).
                // The timer is moved on only when it fires, not at every read. While the mark holds bytes
                // back it fires every HELD_CHECK of silence, so that a last command below the mark (a
                // deleteStream whose sender waits for the answer) is not left until the idle timeout.
                () = &mut idle_timer => {
                    let check = if batch.holding() { held_check } else { idle };
                    let quiet = heard.elapsed();
                    if quiet < check {
                        idle_timer.as_mut().reset(heard + check);
                        continue;
                    }
                    if !batch.holding() {
                        return Err(ConnError::Idle(idle));
                    }
                    probe = true;
                }
                () = &mut shutdown => {
                    if batch.holding() {
                        self.read_held(stream, session, queue).await;
                    }
                    self.finish_publish("server shutting down").await;
                    return Ok(());
                }
                reason = kick.kicked() => {
                    kick.follow(None);
                    if batch.holding() {
                        self.read_held(stream, session, queue).await;
                    }
                    // The encoder is told why (ffmpeg prints "Server error: ..."), then the connection closes.
                    self.out.extend_from_slice(&status::publish_error(reason.rtmp_status(), reason.describe()));
                    self.closing = true;
                    self.finish_publish(reason.describe()).await;
                    continue;
                }
            }
            match self.read_once(stream, session, queue, probe)? {
                Read::Eof => return Ok(()),
                Read::Bytes(n) => {
                    if probe {
                        heard = tokio::time::Instant::now();
                        idle_timer.as_mut().reset(heard + held_check);
                    }
                    batch.read(n, heard.into_std());
                }
                Read::Nothing if probe && heard.elapsed() >= idle => return Err(ConnError::Idle(idle)),
                Read::Nothing if probe => {
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + held_check);
                }
                Read::Nothing => {}
            }
        }
    }

    /// Readiness first, then a read into this thread's scratch buffer: rml_rtmp copies what it needs, so
    /// no connection has to own a read buffer while it waits (64 KiB per publisher). `below_mark`: a read
    /// of what sits below the low-water mark, which raised no readiness for tokio to have seen (its
    /// `try_io` would not even try), so the socket is read directly.
    fn read_once(
        &mut self,
        stream: &TcpStream,
        session: &mut ServerSession,
        queue: &mut VecDeque<Input>,
        below_mark: bool,
    ) -> Result<Read, ConnError> {
        READ_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let read = if below_mark {
                rustix::net::recv(stream, &mut scratch[..], rustix::net::RecvFlags::DONTWAIT)
                    .map(|(_, n)| n)
                    .map_err(std::io::Error::from)
            } else {
                read_draining(stream, &mut scratch[..])
            };
            match read {
                Ok(0) => Ok(Read::Eof),
                Ok(n) => self.feed(session, &scratch[..n], queue).map(|()| Read::Bytes(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Read::Nothing),
                Err(e) => Err(ConnError::Io(e)),
            }
        })
    }

    /// Before a publish ends by shutdown or kick: the media that sits in the socket below the read
    /// batch's mark (`batch`) goes into the publish, as it would have without the mark.
    async fn read_held(&mut self, stream: &TcpStream, session: &mut ServerSession, queue: &mut VecDeque<Input>) {
        if let Err(e) = self.read_once(stream, session, queue, true) {
            debug!(remote = %self.remote, error = %e, "read before the publish ends failed");
        }
        while let Some(input) = queue.pop_front() {
            if let Input::Media(media) = input {
                self.on_media(media).await;
            }
        }
    }

    async fn on_event(&mut self, event: ServerSessionEvent, session: &mut ServerSession, queue: &mut VecDeque<Input>) {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } if !matches!(self.state, State::Handshaken) => {
                // A second `connect` would start a second publish next to the first one: refused, and the
                // connection (with any publish on it) ends the ordinary way.
                warn!(remote = %self.remote, "RTMP connect on a connection that is already connected: closing it");
                let code = "NetConnection.Connect.Rejected";
                let why = "this connection is already connected";
                self.respond(unwound("reject", || session.reject_request(request_id, code, why)), queue);
                self.closing = true;
            }
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => match self.bucket_for_app(&app_name) {
                Ok(bucket) => {
                    self.state = State::Connected { bucket };
                    self.guard.connected();
                    self.respond(unwound("accept", || session.accept_request(request_id)), queue);
                }
                Err(why) => {
                    warn!(remote = %self.remote, app = ?app_name, "RTMP connect refused: {why}");
                    let code = "NetConnection.Connect.Rejected";
                    self.respond(unwound("reject", || session.reject_request(request_id, code, &why)), queue);
                    self.closing = true;
                }
            },
            ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                let started = match &self.state {
                    State::Connected { bucket } => {
                        Box::pin(Session::start(&self.ctx.publish, bucket, &stream_key, self.remote)).await
                    }
                    _ => Err(Refusal::NotConnected),
                };
                match started {
                    Ok(publish) => {
                        info!(remote = %self.remote, channel = %publish.key(), "publish started");
                        self.state = State::Publishing(Box::new(publish));
                        self.media_stream = self.guard.publish_stream();
                        self.respond(unwound("accept", || session.accept_request(request_id)), queue);
                    }
                    Err(refusal) => {
                        warn!(remote = %self.remote, stream_key = ?redact(&stream_key), "publish refused: {refusal}");
                        metrics().refused(refusal.reason());
                        let why = refusal.to_string();
                        let code = refusal.rtmp_status();
                        self.respond(unwound("reject", || session.reject_request(request_id, code, &why)), queue);
                        self.closing = true;
                    }
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, stream_key, .. } => {
                info!(remote = %self.remote, stream_key = ?redact(&stream_key), "RTMP play refused: this server serves HLS");
                let why = "RTMP playback is not offered; play the channel over HLS";
                let code = "NetStream.Play.Failed";
                self.respond(unwound("reject", || session.reject_request(request_id, code, why)), queue);
                self.closing = true;
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

    /// Reads bytes from the client (`feed_session`) and owes it an acknowledgement when its window is
    /// full. The messages before a refused chunk still come out (they may be media); then the connection
    /// closes.
    fn feed(
        &mut self,
        session: &mut ServerSession,
        bytes: &[u8],
        queue: &mut VecDeque<Input>,
    ) -> Result<(), ConnError> {
        let refused = feed_session(&mut self.guard, session, bytes, queue)?;
        if let Some(sequence) = self.guard.take_ack() {
            self.out.extend_from_slice(&status::acknowledgement(sequence));
        }
        if let Some(refusal) = refused {
            warn!(remote = %self.remote, "RTMP connection closed: {refusal}");
            metrics().refused(RefusedReason::Protocol);
            self.closing = true;
            self.failed = Some(refusal.into());
        }
        Ok(())
    }

    fn respond(
        &mut self,
        result: Result<Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>, ConnError>,
        queue: &mut VecDeque<Input>,
    ) {
        match result {
            Ok(Ok(results)) => queue.extend(results.into_iter().map(Input::Session)),
            Ok(Err(e)) => {
                warn!(remote = %self.remote, error = %e, "RTMP session refused a response");
                self.closing = true;
            }
            Err(e) => {
                self.closing = true;
                self.failed = Some(e);
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

    /// Media of the stream being published; as rml_rtmp did, media of any other stream is ignored.
    async fn on_media(&mut self, media: Media) {
        let State::Publishing(publish) = &mut self.state else {
            return;
        };
        if self.media_stream != Some(media.stream_id) {
            return;
        }
        if let Err(MediaError::Unsupported(e)) = publish.media(media.video, &media.data, media.timestamp, self.remote) {
            self.out.extend_from_slice(&status::publish_error("NetStream.Publish.Rejected", &e));
            self.closing = true;
            self.finish_publish("unsupported codec").await;
        }
    }

    /// Ends the publish, if any: the session flushes the open segment and lets its writer finish.
    async fn finish_publish(&mut self, why: &str) {
        let State::Publishing(publish) = std::mem::replace(&mut self.state, State::Handshaken) else {
            return;
        };
        Box::pin(publish.finish(&self.ctx.publish.meta, why, self.remote)).await;
    }
}

/// What a connection reads, in order: what rml_rtmp's session made of the other messages, and the media,
/// which goes around it.
#[derive(Debug)]
pub enum Input {
    Session(ServerSessionResult),
    Media(Media),
}

/// What a connection does with bytes read from its client, without the socket: the guard reads them
/// and assembles the messages; media comes out as it is, the other messages go through rml_rtmp's
/// session (in `SESSION_FEED` slices) and its results come out. `Ok(Some(refusal))`: the guard refused a
/// chunk (the messages before it came out, since they may be media) and the connection must close.
/// Also used by the remux benchmark, so that it measures the path a real connection takes.
pub fn feed_session(
    guard: &mut Guard,
    session: &mut ServerSession,
    bytes: &[u8],
    out: &mut impl Extend<Input>,
) -> Result<Option<guard::Refusal>, ConnError> {
    let mut failed = None;
    let verdict = guard.inspect(bytes, &mut |piece| {
        if failed.is_some() {
            return;
        }
        let message = match piece {
            Piece::Media(media) => return out.extend(Some(Input::Media(media))),
            Piece::Session(message) => message,
        };
        // rml_rtmp appends its input to a buffer that never shrinks: fed in small slices, it keeps one.
        for slice in message.chunks(SESSION_FEED) {
            match unwound("handle_input", || session.handle_input(slice)) {
                Ok(Ok(more)) => out.extend(more.into_iter().map(Input::Session)),
                Ok(Err(e)) => failed = Some(ConnError::Session(e.to_string())),
                Err(e) => failed = Some(e),
            }
            if failed.is_some() {
                return;
            }
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(verdict.err()),
    }
}

/// Sets the socket's `SO_RCVLOWAT`: readiness is reported once `bytes` have come (or at EOF or an
/// error). See `batch`. Neither rustix nor socket2 wraps this option.
fn set_low_water(stream: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the stream's own, open for the call; the value is a c_int of the size
    // passed, as SO_RCVLOWAT takes.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A non-blocking read that, when it comes back short (the socket is empty), forgets the socket's
/// readiness, as tokio's own `poll_read` does: otherwise the next `readable()` returns at once and the
/// read after it fails with EAGAIN, a second recv for every read (half of all recvs at 200 publishers).
/// The readiness forgotten is the one seen before the read: data that arrives during or after the read
/// raises a new one, which stays.
fn read_draining(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    match stream.try_io(Interest::READABLE, || {
        read = stream.try_read(buf)?;
        if read > 0 && read < buf.len() { Err(ErrorKind::WouldBlock.into()) } else { Ok(()) }
    }) {
        Err(e) if e.kind() == ErrorKind::WouldBlock && read > 0 => Ok(read),
        Err(e) => Err(e),
        Ok(()) => Ok(read),
    }
}

/// Runs a call into rml_rtmp, turning a panic inside it (crafted input it indexes or subtracts without
/// checking) into an error for this connection only.
fn unwound<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T, ConnError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ConnError::Panicked(what))
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
    let mut first = true;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 && first {
            return Err(ConnError::ClosedBeforeHandshake);
        }
        if n == 0 {
            return Err(ConnError::Handshake("peer closed during the handshake".into()));
        }
        first = false;
        match handshake.process_bytes(&buf[..n]).map_err(|e| ConnError::Handshake(e.to_string()))? {
            HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
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
    fn signatures_in_stream_keys_stay_out_of_the_log() {
        assert_eq!(redact("demo?Signature=secret&OSSAccessKeyId=AK"), "demo");
    }
}
