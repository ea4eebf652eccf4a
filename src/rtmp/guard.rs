//! RTMP input guard: reads every byte from the client just before rml_rtmp does, and refuses the inputs
//! rml_rtmp 0.8 cannot survive, so that a hostile client ends its own connection and nothing else.
//!
//! What rml_rtmp does with such inputs, and what the guard checks instead:
//! - its AMF0 decoder recurses once per nested object or array: a `connect` nested a few thousand levels
//!   deep overflows the worker thread's stack, which aborts the whole process (no `catch_unwind` can stop
//!   that). The guard walks AMF0 with an explicit stack and refuses anything nested deeper than
//!   [`MAX_AMF_DEPTH`];
//! - it reserves a message's declared length at its first chunk: the guard caps command messages at
//!   [`MAX_COMMAND_BYTES`] always, and every message at that size until the client's `connect` is
//!   accepted, then at [`Limits::max_message_bytes`];
//! - it subtracts the bytes received from the declared length: the guard refuses a chunk that overruns its
//!   message, and a header that changes the length or type of a message in progress;
//! - it keeps one reassembly buffer for all chunk streams, so chunk streams that interleave (legal, and
//!   what some encoders do: audio between the chunks of a keyframe) would mix their messages. The guard
//!   holds back the chunks of other chunk streams while a message is in progress, and hands each message's
//!   chunks over together, in the order the messages complete, within [`Limits::max_message_bytes`] held.
//!   Input that does not interleave passes as it came, without a copy. A SetChunkSize inside another
//!   message is refused (the chunks around it would be cut differently once reordered);
//! - it remembers the last header of every chunk stream id it has seen (up to 65,599): the guard allows
//!   [`MAX_CHUNK_STREAMS`];
//! - it indexes a command's first three values, and those of a `@setDataFrame`: the guard refuses
//!   commands and `@setDataFrame`s with fewer;
//! - it ignores commands before `connect`, leaving such a client connected until it times out: the guard
//!   refuses any command before a `connect`;
//! - it keeps an entry per `createStream` until a `deleteStream` of that id: the guard numbers the streams
//!   as rml_rtmp does (1, 2, ...) and allows [`MAX_OPEN_STREAMS`] at a time.
//!
//! The guard follows rml_rtmp's own chunk state machine (chunk size changes, fmt 3 extended timestamps),
//! so both read the same message boundaries. It buffers command payloads (small, capped) and interleaved
//! chunks only; other media bytes are counted and passed. Other panics inside rml_rtmp's handlers are caught per connection by the caller.

use std::fmt;

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
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (audio or video) once the client is connected. Also the most the guard holds back
    /// for messages interleaved with the one rml_rtmp is reading.
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
    /// Interleaved messages waiting for the one in progress hold more than the limit.
    HeldTooMuch {
        limit: u32,
    },
    /// A SetChunkSize that ends while another message is in progress or waiting: the chunks around it were
    /// cut with two sizes, and rml_rtmp, reading the messages one after another, would cut them with one.
    ChunkSizeInsideMessage,
    HeaderChangedMessage {
        csid: u32,
    },
    ChunkOverrun {
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
                write!(f, "interleaved messages waiting for the message in progress exceed {limit} bytes")
            }
            Refusal::ChunkSizeInsideMessage => {
                write!(f, "SetChunkSize while a message on another chunk stream is in progress")
            }
            Refusal::HeaderChangedMessage { csid } => {
                write!(f, "chunk header on chunk stream {csid} changes the length or type of a message in progress")
            }
            Refusal::ChunkOverrun { csid } => write!(f, "chunk on chunk stream {csid} overruns its message"),
            Refusal::BadChunkSize(Some(size)) => write!(f, "invalid chunk size {size}"),
            Refusal::BadChunkSize(None) => write!(f, "SetChunkSize message shorter than 4 bytes"),
            Refusal::BadExtendedTimestamp { csid } => {
                write!(f, "extended timestamp below 0xFFFFFF on chunk stream {csid}")
            }
        }
    }
}

impl std::error::Error for Refusal {}

#[derive(Debug, Clone, Copy)]
struct Previous {
    csid: u32,
    length: u32,
    type_id: u8,
    timestamp_field: u32,
}

/// A message being received on one chunk stream.
#[derive(Debug)]
struct InProgress {
    csid: u32,
    length: u32,
    type_id: u8,
    received: u32,
    /// The payload, for commands, data and SetChunkSize messages only (small, capped).
    payload: Vec<u8>,
}

