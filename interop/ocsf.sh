#!/usr/bin/env bash
# `tessera audit export --format ocsf` validated against the OCSF 1.8.0 schema: the class JSON
# Schemas come from the PyPI package `ocsf-json-schema` (which embeds the 1.8.0 schema) and are
# checked with `jsonschema`. A real daemon writes the lines: started, attested, issued (a fetch),
# revoked (tessera revoke), refused (a fetch after the revocation).
#
#   interop/ocsf.sh
#
# Prints PASS/FAIL/SKIP lines and "N passed, M failed"; a pip that cannot install the packages
# is a SKIP with the reason.
#
# Environment: TESSERA_INTEROP_CACHE, TESSERA_BIN, PYTHON, KEEP_TMP=1 (as the other scripts).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/interop/ocsf"
CACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
PYTHON=${PYTHON:-python3}
PASS=0 FAIL=0
pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP $*"; }
log() { printf '==> %s\n' "$*" >&2; }
TMP=$(mktemp -d)
DAEMON=
finish() {
  [[ -n $DAEMON ]] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  [[ ${KEEP_TMP:-} == 1 ]] && echo "kept $TMP" || rm -rf "$TMP"
  echo "$PASS passed, $FAIL failed"
  [[ $FAIL == 0 ]]
  exit
}

VENV="$CACHE/venv-ocsf"
REQS="$HERE/requirements.txt"
mkdir -p "$CACHE"
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$REQS" "$VENV/.tessera-requirements"; then
  log "venv $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" \
    && cp "$REQS" "$VENV/.tessera-requirements"
fi
VPY="$VENV/bin/python"
if ! [[ -x $VPY ]] || ! "$VPY" -c 'import jsonschema, ocsf_json_schema' 2>/dev/null; then
  skip "ocsf interop: cannot install $REQS into $VENV"
  finish
fi

if [[ -n ${TESSERA_BIN:-} ]]; then BIN=$TESSERA_BIN; else
  log "cargo build --bin tessera"
  (cd "$ROOT" && cargo build --quiet --bin tessera) || { fail "cargo build"; finish; }
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera"
fi

TD=ocsf.test
AGENT="spiffe://$TD/agent"
cat >"$TMP/tessera.toml" <<TOML
trust_domain = "$TD"
socket_path = "$TMP/api.sock"
admin_socket_path = "$TMP/admin.sock"
data_dir = "$TMP/data"
[[entries]]
spiffe_id = "$AGENT"
selectors = ["unix:uid:$(id -u)"]
TOML
"$BIN" run --config "$TMP/tessera.toml" >"$TMP/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do [[ -S $TMP/api.sock && -S $TMP/admin.sock ]] && break; sleep 0.1; done
[[ -S $TMP/api.sock ]] || { fail "daemon starts ($(tail -3 "$TMP/daemon.log"))"; finish; }
"$BIN" api fetch x509 --silent --socket "$TMP/api.sock" >/dev/null && pass "fetch" || fail "fetch"
"$BIN" revoke --spiffe-id "$AGENT" --reason "ocsf interop" --admin-socket "$TMP/admin.sock" >/dev/null \
  && pass "revoke" || fail "revoke"
sleep 0.5
"$BIN" api fetch x509 --silent --socket "$TMP/api.sock" >/dev/null 2>&1 && fail "refused after revoke" || pass "refused after revoke"
sleep 0.5
"$BIN" audit export --format ocsf "$TMP/data" >"$TMP/ocsf.jsonl" || fail "export"
lines=$(wc -l <"$TMP/data/audit.log") records=$(wc -l <"$TMP/ocsf.jsonl")
[[ $lines == "$records" ]] && pass "one record per audit line ($records)" || fail "records $records != lines $lines"
for ev in started attested issued revoked refused; do
  grep -q "\"event_code\":\"$ev\"" "$TMP/ocsf.jsonl" && pass "a $ev record" || fail "no $ev record"
done
if "$VPY" "$HERE/validate.py" <"$TMP/ocsf.jsonl" >"$TMP/validate.out" 2>&1; then
  pass "every record valid against the OCSF 1.8.0 class JSON Schema"
else
  fail "OCSF schema validation"
fi
sed 's/^/    /' "$TMP/validate.out"
finish
