//! The integration tests: one test crate, so the harness in `support` is compiled and linked once.
//! Each module is one area, seen from outside: real sockets, real files, real tools where named.

mod backpressure;
mod bench_tool;
mod binary;
mod callbacks;
mod cluster;
mod console;
mod crash;
mod disk_full;
mod garbage_in;
mod hostile;
mod http_e2e;
mod ingest_e2e;
mod interop;
mod offline;
mod ops;
mod oss_api;
mod pg_outage;
mod s3_e2e;
mod s3_outage;
mod sdk_interop;
mod slow_meta;
mod snapshots;
mod stalled_runtime;
mod storage;
mod support;
mod takeover;
