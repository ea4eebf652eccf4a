//! RTMP chunk reader and input guard: reads every byte from the client, assembles its messages, and
//! refuses the inputs rml_rtmp 0.8 cannot survive, so that a hostile client ends its own connection and
//! nothing else.
//!
//! Audio and video messages never reach rml_rtmp: the reader hands each one over whole as a `Bytes`
//! (one copy per message, into a buffer cut from a pooled block, `blocks`; rml_rtmp's own path costs two
//! copies and six allocations, `cargo bench --bench remux`). Every other message is handed to rml_rtmp
//! re-chunked on its own chunk stream under a full header, so rml_rtmp's header state never depends on
//! chunks it did not see, and
//! it reads one message at a time however the client interleaves its chunk streams. Messages come out
//! in the order they started, as from a client that does not interleave.
//!
//! What rml_rtmp does with hostile inputs, and what the guard checks instead:
//! - its AMF0 decoder recurses once per nested object or array: a `connect` nested a few thousand levels
//!   deep overflows the worker thread's stack, which aborts the whole process (no `catch_unwind` can stop
//!   that). The guard walks AMF0 with an explicit stack and refuses anything nested deeper than
//!   [`MAX_AMF_DEPTH`];
//! - a message's declared length is reserved at its first chunk: the guard caps command and control
//!   messages at [`MAX_COMMAND_BYTES`] always, and media at that size until the client's `connect` is
//!   accepted, then at [`Limits::max_message_bytes`]; all messages in progress together at the same
//!   limit;
//! - a chunk that overruns its message, or a header that changes the length or type of a message in
//!   progress, is refused;
//! - it would remember the last header of every chunk stream id (up to 65,599): the guard allows
//!   [`MAX_CHUNK_STREAMS`];
//! - it indexes a command's first three values, and those of a `@setDataFrame`: the guard refuses
//!   commands and `@setDataFrame`s with fewer;
//! - it ignores commands before `connect`, leaving such a client connected until it times out: the guard
//!   refuses any command before a `connect`;
//! - it keeps an entry per `createStream` until a `deleteStream` of that id: the guard numbers the streams
//!   as rml_rtmp does (1, 2, ...) and allows [`MAX_OPEN_STREAMS`] at a time.
//!
//! Since rml_rtmp no longer sees the bytes, the reader acknowledges them itself (the client's window
//! acknowledgement size, then an acknowledgement each time that many bytes have come). Timestamps follow
//! rml_rtmp's rules (a type 3 header that starts a message repeats the previous delta; extended
//! timestamps). Other panics inside rml_rtmp's handlers are caught per connection by the caller.

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::blocks::Blocks;

/// Deeper AMF0 nesting is refused. Real `connect` objects and `onMetaData` arrays nest one or two levels.
pub const MAX_AMF_DEPTH: usize = 32;
/// AMF0/AMF3 commands and data messages (`connect`, `publish`, `@setDataFrame`) are a few hundred bytes.
pub const MAX_COMMAND_BYTES: u32 = 64 * 1024;
/// Encoders use a handful of chunk stream ids (2 to about 10).
pub const MAX_CHUNK_STREAMS: usize = 64;
/// A publisher creates one message stream; a few more leave room for clients that retry on one
/// connection.
pub const MAX_OPEN_STREAMS: usize = 8;

const INITIAL_CHUNK_SIZE: u32 = 128;
/// rml_rtmp refuses larger chunk sizes (and so does the RTMP specification).
const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;
const WINDOW_ACK_SIZE: u8 = 5;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (audio or video) once the client is connected. Also the most the reader holds for
    /// all the messages in progress together.
    pub max_message_bytes: u32,
}

