//! livechannel: RTMP ingest to keyframe-aligned HLS on an object store.
//!
//! ```text
//! TCP bytes -> rtmp::Connection (task per socket, owns the rml_rtmp ServerSession; sniffed on the HTTP port too;
//!    rtmp::guard reads every byte first and refuses what rml_rtmp cannot survive)
//!    PublishStreamRequested -> publish::Session::start:
//!        publish::Policy::authorize (name, signature, ACL) -> channel record (meta) -> Policy::admit
//!        -> channels::claim (one publisher per channel in this process) -> cluster::Cluster::claim (a lease
//!        row: one publisher per channel on every node; the push record opens in the same transaction)
//!        -> publish callbacks (journal)
//!    Video/AudioDataReceived { data: Bytes (FLV tag body), timestamp ms } -> publish::Session::media
//! -> ingest::Ingest (sync): flv tag -> media::Frame { dts, pts: Timestamp90k, payload: Bytes slice }
//! -> hls::Segmenter (owns ts::Muxer): TS bytes in ~64 KiB chunks, segment boundaries with 90 kHz durations
//! -> bounded queue per publish (the only queue on the media path; full => the segment being made is dropped whole);
//!    budget::MediaBudget bounds the bytes of all publishes' queues and uploads together (sheds the biggest)
//! -> storage::sink::Sink (task per publish) asks hls::live::Recorder (sans-I/O: seq, gaps, discontinuities,
//!    window) for effects and carries them out in order: segment upload -> index row -> playlist -> event,
//!    each write only while the channel's lease fence holds
//! -> journal (one task for every channel): index rows and callback events, batched into one metadata
//!    transaction every few ms; the media path hands rows over and never waits for a commit
//! -> notify::sender delivers the outbox rows the journal committed (only to destinations egress allows)
//! publish::Session::media, keyframes of a channel with a Snapshot configuration -> snapshot::Schedule
//!    -> snapshot::pool (bounded queue, never waited on; ffmpeg child processes, JPEG, DestBucket objects,
//!    the index row and its NotifyTopic message in one meta transaction)
//! -> http (transport) -> api::route -> api::{oss, aliyun, huawei, objects} serve players and control calls;
//!    api::ops serves /healthz, /readyz and /metrics
//! cluster::Cluster::run (one task per node): renews this node's leases, kicks, writes live stats, sweeps
//!    the lapsed leases of dead nodes (their PUBLISH_DONE goes to the journal)
//! ```
//!
//! Module graph (an edge points at what a module uses; there are no cycles):
//!
//! ```text
//! leaves:   egress  config(-> egress)  names  wire  reply  media  flv  ts  auth(-> config)  metrics
//!           budget(-> metrics)
//! core:     hls(-> media, ts)  ingest(-> flv, hls, media, ts)
//! state:    meta(-> config)  channels(-> names)  storage(-> config, names, hls)
//! events:   notify(-> meta, auth, config, wire)  journal(-> meta, notify)
//! cluster:  cluster(-> channels, config, journal, meta, notify)
//! snapshot: snapshot(-> flv, media, meta, config, names, notify, storage, wire)
//! shells:   storage::sink(-> budget, channels, hls, journal, meta, notify)  publish(-> auth, channels, cluster, hls,
//!           ingest, journal, meta, storage, budget, snapshot)  rtmp(-> publish)  service(-> meta, channels, cluster, storage,
//!           notify)  api(-> service, reply, meta, channels, cluster, storage, notify)  http(-> api, rtmp,
//!           service)  server(-> everything)
//! ```
//!
//! `flv`, `media`, `ts`, `hls` (with the live recorder), `ingest`, `auth` and `publish::Policy` never touch
//! I/O or tokio; `rtmp`, `publish::Session`, `storage`, `journal`, `http`, `api`, `meta` and `server` are the
//! async shells around them.

pub mod api;
pub mod auth;
pub mod budget;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod flv;
#[doc(hidden)]
pub mod fuzzing;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod journal;
pub mod media;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod publish;
pub mod reply;
pub mod retention;
pub mod rtmp;
pub mod server;
pub mod service;
pub mod slots;
pub mod snapshot;
pub mod storage;
pub mod ts;
pub mod wire;
