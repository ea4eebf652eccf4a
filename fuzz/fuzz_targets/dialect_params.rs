#![no_main]
//! cargo-fuzz target: `livechannel::fuzzing::dialect_params` (the harness and its invariants live there, so the
//! corpus also replays in `cargo test`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| livechannel::fuzzing::dialect_params(data));