/// Why the guard closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooDeep {
        type_id: u8,
    },
    TooFewValues {
        values: usize,
    },
    TooLarge {
        type_id: u8,
        length: u32,
        limit: u32,
    },
    TooManyChunkStreams,
    TooManyStreams,
    /// A command other than `connect` before any `connect` (rml_rtmp would ignore it and leave the
    /// connection hanging).
    BeforeConnect,
    NoPreviousHeader {
        csid: u32,
    },
    /// Messages in progress on several chunk streams together declare more than the limit.
    HeldTooMuch {
        limit: u32,
    },
    HeaderChangedMessage {
        csid: u32,
    },
    BadChunkSize(Option<u32>),
    BadExtendedTimestamp {
        csid: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooDeep { type_id } => {
                write!(f, "AMF0 value in a type {type_id} message nests deeper than {MAX_AMF_DEPTH} levels")
            }
            Refusal::TooFewValues { values } => write!(f, "command with {values} AMF0 values (3 needed)"),
            Refusal::TooLarge { type_id, length, limit } => {
                write!(f, "type {type_id} message of {length} bytes exceeds the limit of {limit} bytes")
            }
            Refusal::TooManyChunkStreams => write!(f, "more than {MAX_CHUNK_STREAMS} chunk stream ids"),
            Refusal::BeforeConnect => write!(f, "a command before connect"),
            Refusal::TooManyStreams => {
                write!(f, "more than {MAX_OPEN_STREAMS} message streams open (createStream without deleteStream)")
            }
            Refusal::NoPreviousHeader { csid } => {
                write!(f, "compressed chunk header on chunk stream {csid}, which has no previous header")
            }
            Refusal::HeldTooMuch { limit } => {
                write!(f, "messages in progress on several chunk streams exceed {limit} bytes together")
            }
            Refusal::HeaderChangedMessage { csid } => {
                write!(f, "chunk header on chunk stream {csid} changes the length or type of a message in progress")
            }
            Refusal::BadChunkSize(Some(size)) => write!(f, "invalid chunk size {size}"),
            Refusal::BadChunkSize(None) => write!(f, "SetChunkSize message shorter than 4 bytes"),
            Refusal::BadExtendedTimestamp { csid } => {
                write!(f, "extended timestamp below 0xFFFFFF on chunk stream {csid}")
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// An audio or video message, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub video: bool,
    pub timestamp: u32,
    pub stream_id: u32,
    pub data: Bytes,
}

/// What the reader makes of the client's bytes, whole messages in the order they started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// One whole message for rml_rtmp, as chunks under a full header.
    Session(Vec<u8>),
    Media(Media),
}

/// The last header seen on a chunk stream, as compressed headers inherit it.
#[derive(Debug, Clone, Copy)]
struct Previous {
    csid: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The 24-bit field as sent (0xFFFFFF: extended); a type 3 header starting a message repeats it.
    timestamp_field: u32,
    timestamp: u32,
}

/// A message being received on one chunk stream.
#[derive(Debug)]
struct InProgress {
    csid: u32,
    length: u32,
    type_id: u8,
    /// Its place in the order messages started.
    started: u64,
    payload: BytesMut,
}

/// A whole message waiting for the messages that started before it.
#[derive(Debug)]
struct Done {
    started: u64,
    header: Previous,
    payload: BytesMut,
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Index of its message in `messages` (stable until the chunk ends).
    message: usize,
    header: Previous,
}

pub struct Guard {
    limits: Limits,
    connected: bool,
    chunk_size: u32,
    previous: Vec<Previous>,
    /// Header bytes of the chunk being read (at most 3 + 11 + 4).
    header: Vec<u8>,
    /// Payload bytes left in the current chunk; 0 while reading a header.
    in_chunk: u32,
    chunk: Option<Chunk>,
    /// Messages in progress, at most one per chunk stream.
    messages: Vec<InProgress>,
    /// Whole messages not handed over yet, in the order they started.
    done: Vec<Done>,
    started: u64,
    /// Declared lengths of the messages in progress and waiting, together.
    declared: u64,
    /// The chunk size rml_rtmp reads with: the last SetChunkSize handed to it.
    session_chunk_size: u32,
    /// The id rml_rtmp gives the next `createStream`, and the ids it holds.
    next_stream: u32,
    open_streams: Vec<u32>,
    /// A `connect` command has come (accepted or not yet).
    connect_seen: bool,
    /// The message stream of the latest `publish` command (rml_rtmp's event does not say).
    publish_stream: Option<u32>,
    acks: Acks,
    /// Where message buffers are cut from.
    blocks: Blocks,
}

