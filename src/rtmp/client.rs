//! An RTMP publisher built on rml_rtmp's `ClientSession`: connect, publish, send FLV tags, unpublish.
//!
//! Used by the end-to-end tests and by load tools. It is a real client over TCP, but it is still our own
//! code: interop with ffmpeg and GStreamer is tested separately.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionError, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flv::file::{Tag, TagKind};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("session: {0}")]
    Session(#[from] ClientSessionError),
    #[error("refused by the server: {code}: {description}")]
    Refused { code: String, description: String },
    #[error("the server closed the connection")]
    Closed,
    #[error("timed out waiting for the server")]
    Timeout,
}

pub struct Publisher {
    stream: TcpStream,
    session: ClientSession,
    /// The chunk size rml_rtmp told the server it sends with.
    chunk_size: u32,
    /// The message stream of the publish, read from the first media message rml_rtmp wrote.
    media_stream: Option<u32>,
    buf: Vec<u8>,
    out: Vec<u8>,
    bytes_sent: u64,
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Publisher {
    /// Connects to `rtmp://addr/app` and publishes `stream_key` (which may carry `?query`).
    pub async fn connect(addr: SocketAddr, app: &str, stream_key: &str) -> Result<Publisher, ClientError> {
        let (stream, leftover) = handshake(addr).await?;
        let buf = vec![0u8; 64 * 1024];
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{addr}/{app}"));
        let chunk_size = config.chunk_size;
        let (session, initial) = ClientSession::new(config)?;
        let mut p = Publisher { stream, session, chunk_size, media_stream: None, buf, out: Vec::new(), bytes_sent: 0 };
        p.queue(initial);
        let events = p.session.handle_input(&leftover)?;
        p.queue_events(events)?;
        let connect = p.session.request_connection(app.to_string())?;
        p.queue(vec![connect]);
        p.flush().await?;
        p.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)).await?;
        let publish = p.session.request_publishing(stream_key.to_string(), PublishRequestType::Live)?;
        p.queue(vec![publish]);
        p.flush().await?;
        p.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)).await?;
        Ok(p)
    }

    fn queue(&mut self, results: Vec<ClientSessionResult>) {
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                self.out.extend_from_slice(&packet.bytes);
            }
        }
    }

    /// Queues outbound bytes and turns refusals into errors; other events are returned.
    fn queue_events(&mut self, results: Vec<ClientSessionResult>) -> Result<Vec<ClientSessionEvent>, ClientError> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(packet) => self.out.extend_from_slice(&packet.bytes),
                ClientSessionResult::RaisedEvent(event) => {
                    if let Some(refusal) = refusal(&event) {
                        return Err(refusal);
                    }
                    events.push(event);
                }
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.bytes_sent += self.out.len() as u64;
            self.out.clear();
        }
        Ok(())
    }

    /// Bytes written to the socket so far (handshake excluded).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    async fn wait_for(&mut self, want: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf))
                .await
                .map_err(|_| ClientError::Timeout)??;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            let results = self.session.handle_input(&self.buf[..n])?;
            let events = self.queue_events(results)?;
            self.flush().await?;
            if events.iter().any(&want) {
                return Ok(());
            }
        }
    }

    /// Reads whatever the server sent without waiting (acks, pings, a late error status).
    fn poll_incoming(&mut self) -> Result<(), ClientError> {
        loop {
            match self.stream.try_read(&mut self.buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    let results = self.session.handle_input(&self.buf[..n])?;
                    self.queue_events(results)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends one FLV tag (script tags are skipped: metadata is informational).
    pub async fn send(&mut self, tag: &Tag, timestamp_ms: u32) -> Result<(), ClientError> {
        self.queue_tag(tag.kind, tag.body.clone(), timestamp_ms)?;
        self.poll_incoming()?;
        self.flush().await
    }

    /// Queues a tag without writing; `flush_queued` writes everything queued in one call.
    pub fn queue_tag(&mut self, kind: TagKind, body: Bytes, timestamp_ms: u32) -> Result<(), ClientError> {
        let t = RtmpTimestamp::new(timestamp_ms);
        let result = match kind {
            TagKind::Video => self.session.publish_video_data(body, t, false)?,
            TagKind::Audio => self.session.publish_audio_data(body, t, false)?,
            TagKind::Script => return Ok(()),
        };
        if self.media_stream.is_none()
            && let ClientSessionResult::OutboundResponse(packet) = &result
        {
            self.media_stream = message_stream_id(&packet.bytes);
        }
        self.queue(vec![result]);
        Ok(())
    }

    /// Sends a tag cut into chunks beforehand ([`ChunkedTag`], shared by any number of publishers): a
    /// 12-byte header of its own and the shared chunks, in one vectored write, without copying the body.
    /// rml_rtmp's serializer copies each message twice and allocates for it, which made a load generator
    /// of 1000 publishers a third of this machine. The first media tag goes through rml_rtmp (it tells the
    /// message stream), as does one whose timestamp needs the extended field.
    pub async fn send_chunked(&mut self, tag: &ChunkedTag, timestamp_ms: u32) -> Result<(), ClientError> {
        let stream_id = match self.media_stream {
            // The 24-bit fields: a timestamp that needs the extended one, or a body too long to say.
            Some(id)
                if timestamp_ms < 0xFF_FFFF && tag.body.len() <= 0xFF_FFFF && tag.chunk_size == self.chunk_size =>
            {
                id
            }
            _ => {
                self.queue_tag(tag.kind, tag.body.clone(), timestamp_ms)?;
                return self.flush_queued().await;
            }
        };
        self.poll_incoming()?;
        self.flush().await?;
        let mut header = [0u8; 12];
        header[0] = tag.csid;
        header[1..4].copy_from_slice(&timestamp_ms.to_be_bytes()[1..]);
        header[4..7].copy_from_slice(&(tag.body.len() as u32).to_be_bytes()[1..]);
        header[7] = tag.type_id;
        header[8..12].copy_from_slice(&stream_id.to_le_bytes());
        let (mut head, mut body): (&[u8], &[u8]) = (&header, &tag.chunks);
        while !head.is_empty() || !body.is_empty() {
            let n = self.stream.write_vectored(&[std::io::IoSlice::new(head), std::io::IoSlice::new(body)]).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        self.bytes_sent += (header.len() + tag.chunks.len()) as u64;
        Ok(())
    }

    pub async fn flush_queued(&mut self) -> Result<(), ClientError> {
        self.poll_incoming()?;
        self.flush().await
    }

    /// Sends a raw, possibly malformed, byte string on the connection (for robustness tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Unpublishes (deleteStream) and keeps the connection open, as encoders that wait for the answer do.
    pub async fn unpublish(&mut self) -> Result<(), ClientError> {
        let stop = self.session.stop_publishing()?;
        self.queue(stop);
        self.flush().await
    }

    /// Unpublishes (deleteStream) and waits until the server has closed or gone quiet.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        self.unpublish().await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Waits until the server closes the connection (e.g. after kicking the publisher).
    pub async fn closed_by_server(mut self, timeout: Duration) -> Result<Option<ClientError>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(Err(e)) => return Ok(Some(e.into())),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Ok(None);
            }
            let results = self.session.handle_input(&self.buf[..n])?;
            if let Err(refused) = self.queue_events(results) {
                return Ok(Some(refused));
            }
        }
    }
}

