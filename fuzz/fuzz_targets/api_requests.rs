#![no_main]
//! cargo-fuzz target: `livechannel::fuzzing::api_requests` (the harness and its invariants live there, so the
//! corpus also replays in `cargo test`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| livechannel::fuzzing::api_requests(data));