/// Acknowledgements owed to the client: it sets the window, we acknowledge each window of bytes.
#[derive(Debug, Default)]
struct Acks {
    window: Option<u32>,
    received: u64,
    since: u64,
    due: bool,
}

impl Guard {
    pub fn new(limits: Limits) -> Self {
        Guard {
            limits,
            connected: false,
            chunk_size: INITIAL_CHUNK_SIZE,
            previous: Vec::new(),
            header: Vec::with_capacity(18),
            in_chunk: 0,
            chunk: None,
            messages: Vec::new(),
            done: Vec::new(),
            started: 0,
            declared: 0,
            session_chunk_size: INITIAL_CHUNK_SIZE,
            next_stream: 1,
            open_streams: Vec::new(),
            connect_seen: false,
            publish_stream: None,
            acks: Acks::default(),
            blocks: Blocks::default(),
        }
    }

    /// The client's `connect` was accepted: media messages may now be as large as the limit allows.
    pub fn connected(&mut self) {
        self.connected = true;
        self.connect_seen = true;
    }

    /// The message stream the latest `publish` command came on: its media is the publish's.
    pub fn publish_stream(&self) -> Option<u32> {
        self.publish_stream
    }

    /// The sequence number to acknowledge, once per window of bytes the client asked for (RTMP 5.4.3:
    /// the bytes received so far, modulo 2^32).
    pub fn take_ack(&mut self) -> Option<u32> {
        std::mem::take(&mut self.acks.due).then_some(self.acks.received as u32)
    }

    /// Reads the next bytes from the client, in order, and hands each message that completes to `emit`.
    /// On a refusal, the messages completed before the refused chunk have been emitted (media in them is
    /// kept), and the connection must close.
    pub fn inspect(&mut self, input: &[u8], emit: &mut dyn FnMut(Piece)) -> Result<(), Refusal> {
        self.count_received(input.len());
        let mut at = 0;
        while at < input.len() {
            if self.in_chunk > 0 {
                let take = (self.in_chunk as usize).min(input.len() - at);
                if let Some(chunk) = self.chunk {
                    self.messages[chunk.message].payload.extend_from_slice(&input[at..at + take]);
                }
                at += take;
                // `take` fits in u32: it is at most `in_chunk`.
                self.in_chunk -= take as u32;
                if self.in_chunk == 0 {
                    self.end_of_chunk(emit)?;
                }
                continue;
            }
            self.header.push(input[at]);
            at += 1;
            if self.parse_header()? {
                self.header.clear();
                if self.in_chunk == 0 {
                    self.end_of_chunk(emit)?;
                }
            }
        }
        Ok(())
    }

    /// The messages handed over so far have been handled: the blocks their buffers were cut from go back
    /// to the thread's pool if nothing holds them (`blocks`). Call it before waiting for the next read.
    pub fn release_buffers(&mut self) {
        self.blocks.release();
    }

    /// The fewest bytes the client must still send before the reader can hand over a message it has begun
    /// or owes an acknowledgement: the smallest payload left of the messages in progress (their chunk
    /// headers come on top, so this never overshoots), and the bytes left of the acknowledgement window.
    /// `None` between messages with no window set: how much the next message needs is not known yet.
    pub fn bytes_before_next_message(&self) -> Option<u32> {
        let message = self.messages.iter().map(|m| m.length.saturating_sub(m.payload.len() as u32)).min();
        let ack = self.acks.window.filter(|&w| w > 0).map(|w| {
            // `since` is below the window between reads (it is reset when it reaches it).
            u32::try_from(u64::from(w).saturating_sub(self.acks.since)).unwrap_or(u32::MAX).max(1)
        });
        message.into_iter().chain(ack).min().map(|n| n.max(1))
    }