/// Chunks held back from rml_rtmp while it reads a message on another chunk stream.
#[derive(Debug)]
struct Held {
    csid: u32,
    /// The chunks as they came, headers included: rml_rtmp reads them later with the same per-stream
    /// header state, since nothing else on their chunk stream comes between.
    bytes: Vec<u8>,
    started: u64,
    completed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// To rml_rtmp now: the chunk belongs to the message it is reading, or starts one.
    Pass,
    /// Into `held[index]`.
    Hold(usize),
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    header: Previous,
    len: u32,
    /// Index of its message in `messages` (stable until the chunk ends).
    message: usize,
    route: Route,
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
    /// The chunk stream of the message rml_rtmp is in the middle of: rml_rtmp keeps one reassembly
    /// buffer for all chunk streams, so it must see each message's chunks together.
    current: Option<u32>,
    /// Interleaved chunks of other messages, in the order their messages started.
    held: Vec<Held>,
    /// Bytes in `held` and in command payloads.
    buffered: usize,
    sequence: u64,
    /// The id rml_rtmp gives the next `createStream`, and the ids it holds.
    next_stream: u32,
    open_streams: Vec<u32>,
    /// A `connect` command has come (accepted or not yet).
    connect_seen: bool,
}

/// The bytes of one `inspect` call on their way to rml_rtmp: runs of the input passed as they are, and held
/// chunks in between.
struct Out<'a, 'e> {
    input: &'a [u8],
    /// A chunk header that began in an earlier input, for a chunk that passes: it goes before the run.
    header: Option<([u8; 18], usize)>,
    run: Option<usize>,
    emit: &'e mut dyn FnMut(&[u8]),
}

impl Out<'_, '_> {
    fn start(&mut self, at: usize) {
        self.run.get_or_insert(at);
    }

    fn pend_header(&mut self, header: &[u8]) {
        let mut copy = [0; 18];
        copy[..header.len()].copy_from_slice(header);
        self.header = Some((copy, header.len()));
    }

    /// Passes the pending header and the run up to `end` (exclusive).
    fn flush(&mut self, end: usize) {
        if let Some((header, len)) = self.header.take() {
            (self.emit)(&header[..len]);
        }
        if let Some(start) = self.run.take()
            && end > start
        {
            (self.emit)(&self.input[start..end]);
        }
    }

