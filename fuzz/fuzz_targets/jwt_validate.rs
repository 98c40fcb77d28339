#![no_main]
// Harness and invariants: tessera::fuzzing::jwt_validate (shared with tests/it/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera::fuzzing::jwt_validate(data));