/// Chunk streams of [`ChunkedTag`]s: apart from rml_rtmp's (2 to 6), whose header compression must not
/// meet ours, and below nginx-rtmp's default `max_streams` (32).
const AUDIO_CSID: u8 = 8;
const VIDEO_CSID: u8 = 9;

/// A media tag as RTMP chunks after the first chunk's header: the body with a type 3 header before every
/// chunk but the first.
#[derive(Debug, Clone)]
pub struct ChunkedTag {
    kind: TagKind,
    csid: u8,
    type_id: u8,
    chunk_size: u32,
    body: Bytes,
    chunks: Bytes,
}

impl ChunkedTag {
    /// `None` for a script tag (publishers skip them).
    pub fn new(tag: &Tag, chunk_size: u32) -> Option<ChunkedTag> {
        let (csid, type_id) = match tag.kind {
            TagKind::Audio => (AUDIO_CSID, 8),
            TagKind::Video => (VIDEO_CSID, 9),
            TagKind::Script => return None,
        };
        // `chunks` writes a first header too (12 bytes: a one-byte chunk stream id); each send writes its own.
        let chunks = Bytes::from(chunks(csid, type_id, &tag.body, chunk_size as usize)).slice(12..);
        Some(ChunkedTag { kind: tag.kind, csid, type_id, chunk_size, body: tag.body.clone(), chunks })
    }

