#![no_main]
// Harness and invariants: tessera::fuzzing::script_argv (shared with tests/it/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera::fuzzing::script_argv(data));
