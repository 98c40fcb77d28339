//! Replays the fuzz corpus and every crash the fuzzers ever found (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the same harnesses the `cargo fuzz` targets run
//! (`tessera::fuzzing`), so plain `cargo test` on stable guards them without nightly.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn corpus_and_regressions_replay_without_a_broken_invariant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (target, harness) in tessera::fuzzing::TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(!corpus.is_empty(), "no seed corpus in fuzz/corpus/{target}");
        for file in corpus.iter().chain(&inputs(&root.join("regressions").join(target))) {
            let data = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| harness(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "invariants broken by: {failures:#?}");
}

#[test]
fn every_fuzz_target_has_a_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> =
        inputs(&root).iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
    files.sort();
    let mut names: Vec<String> = tessera::fuzzing::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(files, names, "fuzz/fuzz_targets and tessera::fuzzing::TARGETS must list the same targets");
}

/// The seed tokens must reach the accept path, or the fuzzer only ever explores refusals (this
/// fails if `src/fuzzing_jwks.json` and the seeds stop belonging together).
#[test]
fn seed_tokens_validate_against_the_fixed_bundle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/jwt_validate");
    let td: tessera::testing::TrustDomain = tessera::fuzzing::JWT_TRUST_DOMAIN.parse().unwrap();
    for name in ["valid-daemon-token.txt", "valid-daemon-token-3-audiences.txt"] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let (audience, token) = text.split_once('\n').unwrap();
        let jwks = |t: &tessera::testing::TrustDomain| (t == &td).then(tessera::fuzzing::jwt_bundle);
        let v = tessera::testing::jwt::validate(token, audience, jwks, tessera::testing::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.spiffe_id.to_string(), "spiffe://fuzz.test/agents/seed");
    }
}