    fn count_received(&mut self, n: usize) {
        let acks = &mut self.acks;
        acks.received += n as u64;
        acks.since += n as u64;
        if let Some(window) = acks.window
            && window > 0
            && acks.since >= u64::from(window)
        {
            acks.since = 0;
            acks.due = true;
        }
    }

    fn hold_limit(&self) -> u32 {
        if self.connected { self.limits.max_message_bytes } else { MAX_COMMAND_BYTES }
    }

    fn previous(&self, csid: u32) -> Option<Previous> {
        self.previous.iter().find(|p| p.csid == csid).copied()
    }

    /// Parses the header in `self.header` once it is complete and starts its chunk; `Ok(false)` while more
    /// bytes are needed.
    fn parse_header(&mut self) -> Result<bool, Refusal> {
        let h = &self.header;
        let fmt = h[0] >> 6;
        let (csid, basic) = match h[0] & 0x3F {
            0 if h.len() < 2 => return Ok(false),
            0 => (u32::from(h[1]) + 64, 2),
            1 if h.len() < 3 => return Ok(false),
            1 => (u32::from(h[2]) * 256 + u32::from(h[1]) + 64, 3),
            n => (u32::from(n), 1),
        };
        let previous = self.previous(csid);
        if fmt != 0 && previous.is_none() {
            return Err(Refusal::NoPreviousHeader { csid });
        }
        let message_header = [11, 7, 3, 0][usize::from(fmt)];
        if h.len() < basic + message_header {
            return Ok(false);
        }
        let m = &h[basic..basic + message_header];
        let u24 = |b: &[u8]| u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let mut header = previous.unwrap_or(Previous {
            csid,
            length: 0,
            type_id: 0,
            stream_id: 0,
            timestamp_field: 0,
            timestamp: 0,
        });
        if fmt <= 2 {
            header.timestamp_field = u24(&m[0..3]);
        }
        if fmt <= 1 {
            header.length = u24(&m[3..6]);
            header.type_id = m[6];
        }
        if fmt == 0 {
            header.stream_id = u32::from_le_bytes([m[7], m[8], m[9], m[10]]);
        }
        let extended = if header.timestamp_field >= EXTENDED_TIMESTAMP { 4 } else { 0 };
        if h.len() < basic + message_header + extended {
            return Ok(false);
        }
        let at = basic + message_header;
        let extended_value = if extended == 4 { be_u32(&h[at..]) } else { None };
        let in_progress = self.messages.iter().position(|m| m.csid == csid);
        // The extended field only carries values that do not fit in 24 bits; a smaller one is a broken
        // encoder (and rml_rtmp underflowed on it).
        if fmt != 0 && in_progress.is_none() && extended_value.is_some_and(|v| v < EXTENDED_TIMESTAMP) {
            return Err(Refusal::BadExtendedTimestamp { csid });
        }
        if previous.is_none() && self.previous.len() >= MAX_CHUNK_STREAMS {
            return Err(Refusal::TooManyChunkStreams);
        }
        let value = extended_value.unwrap_or(header.timestamp_field);
        header.timestamp = match fmt {
            0 => value,
            1 | 2 => header.timestamp.wrapping_add(value),
            // A type 3 header repeats the previous delta when it starts a message, and nothing when it
            // continues one.
            _ if in_progress.is_none() => header.timestamp.wrapping_add(value),
            _ => header.timestamp,
        };
        let (message, received) = match in_progress {
            Some(i) => {
                let m = &self.messages[i];
                if m.length != header.length || m.type_id != header.type_id {
                    return Err(Refusal::HeaderChangedMessage { csid });
                }
                (i, m.payload.len() as u32)
            }
            None => {
                let limit = self.limit(header.type_id);
                if header.length > limit {
                    return Err(Refusal::TooLarge { type_id: header.type_id, length: header.length, limit });
                }
                self.declared += u64::from(header.length);
                if self.declared > u64::from(self.hold_limit()) && !(self.messages.is_empty() && self.done.is_empty()) {
                    return Err(Refusal::HeldTooMuch { limit: self.hold_limit() });
                }
                // Room for the whole message at once (the limits above bound it), from a shared block.
                let payload = self.blocks.buffer(header.length as usize);
                self.started += 1;
                let (length, type_id, started) = (header.length, header.type_id, self.started);
                self.messages.push(InProgress { csid, length, type_id, started, payload });
                (self.messages.len() - 1, 0)
            }
        };
        // `received` < `length` for a message in progress, so this never underflows.
        self.in_chunk = (header.length - received).min(self.chunk_size);
        self.chunk = Some(Chunk { message, header });
        Ok(true)
    }

