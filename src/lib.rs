//! livechannel: RTMP ingest to keyframe-aligned HLS on an object store.
//!
//! ```text
//! TCP bytes -> rtmp::Connection (task per socket, owns the rml_rtmp ServerSession)
//!    PublishStreamRequested -> publish policy: bucket, signed URL (auth::oss::verify_rtmp), channel record
//!                              in meta (exists or auto-created, enabled), not already live (channels::LiveGuard)
//!    Video/AudioDataReceived { data: Bytes (FLV tag body), timestamp ms }
//! -> ingest::Ingest (sync): flv tag -> media::Frame { dts, pts: Timestamp90k, payload: Bytes slice }
//! -> hls::Segmenter (owns ts::Muxer): TS bytes in ~64 KiB chunks, segment boundaries with 90 kHz durations
//! -> bounded queue (the only queue on the media path; full => the segment being made is dropped whole)
//! -> storage::sink::Sink (task per publish): multipart upload per segment, its meta segment-index row,
//!    then the playlist naming it
//! -> http serves playlists and segments from the same object store (api::oss addresses and authorizes)
//!
//! HTTP control plane: http -> api::oss (address, auth::oss::verify, bucket ACL) -> meta (SQLite),
//!    channels (stats, kick), storage (VOD playlists)
//! ```
//!
//! `flv`, `media`, `ts`, `hls`, `ingest` and `auth` never touch I/O or tokio; `rtmp`, `storage`, `http`,
//! `api`, `meta` and `server` are the async shells around them.

pub mod api;
pub mod auth;
pub mod channels;
pub mod config;
pub mod flv;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod media;
pub mod meta;
pub mod notify;
pub mod rtmp;
pub mod server;
pub mod storage;
pub mod ts;
