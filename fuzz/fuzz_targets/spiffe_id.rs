#![no_main]
// Harness and invariants: tessera::fuzzing::spiffe_id (shared with tests/it/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera::fuzzing::spiffe_id(data));