    fn limit(&self, type_id: u8) -> u32 {
        if !matches!(type_id, AUDIO | VIDEO) || !self.connected {
            MAX_COMMAND_BYTES
        } else {
            self.limits.max_message_bytes
        }
    }

    /// The chunk being read is complete.
    fn end_of_chunk(&mut self, emit: &mut dyn FnMut(Piece)) -> Result<(), Refusal> {
        let Some(chunk) = self.chunk.take() else {
            return Ok(());
        };
        match self.previous.iter_mut().find(|p| p.csid == chunk.header.csid) {
            Some(p) => *p = chunk.header,
            None => self.previous.push(chunk.header),
        }
        let message = &self.messages[chunk.message];
        if (message.payload.len() as u32) < message.length {
            return Ok(());
        }
        // The last chunk of its message.
        let message = self.messages.swap_remove(chunk.message);
        let header = chunk.header;
        let forward = match message.type_id {
            AUDIO | VIDEO => true,
            type_id => self.complete(type_id, &message.payload, header.stream_id)?,
        };
        if forward {
            let at = self.done.partition_point(|d| d.started < message.started);
            self.done.insert(at, Done { started: message.started, header, payload: message.payload });
        } else {
            self.declared -= u64::from(message.length);
        }
        self.release(emit);
        Ok(())
    }

    /// Hands over the whole messages that no message in progress started before, in the order they
    /// started: as a client that does not interleave would have sent them (an encoder sends audio between
    /// the chunks of a keyframe that it began first, and that is earlier in time).
    fn release(&mut self, emit: &mut dyn FnMut(Piece)) {
        let oldest = self.messages.iter().map(|m| m.started).min().unwrap_or(u64::MAX);
        while self.done.first().is_some_and(|d| d.started < oldest) {
            let done = self.done.remove(0);
            self.declared -= u64::from(done.header.length);
            let header = done.header;
            match header.type_id {
                AUDIO | VIDEO => emit(Piece::Media(Media {
                    video: header.type_id == VIDEO,
                    timestamp: header.timestamp,
                    stream_id: header.stream_id,
                    data: done.payload.freeze(),
                })),
                type_id => {
                    emit(Piece::Session(self.rechunk(&header, &done.payload)));
                    if type_id == SET_CHUNK_SIZE
                        && let Ok(size) = chunk_size(&done.payload)
                    {
                        self.session_chunk_size = size;
                    }
                }
            }
        }
    }