    /// The chunk size a [`Publisher`] sends with.
    pub fn publisher_chunk_size() -> u32 {
        ClientSessionConfig::new().chunk_size
    }
}

/// The message stream id in a chunk that starts with a type 0 header on a one-byte chunk stream id.
fn message_stream_id(bytes: &[u8]) -> Option<u32> {
    let basic = *bytes.first()?;
    (basic >> 6 == 0 && basic & 0x3F >= 2).then_some(())?;
    Some(u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?))
}

fn status_field(values: &[Amf0Value], field: &str) -> String {
    values
        .iter()
        .find_map(|v| match v {
            Amf0Value::Object(props) => match props.get(field) {
                Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default()
}

fn refusal(event: &ClientSessionEvent) -> Option<ClientError> {
    match event {
        ClientSessionEvent::ConnectionRequestRejected { description } => Some(ClientError::Refused {
            code: "NetConnection.Connect.Rejected".into(),
            description: description.clone(),
        }),
        // rml_rtmp's server answers a refused publish with `_error` on transaction 0.
        ClientSessionEvent::UnknownTransactionResultReceived { additional_values, .. } => Some(ClientError::Refused {
            code: status_field(additional_values, "code"),
            description: status_field(additional_values, "description"),
        }),
        ClientSessionEvent::UnhandleableAmf0Command { command_name, additional_values, .. }
            if command_name == "onStatus" =>
        {
            let code = status_field(additional_values, "code");
            (status_field(additional_values, "level") == "error")
                .then(|| ClientError::Refused { code, description: status_field(additional_values, "description") })
        }
        ClientSessionEvent::UnhandleableOnStatusCode { code }
            if code.contains("Failed") || code.contains("Rejected") || code.contains("BadName") =>
        {
            Some(ClientError::Refused { code: code.clone(), description: String::new() })
        }
        _ => None,
    }
}

/// Connects and completes the RTMP handshake only: the stream, and any bytes the server sent after it.
/// For tests that speak raw chunks.
pub async fn handshake(addr: SocketAddr) -> Result<(TcpStream, Vec<u8>), ClientError> {
    handshake_on(TcpStream::connect(addr).await?).await
}

/// The handshake on a stream the caller connected (with its own socket options).
pub async fn handshake_on(mut stream: TcpStream) -> Result<(TcpStream, Vec<u8>), ClientError> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 8 * 1024];
    let mut handshake = Handshake::new(PeerType::Client);
    let p0p1 = handshake.generate_outbound_p0_and_p1().map_err(|e| ClientError::Handshake(e.to_string()))?;
    stream.write_all(&p0p1).await?;
    loop {
        let n =
            tokio::time::timeout(REPLY_TIMEOUT, stream.read(&mut buf)).await.map_err(|_| ClientError::Timeout)??;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        match handshake.process_bytes(&buf[..n]).map_err(|e| ClientError::Handshake(e.to_string()))? {
            HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                stream.write_all(&response_bytes).await?;
                return Ok((stream, remaining_bytes));
            }
        }
    }
}

/// One RTMP message as raw chunks on `csid` (2 to 63): a full header (timestamp 0, stream 0), then the
/// payload cut at `chunk_size` with one-byte continuation headers. For tests that send what no real
/// client would.
pub fn chunks(csid: u8, type_id: u8, payload: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = vec![csid & 0x3F, 0, 0, 0];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX).min(0xFF_FFFF);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&[0, 0, 0, 0]);
    for (i, part) in payload.chunks(chunk_size.max(1)).enumerate() {
        if i > 0 {
            out.push(0xC0 | (csid & 0x3F));
        }
        out.extend_from_slice(part);
    }
    out
}

/// `depth` nested AMF0 containers of one kind (0x03 object, 0x08 ECMA array, 0x0A strict array), each
/// closed properly, around one `undefined`. For tests of what nesting does to a decoder.
pub fn nested_amf0(kind: u8, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth {
        match kind {
            0x03 => out.extend_from_slice(&[0x03, 0, 1, b'a']),
            0x08 => out.extend_from_slice(&[0x08, 0, 0, 0, 1, 0, 1, b'a']),
            _ => out.extend_from_slice(&[0x0A, 0, 0, 0, 1]),
        }
    }
    out.push(0x05);
    if kind != 0x0A {
        for _ in 0..depth {
            out.extend_from_slice(&[0, 0, 0x09]);
        }
    }
    out
}

