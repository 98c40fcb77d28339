#![no_main]
// Harness and invariants: tessera::fuzzing::h2_authority (shared with tests/it/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(
    init: tessera::fuzzing::let_hpack_panics_unwind(),
    |data: &[u8]| tessera::fuzzing::h2_authority(data)
);