    /// A message for rml_rtmp under a full header (timestamp 0: rml_rtmp does nothing with the timestamps
    /// of control and command messages), cut at the chunk size rml_rtmp is reading with.
    fn rechunk(&self, header: &Previous, payload: &[u8]) -> Vec<u8> {
        let basic = |fmt: u8, out: &mut Vec<u8>| match header.csid {
            csid @ 2..=63 => out.push(fmt << 6 | csid as u8),
            csid @ 64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
            csid => {
                let id = (csid - 64) as u16;
                out.extend_from_slice(&[fmt << 6 | 1, id as u8, (id >> 8) as u8]);
            }
        };
        let size = self.session_chunk_size as usize;
        let mut out = Vec::with_capacity(payload.len() + 16 + payload.len() / size.max(1) * 3);
        basic(0, &mut out);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&header.length.to_be_bytes()[1..]);
        out.push(header.type_id);
        out.extend_from_slice(&header.stream_id.to_le_bytes());
        for (i, part) in payload.chunks(size.max(1)).enumerate() {
            if i > 0 {
                basic(3, &mut out);
            }
            out.extend_from_slice(part);
        }
        out
    }

    /// Checks a whole non-media message and acts on what the reader itself needs from it. Returns
    /// whether rml_rtmp gets it.
    fn complete(&mut self, type_id: u8, payload: &[u8], stream_id: u32) -> Result<bool, Refusal> {
        match type_id {
            // The client's next chunks are cut with it; rml_rtmp gets it in its turn (`release`).
            SET_CHUNK_SIZE => self.chunk_size = chunk_size(payload)?,
            ABORT => {
                // The client gives up a message in progress on that chunk stream.
                if let Some(csid) = be_u32(payload) {
                    // Between chunks (this message's chunk has ended), so no chunk points into `messages`.
                    if let Some(i) = self.messages.iter().position(|m| m.csid == csid) {
                        let dropped = self.messages.swap_remove(i);
                        self.declared -= u64::from(dropped.length);
                    }
                }
            }
            WINDOW_ACK_SIZE => {
                // Ours to answer (rml_rtmp does not see the media bytes it would count).
                if let Some(size) = be_u32(payload) {
                    self.acks.window = Some(size);
                    self.acks.since = 0;
                }
                return Ok(false);
            }
            AMF0_DATA | AMF3_DATA => {
                let values = amf0_values(payload).map_err(|TooDeep| Refusal::TooDeep { type_id })?;
                // rml_rtmp takes the third value of `@setDataFrame` ("onMetaData", then the object) without
                // checking that it is there.
                if let Some(values) = values
                    && values < 3
                    && command_name(payload) == Some(b"@setDataFrame")
                {
                    return Err(Refusal::TooFewValues { values });
                }
            }
            AMF0_COMMAND | AMF3_COMMAND => {
                // rml_rtmp drops one leading zero byte of an "AMF3" command: Flash sends AMF0 in them.
                let body = match payload {
                    [0, rest @ ..] if type_id == AMF3_COMMAND => rest,
                    _ => payload,
                };
                let values = amf0_values(body).map_err(|TooDeep| Refusal::TooDeep { type_id })?;
                if let Some(values) = values
                    && values < 3
                {
                    return Err(Refusal::TooFewValues { values });
                }
                self.count_streams(body)?;
                if command_name(body) == Some(b"publish") {
                    self.publish_stream = Some(stream_id);
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// The big-endian u32 the bytes start with, if there are four.
fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn chunk_size(payload: &[u8]) -> Result<u32, Refusal> {
    let size = be_u32(payload).ok_or(Refusal::BadChunkSize(None))?;
    if size == 0 || size > MAX_CHUNK_SIZE {
        return Err(Refusal::BadChunkSize(Some(size)));
    }
    Ok(size)
}

impl Guard {
    /// Mirrors rml_rtmp's table of message streams. `body` has passed the depth check, so rml_amf0 may
    /// read it.
    fn count_streams(&mut self, body: &[u8]) -> Result<(), Refusal> {
        match command_name(body) {
            Some(b"connect") => self.connect_seen = true,
            _ if !self.connect_seen => return Err(Refusal::BeforeConnect),
            Some(b"createStream") => {
                if self.open_streams.len() >= MAX_OPEN_STREAMS {
                    return Err(Refusal::TooManyStreams);
                }
                self.open_streams.push(self.next_stream);
                self.next_stream = self.next_stream.wrapping_add(1);
            }
            // rml_rtmp ignores a deleteStream before the connection is accepted.
            Some(b"deleteStream") if self.connected => {
                // The same decoding rml_rtmp is about to run on these bytes; a panic in it is caught there
                // too, and here it only means "not a delete".
                let values = std::panic::catch_unwind(|| rml_rtmp::rml_amf0::deserialize(&mut &body[..]));
                if let Ok(Ok(values)) = values
                    && let Some(rml_rtmp::rml_amf0::Amf0Value::Number(id)) = values.get(3)
                {
                    // rml_rtmp's own conversion: `as` saturates and maps NaN to 0.
                    let id = *id as u32;
                    self.open_streams.retain(|&open| open != id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The name of an AMF0 command: its first value, a string.
fn command_name(body: &[u8]) -> Option<&[u8]> {
    let [0x02, hi, lo, rest @ ..] = body else { return None };
    rest.get(..usize::from(u16::from_be_bytes([*hi, *lo])))
}

/// Nesting deeper than [`MAX_AMF_DEPTH`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooDeep;

enum Frame {
    Object,
    Array(u32),
}

enum Value {
    /// End of input, or an object-end marker: rml_amf0 reads "no value".
    None,
    Scalar,
    Opened,
    /// rml_amf0 fails here (unknown marker, truncated number): it never goes deeper.
    Fails,
}

/// Walks AMF0 values exactly as rml_amf0 0.3 reads them, without recursion. Returns how many top-level
/// values it reads, or `None` when it would fail before the end.
pub fn amf0_values(mut input: &[u8]) -> Result<Option<usize>, TooDeep> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut top = 0usize;
    loop {
        let value = match stack.last_mut() {
            None => match read_value(&mut input, &mut stack) {
                Value::None => return Ok(Some(top)),
                Value::Fails => return Ok(None),
                v => {
                    top += 1;
                    v
                }
            },
            Some(Frame::Object) => {
                let Some(label) = take(&mut input, 2) else {
                    return Ok(None);
                };
                let label = usize::from(u16::from_be_bytes([label[0], label[1]]));
                if label == 0 {
                    // rml_amf0 wants the object-end marker here, and fails on anything else.
                    match take(&mut input, 1) {
                        Some([0x09]) => {
                            stack.pop();
                            continue;
                        }
                        _ => return Ok(None),
                    }
                }
                skip(&mut input, label);
                match read_value(&mut input, &mut stack) {
                    Value::None | Value::Fails => return Ok(None),
                    v => v,
                }
            }
            Some(Frame::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Array(left)) => {
                *left -= 1;
                match read_value(&mut input, &mut stack) {
                    Value::None => {
                        stack.pop();
                        continue;
                    }
                    Value::Fails => return Ok(None),
                    v => v,
                }
            }
        };
        if matches!(value, Value::Opened) && stack.len() > MAX_AMF_DEPTH {
            return Err(TooDeep);
        }
    }
}

fn read_value(input: &mut &[u8], stack: &mut Vec<Frame>) -> Value {
    let Some(&[marker]) = take(input, 1) else {
        return Value::None;
    };
    let sized = |input: &mut &[u8], n| if take(input, n).is_some() { Value::Scalar } else { Value::Fails };
    match marker {
        0x00 => sized(input, 8),
        0x01 => sized(input, 1),
        0x05 | 0x06 => Value::Scalar,
        0x02 => match take(input, 2) {
            Some(len) => {
                // rml_amf0 reads "up to" the length: a short string is not an error there.
                skip(input, usize::from(u16::from_be_bytes([len[0], len[1]])));
                Value::Scalar
            }
            None => Value::Fails,
        },
        0x03 => {
            stack.push(Frame::Object);
            Value::Opened
        }
        0x08 => match take(input, 4) {
            Some(_) => {
                stack.push(Frame::Object);
                Value::Opened
            }
            None => Value::Fails,
        },
        0x0A => match take(input, 4) {
            Some(n) => {
                stack.push(Frame::Array(u32::from_be_bytes([n[0], n[1], n[2], n[3]])));
                Value::Opened
            }
            None => Value::Fails,
        },
        0x09 => Value::None,
        _ => Value::Fails,
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn skip(input: &mut &[u8], n: usize) {
    *input = &input[n.min(input.len())..];
}

#[cfg(test)]
mod tests;