/// A `connect` command (name, transaction 1) whose command object is [`nested_amf0`].
pub fn nested_connect(kind: u8, depth: usize) -> Vec<u8> {
    let mut payload = vec![0x02, 0, 7];
    payload.extend_from_slice(b"connect");
    payload.push(0x00);
    payload.extend_from_slice(&1f64.to_be_bytes());
    payload.extend_from_slice(&nested_amf0(kind, depth));
    payload
}

/// One RTMP message for [`interleaved`].
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// 2 to 63.
    pub csid: u8,
    pub type_id: u8,
    pub timestamp: u32,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Cuts `messages` into chunks of `chunk_size` the way an encoder that interleaves chunk streams does:
/// up to `window` messages on distinct chunk streams in flight, one chunk of each in turn, so that audio
/// goes on while a large keyframe is sent. Messages on one chunk stream stay in order. Every message
/// starts with a full header; timestamps past the 24-bit field use the extended field, repeated in the
/// continuation headers as rml_rtmp and librtmp expect.
pub fn interleaved(messages: &[RawMessage], chunk_size: usize, window: usize) -> Vec<u8> {
    let chunk_size = chunk_size.max(1);
    let mut out = Vec::new();
    let mut pending = messages.iter().peekable();
    // Each message in flight, and how much of it is sent.
    let mut flight: Vec<(&RawMessage, usize)> = Vec::new();
    loop {
        while flight.len() < window.max(1)
            && let Some(next) = pending.peek()
            && !flight.iter().any(|(m, _)| m.csid == next.csid)
        {
            flight.push((next, 0));
            pending.next();
        }
        if flight.is_empty() {
            return out;
        }
        for (m, sent) in flight.iter_mut() {
            let csid = m.csid & 0x3F;
            let extended = m.timestamp >= 0xFF_FFFF;
            if *sent == 0 {
                out.push(csid);
                out.extend_from_slice(&m.timestamp.min(0xFF_FFFF).to_be_bytes()[1..]);
                let len = u32::try_from(m.payload.len()).unwrap_or(u32::MAX).min(0xFF_FFFF);
                out.extend_from_slice(&len.to_be_bytes()[1..]);
                out.push(m.type_id);
                out.extend_from_slice(&m.stream_id.to_le_bytes());
            } else {
                out.push(0xC0 | csid);
            }
            if extended {
                out.extend_from_slice(&m.timestamp.to_be_bytes());
            }
            let end = (*sent + chunk_size).min(m.payload.len());
            out.extend_from_slice(&m.payload[*sent..end]);
            *sent = end;
        }
        flight.retain(|(m, sent)| *sent < m.payload.len());
    }
}

impl Publisher {
    /// Sends FLV tags as an interleaving encoder does (see [`interleaved`]): video on chunk stream 6,
    /// audio on 4, two messages in flight, in chunks of `chunk_size`. Bypasses the session's serializer,
    /// which never interleaves; the session's chunk size (4096) is set again afterwards.
    pub async fn send_interleaved(&mut self, tags: &[Tag], offset_ms: u32, chunk_size: u32) -> Result<(), ClientError> {
        // The same header rml_rtmp's serializer gives its own SetChunkSize, so that the header it
        // compresses its next chunk stream 2 message against is the one the server saw last.
        let set_chunk_size = |size: u32| RawMessage {
            csid: 2,
            type_id: 1,
            timestamp: 0,
            stream_id: 0,
            payload: Bytes::copy_from_slice(&size.to_be_bytes()),
        };
        let mut messages = vec![set_chunk_size(chunk_size)];
        messages.extend(tags.iter().filter_map(|t| {
            let (csid, type_id) = match t.kind {
                TagKind::Video => (6, 9),
                TagKind::Audio => (4, 8),
                TagKind::Script => return None,
            };
            let timestamp = t.timestamp_ms.wrapping_add(offset_ms);
            // rml_rtmp's server gives the first createStream id 1: the publish is on it.
            Some(RawMessage { csid, type_id, timestamp, stream_id: 1, payload: t.body.clone() })
        }));
        let mut bytes = interleaved(&messages, chunk_size as usize, 2);
        bytes.extend(interleaved(&[set_chunk_size(ClientSessionConfig::new().chunk_size)], chunk_size as usize, 1));
        self.poll_incoming()?;
        for part in bytes.chunks(64 * 1024) {
            self.stream.write_all(part).await?;
            self.bytes_sent += part.len() as u64;
            self.poll_incoming()?;
        }
        Ok(())
    }
}
