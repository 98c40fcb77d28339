#!/usr/bin/env bash
# Fuzz every target for a bounded time; .ci/run calls this.
#
#   fuzz/run.sh [TARGET...]          (default: every target in fuzz/fuzz_targets)
#
# 1. Replays fuzz/regressions/<target>/ and fuzz/corpus/<target>/ through each target.
# 2. Fuzzes each target, one at a time with one job, for FUZZ_SECONDS (default 60) from a copy
#    of the committed corpus, so the tree stays clean unless something crashes.
# A crashing input is copied into fuzz/regressions/<target>/ (commit it with the fix; the stable
# test tests/it/fuzz_regressions.rs replays it from then on) and the script exits non-zero naming it.
# Without a nightly toolchain it prints "SKIP: ..." and exits 0.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_RSS_MB (default 2048), FUZZ_TIMEOUT (seconds per
# input before it counts as a hang, default 10), KEEP_TMP=1 (keep the work dir with the logs).
set -euo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SECS=${FUZZ_SECONDS:-60}
RSS_MB=${FUZZ_RSS_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT:-10}

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "SKIP: no nightly toolchain (cargo fuzz needs one: rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-fuzz --locked" >&2
  cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-fuzz.XXXXXX")
if [[ ${KEEP_TMP:-0} == 1 ]]; then
  echo "==> work dir (kept): $WORK" >&2
else
  trap 'rm -rf "$WORK"' EXIT
fi
# libFuzzer writes fuzz-N.log into the current directory with -jobs: keep it out of the tree.
cd "$WORK"

echo "==> cargo +nightly fuzz build (${TARGETS[*]})" >&2
for t in "${TARGETS[@]}"; do
  cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" "$t"
done

run() { # target, then libFuzzer arguments
  local t=$1
  shift
  mkdir -p "$WORK/artifacts/$t"
  cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "$t" "$@" -- \
    -artifact_prefix="$WORK/artifacts/$t/" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" "${LIBFUZZER_ARGS[@]}"
}

failed=()
for t in "${TARGETS[@]}"; do
  # --- replay: every committed input, nothing generated ---
  replay="$WORK/replay/$t"
  mkdir -p "$replay"
  for d in "$FUZZ_DIR/regressions/$t" "$FUZZ_DIR/corpus/$t"; do
    [[ -d $d ]] && cp -a "$d/." "$replay/"
  done
  n=$(find "$replay" -type f | wc -l)
  echo "==> $t: replaying $n committed inputs" >&2
  LIBFUZZER_ARGS=(-runs=0)
  if ! run "$t" "$replay" >"$WORK/$t.replay.log" 2>&1; then
    tail -n 40 "$WORK/$t.replay.log" >&2
    echo "FAIL: $t: a committed input (fuzz/corpus/$t or fuzz/regressions/$t) breaks an invariant; see above" >&2
    failed+=("$t (replay)")
    continue
  fi

  # --- fuzz from a copy of the corpus ---
  corpus="$WORK/corpus/$t"
  mkdir -p "$corpus"
  cp -a "$FUZZ_DIR/corpus/$t/." "$corpus/"
  echo "==> $t: fuzzing for ${SECS}s" >&2
  LIBFUZZER_ARGS=(-max_total_time="$SECS" -jobs=1 -print_final_stats=1)
  status=0
  run "$t" "$corpus" >"$WORK/$t.fuzz.log" 2>&1 || status=$?
  # With -jobs the worker's output goes to fuzz-0.log in the current directory.
  log="$WORK/$t.fuzz.log"
  if [[ -f $WORK/fuzz-0.log ]]; then
    mv "$WORK/fuzz-0.log" "$WORK/$t.worker.log"
    log="$WORK/$t.worker.log"
  fi
  grep -E '^#[0-9]+ +(DONE|INITED)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added)' \
    "$log" | sed "s/^/    $t: /" >&2 || true
  echo "    $t: corpus after the run: $(find "$corpus" -type f | wc -l) files" >&2
  crashes=$(find "$WORK/artifacts/$t" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \))
  if [[ $status -ne 0 || -n $crashes ]]; then
    tail -n 60 "$log" >&2
    mkdir -p "$FUZZ_DIR/regressions/$t"
    for c in $crashes; do
      cp "$c" "$FUZZ_DIR/regressions/$t/"
      echo "FAIL: $t: crashing input kept as fuzz/regressions/$t/$(basename "$c")" >&2
    done
    [[ -n $crashes ]] || echo "FAIL: $t: cargo fuzz exited with $status and left no input" >&2
    failed+=("$t")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets passed (${SECS}s each)"