    fn piece(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            (self.emit)(bytes);
        }
    }
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
            current: None,
            held: Vec::new(),
            buffered: 0,
            sequence: 0,
            next_stream: 1,
            open_streams: Vec::new(),
            connect_seen: false,
        }
    }

    /// The client's `connect` was accepted: media messages may now be as large as the limit allows.
    pub fn connected(&mut self) {
        self.connected = true;
        self.connect_seen = true;
    }

    /// Inspects the next bytes from the client, in order, and hands what rml_rtmp may read to `emit`: the
    /// input itself while chunk streams do not interleave (no copy), otherwise each message's chunks
    /// together, in the order the messages complete. On a refusal, everything before the refused chunk
    /// has been emitted (media in it is kept), and the connection must close.
    pub fn inspect(&mut self, input: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), Refusal> {
        // The payload of a chunk that passes goes on from where the last input ended.
        let passing = self.in_chunk > 0 && self.chunk.is_some_and(|c| c.route == Route::Pass);
        let mut out = Out { input, header: None, run: passing.then_some(0), emit };
        let mut at = 0;
        let mut chunk_start = 0;
        // Whether the header being read began in this input (its bytes are then in `input` too).
        let mut header_here = false;
        let result = (|| {
            while at < input.len() {
                if self.in_chunk > 0 {
                    let take = (self.in_chunk as usize).min(input.len() - at);
                    self.payload(&input[at..at + take])?;
                    at += take;
                    // `take` fits in u32: it is at most `in_chunk`.
                    self.in_chunk -= take as u32;
                    if self.in_chunk == 0 {
                        self.end_of_chunk(at, &mut out)?;
                    }
                    continue;
                }
                if self.header.is_empty() {
                    chunk_start = at;
                    header_here = true;
                }
                self.header.push(input[at]);
                at += 1;
                let Some(route) = self.parse_header()? else { continue };
                match route {
                    Route::Pass if header_here => out.start(chunk_start),
                    Route::Pass => {
                        out.pend_header(&self.header);
                        out.start(at);
                    }
                    Route::Hold(index) => {
                        out.flush(chunk_start);
                        let header = std::mem::take(&mut self.header);
                        let held = self.hold(index, &header);
                        self.header = header;
                        held?;
                    }
                }
                self.header.clear();
                if self.in_chunk == 0 {
                    self.end_of_chunk(at, &mut out)?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                // A header still incomplete waits for its chunk stream to be known.
                let end = if self.header.is_empty() || !header_here { input.len() } else { chunk_start };
                out.flush(end);
                Ok(())
            }
            Err(refusal) => {
                // The refused chunk's header came in an earlier input: none of it may go on.
                if !header_here {
                    out.header = None;
                }
                out.flush(chunk_start);
                Err(refusal)
            }
        }
    }

    fn hold_limit(&self) -> usize {
        let limit = if self.connected { self.limits.max_message_bytes } else { MAX_COMMAND_BYTES };
        limit as usize
    }

    fn count(&mut self, bytes: usize) -> Result<(), Refusal> {
        self.buffered += bytes;
        if self.buffered > self.hold_limit() {
            return Err(Refusal::HeldTooMuch { limit: self.hold_limit() as u32 });
        }
        Ok(())
    }

    fn hold(&mut self, index: usize, bytes: &[u8]) -> Result<(), Refusal> {
        self.held[index].bytes.extend_from_slice(bytes);
        self.count(bytes.len())
    }

    /// Payload bytes of the current chunk.
    fn payload(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let Some(chunk) = self.chunk else { return Ok(()) };
        let message = &mut self.messages[chunk.message];
        if buffered(message.type_id) {
            message.payload.extend_from_slice(bytes);
            self.count(bytes.len())?;
        }
        if let Route::Hold(index) = chunk.route {
            self.hold(index, bytes)?;
        }
        Ok(())
    }

    fn previous(&self, csid: u32) -> Option<Previous> {
        self.previous.iter().find(|p| p.csid == csid).copied()
    }

    /// Parses the header in `self.header` once it is complete, and says where its chunk goes; `Ok(None)`
    /// while more bytes are needed.
    fn parse_header(&mut self) -> Result<Option<Route>, Refusal> {
        let h = &self.header;
        let fmt = h[0] >> 6;
        let (csid, basic) = match h[0] & 0x3F {
            0 if h.len() < 2 => return Ok(None),
            0 => (u32::from(h[1]) + 64, 2),
            1 if h.len() < 3 => return Ok(None),
            1 => (u32::from(h[2]) * 256 + u32::from(h[1]) + 64, 3),
            n => (u32::from(n), 1),
        };
        let previous = self.previous(csid);
        if fmt != 0 && previous.is_none() {
            return Err(Refusal::NoPreviousHeader { csid });
        }
        let message_header = [11, 7, 3, 0][usize::from(fmt)];
        if h.len() < basic + message_header {
            return Ok(None);
        }
        let m = &h[basic..basic + message_header];
        let u24 = |b: &[u8]| u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let mut header = previous.unwrap_or(Previous { csid, length: 0, type_id: 0, timestamp_field: 0 });
        if fmt <= 2 {
            header.timestamp_field = u24(&m[0..3]);
        }
        if fmt <= 1 {
            header.length = u24(&m[3..6]);
            header.type_id = m[6];
        }
        let extended = if header.timestamp_field >= EXTENDED_TIMESTAMP { 4 } else { 0 };
        if h.len() < basic + message_header + extended {
            return Ok(None);
        }
        let at = basic + message_header;
        let extended_value = (extended == 4).then(|| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]));
        let in_progress = self.messages.iter().position(|m| m.csid == csid);
        // rml_rtmp subtracts 0xFFFFFF from the extended timestamp of a compressed header that starts a
        // message: a smaller one (invalid: the field only extends values that do not fit) underflows.
        if fmt != 0 && in_progress.is_none() && extended_value.is_some_and(|v| v < EXTENDED_TIMESTAMP) {
            return Err(Refusal::BadExtendedTimestamp { csid });
        }
        if previous.is_none() && self.previous.len() >= MAX_CHUNK_STREAMS {
            return Err(Refusal::TooManyChunkStreams);
        }
        let (message, received) = match in_progress {
            Some(i) => {
                let m = &self.messages[i];
                if m.length != header.length || m.type_id != header.type_id {
                    return Err(Refusal::HeaderChangedMessage { csid });
                }
                (i, m.received)
            }
            None => {
                let limit = self.limit(header.type_id);
                if header.length > limit {
                    return Err(Refusal::TooLarge { type_id: header.type_id, length: header.length, limit });
                }
                let m = InProgress {
                    csid,
                    length: header.length,
                    type_id: header.type_id,
                    received: 0,
                    payload: Vec::new(),
                };
                self.messages.push(m);
                (self.messages.len() - 1, 0)
            }
        };
        // rml_rtmp reads the whole declared length as one chunk when it fits the chunk size, whatever it
        // has received already; a chunk that would take it past the length breaks its arithmetic.
        let len = if header.length > self.chunk_size {
            (header.length - received).min(self.chunk_size)
        } else {
            header.length
        };
        if received.checked_add(len).is_none_or(|end| end > header.length) {
            return Err(Refusal::ChunkOverrun { csid });
        }
        let route = match self.current {
            None => {
                self.current = Some(csid);
                Route::Pass
            }
            Some(current) if current == csid => Route::Pass,
            Some(_) => Route::Hold(self.held_for(csid)),
        };
        self.in_chunk = len;
        self.chunk = Some(Chunk { header, len, message, route });
        Ok(Some(route))
    }

    /// The held entry that `csid`'s next chunk joins: its message's, or a new one.
    fn held_for(&mut self, csid: u32) -> usize {
        if let Some(i) = self.held.iter().rposition(|h| h.csid == csid && h.completed.is_none()) {
            return i;
        }
        self.sequence += 1;
        self.held.push(Held { csid, bytes: Vec::new(), started: self.sequence, completed: None });
        self.held.len() - 1
    }

    fn limit(&self, type_id: u8) -> u32 {
        if is_command(type_id) || !self.connected { MAX_COMMAND_BYTES } else { self.limits.max_message_bytes }
    }

    /// The chunk ending at `at` in this input is complete.
    fn end_of_chunk(&mut self, at: usize, out: &mut Out<'_, '_>) -> Result<(), Refusal> {
        let Some(chunk) = self.chunk.take() else {
            return Ok(());
        };
        match self.previous.iter_mut().find(|p| p.csid == chunk.header.csid) {
            Some(p) => *p = chunk.header,
            None => self.previous.push(chunk.header),
        }
        let message = &mut self.messages[chunk.message];
        message.received += chunk.len;
        if message.received < message.length {
            return Ok(());
        }
        let message = self.messages.swap_remove(chunk.message);
        self.buffered -= message.payload.len();
        match chunk.route {
            Route::Pass => self.current = None,
            Route::Hold(index) => {
                self.sequence += 1;
                self.held[index].completed = Some(self.sequence);
            }
        }
        if message.type_id == SET_CHUNK_SIZE && (!self.messages.is_empty() || !self.held.is_empty()) {
            return Err(Refusal::ChunkSizeInsideMessage);
        }
        self.complete(message.type_id, &message.payload)?;
        if chunk.route == Route::Pass {
            out.flush(at);
            self.release(out);
        }
        Ok(())
    }

    /// rml_rtmp has read a whole message: the held messages that completed meanwhile follow, in the
    /// order they completed, then the oldest one still in progress, which becomes the current one.
    fn release(&mut self, out: &mut Out<'_, '_>) {
        while let Some(i) =
            (0..self.held.len()).filter(|&i| self.held[i].completed.is_some()).min_by_key(|&i| self.held[i].completed)
        {
            let held = self.held.remove(i);
            self.buffered -= held.bytes.len();
            out.piece(&held.bytes);
        }
        if let Some(i) = (0..self.held.len()).min_by_key(|&i| self.held[i].started) {
            let held = self.held.remove(i);
            self.buffered -= held.bytes.len();
            out.piece(&held.bytes);
            self.current = Some(held.csid);
        }
    }

    fn complete(&mut self, type_id: u8, payload: &[u8]) -> Result<(), Refusal> {
        match type_id {
            SET_CHUNK_SIZE => {
                let Some(size) = payload.get(..4) else {
                    return Err(Refusal::BadChunkSize(None));
                };
                let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(Refusal::BadChunkSize(Some(size)));
                }
                self.chunk_size = size;
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
            }
            _ => {}
        }
        Ok(())
    }
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

/// Messages whose payload the guard reads.
fn buffered(type_id: u8) -> bool {
    is_command(type_id) || type_id == SET_CHUNK_SIZE
}

fn is_command(type_id: u8) -> bool {
    matches!(type_id, AMF0_COMMAND | AMF3_COMMAND | AMF0_DATA | AMF3_DATA)
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
