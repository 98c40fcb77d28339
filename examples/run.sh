#!/usr/bin/env bash
# Run the agent examples against a real tessera daemon.
#
#   examples/run.sh
#
# Builds tessera and the Rust examples (cargo, the repo's target/), installs py-spiffe into the
# venv shared with interop/run.sh (${XDG_CACHE_HOME:-~/.cache}/tessera-interop/venv, created if
# missing), starts `tessera run` on a temporary socket with one entry per agent (the Rust ones
# by executable path, the Python ones by script path), then runs the pairs: Rust↔Rust,
# Python↔Python and both cross pairs must complete mTLS and see each other's SPIFFE ID; a client
# expecting another server ID, and a server not allowing the client's ID, must both refuse.
# Prints one PASS/FAIL line per check and "N passed, M failed"; exits non-zero on any failure.
#
# Environment:
#   TESSERA_INTEROP_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/tessera-interop)
#   PYTHON                 interpreter for the venv (default python3)
#   KEEP_TMP=1             keep the temp dir (config, data, logs)
#
# Then the delegation example (examples/delegation): a Python concierge agent acting for Alice
# (token exchange on the token socket with httpx), a booker agent it hands a narrower token to,
# and a flight API verifying every token with PyJWT against the published JWKS; the booking
# scope waits for `tessera approve`. Its venv (PyJWT, httpx) is venv-delegation in the cache.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/examples"
CACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
PYTHON=${PYTHON:-python3}
TD=examples.test
READY_TIMEOUT=20 # seconds for the daemon / a server to be ready
CLIENT_TIMEOUT=30

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'examples: %s\n' "$*" >&2; echo "0 passed, 1 failed"; exit 1; }

# --- 1. build ----------------------------------------------------------------
log "cargo build --bin tessera --examples"
(cd "$ROOT" && cargo build --quiet --bin tessera --example rust_agent_server --example rust_agent_client) \
  || die "cargo build failed"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
BIN="$TARGET/tessera"
RS_SERVER="$TARGET/examples/rust_agent_server"
RS_CLIENT="$TARGET/examples/rust_agent_client"
for b in "$BIN" "$RS_SERVER" "$RS_CLIENT"; do [[ -x $b ]] || die "missing $b"; done

# The same venv and requirements as interop/run.sh (which rebuilds the venv when they differ).
VENV="$CACHE/venv"
REQS="$ROOT/interop/python/requirements.txt"
STAMP="$VENV/.tessera-requirements"
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$REQS" "$STAMP"; then
  log "py-spiffe venv in $VENV"
  mkdir -p "$CACHE"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" \
    || die "pip install -r $REQS failed"
  cp "$REQS" "$STAMP"
fi
PY="$VENV/bin/python"
"$PY" -c 'import spiffe, cryptography' || die "py-spiffe does not import from $VENV"
PY_SERVER="$HERE/python-agents/server.py"
PY_CLIENT="$HERE/python-agents/client.py"

# The delegation example's venv (PyJWT, httpx), rebuilt when its requirements change.
DVENV="$CACHE/venv-delegation"
DREQS="$HERE/delegation/requirements.txt"
if [[ ! -x $DVENV/bin/python ]] || ! cmp -s "$DREQS" "$DVENV/.tessera-requirements"; then
  log "delegation venv in $DVENV"
  mkdir -p "$CACHE"
  rm -rf "$DVENV"
  "$PYTHON" -m venv "$DVENV" || die "cannot create a venv with $PYTHON"
  "$DVENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$DREQS" \
    || die "pip install -r $DREQS failed"
  cp "$DREQS" "$DVENV/.tessera-requirements"
fi
DPY="$DVENV/bin/python"
"$DPY" -c 'import jwt, httpx' || die "PyJWT/httpx do not import from $DVENV"
DLG="$HERE/delegation"
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# --- 2. the daemon -------------------------------------------------------------
# /tmp rather than $TMPDIR: a Unix socket path must stay under 108 bytes.
TMP=$(mktemp -d /tmp/tessera-examples.XXXXXX)
SOCK="$TMP/api.sock"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ ${KEEP_TMP:-} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

U=$(id -u)
ISSUER="https://tessera.$TD"
"$DPY" "$DLG/idp.py" keygen "$TMP" || die "idp.py keygen failed"
cat >"$TMP/tessera.toml" <<TOML
trust_domain = "$TD"
socket_path = "$SOCK"
data_dir = "$TMP/data"
jwt_issuer = "$ISSUER"

# Delegation (examples/delegation): Alice's IdP, the concierge acting for her, the booker it hands
# work to. Agents are attested by their script's digest.
[[delegation.issuers]]
issuer = "https://idp.example.com"
jwks_path = "$TMP/idp-jwks.json"
audience = "tessera"

[[entries]]
spiffe_id = "spiffe://$TD/agents/concierge"
selectors = ["unix:uid:$U", "script:sha256:$(sha256 "$DLG/concierge.py")"]
[entries.delegation]
from = ["https://idp.example.com"]
scopes = ["flight:search", "flight:reserve", "booking:create"]
audiences = ["https://api.flights.example", "$ISSUER"]
max_ttl = "5m"
max_depth = 1
approval = ["booking:create"]

[[entries]]
spiffe_id = "spiffe://$TD/agents/booker"
selectors = ["unix:uid:$U", "script:sha256:$(sha256 "$DLG/booker.py")"]
[entries.delegation]
from = ["spiffe://$TD/agents/concierge"]
scopes = ["flight:search", "flight:reserve"]
audiences = ["https://api.flights.example"]
max_ttl = "2m"
max_depth = 2

[[entries]]
spiffe_id = "spiffe://$TD/agents/rust-server"
selectors = ["unix:uid:$U", "unix:path:$RS_SERVER"]

[[entries]]
spiffe_id = "spiffe://$TD/agents/rust-client"
selectors = ["unix:uid:$U", "unix:path:$RS_CLIENT"]

[[entries]]
spiffe_id = "spiffe://$TD/agents/py-server"
selectors = ["unix:uid:$U", "script:path:$PY_SERVER"]

[[entries]]
spiffe_id = "spiffe://$TD/agents/py-client"
selectors = ["unix:uid:$U", "script:path:$PY_CLIENT"]
TOML

log "tessera run --config $TMP/tessera.toml"
"$BIN" run --config "$TMP/tessera.toml" >"$TMP/daemon.log" 2>&1 </dev/null &
DAEMON_PID=$!
PIDS+=("$DAEMON_PID")
if ! "$PY" "$ROOT/interop/wait_socket.py" "$SOCK" "$DAEMON_PID" "$READY_TIMEOUT"
then
  cat "$TMP/daemon.log" >&2
  die "tessera did not become ready"
fi

# --- 3. servers ------------------------------------------------------------------
# start_server NAME CMD... : run in the background, wait for its "ready HOST:PORT" line.
declare -A ADDR
start_server() {
  local name=$1 out="$TMP/$1.out"
  shift
  "$@" >"$out" 2>"$TMP/$name.err" </dev/null &
  local pid=$!
  PIDS+=("$pid")
  local deadline=$((SECONDS + READY_TIMEOUT))
  until grep -q '^ready ' "$out" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      sed "s/^/  $name: /" "$TMP/$name.err" >&2
      die "server $name exited before it was ready"
    fi
    ((SECONDS < deadline)) || die "server $name not ready within ${READY_TIMEOUT}s"
    sleep 0.05
  done
  ADDR[$name]=$(awk '/^ready /{print $2; exit}' "$out")
  log "$name: $(grep -m1 '^ready ' "$out")"
}

ID() { echo "spiffe://$TD/agents/$1"; }
export RUST_BACKTRACE=0
start_server rust-server "$RS_SERVER" --socket "$SOCK" --allow "$(ID rust-client)" --allow "$(ID py-client)"
start_server py-server "$PY" "$PY_SERVER" --socket "$SOCK" --allow "$(ID py-client)" --allow "$(ID rust-client)"
# Servers that admit only the *other* language's client, to see a server-side refusal.
start_server rust-server-strict "$RS_SERVER" --socket "$SOCK" --allow "$(ID py-client)"
start_server py-server-strict "$PY" "$PY_SERVER" --socket "$SOCK" --allow "$(ID rust-client)"

# --- 4. clients ---------------------------------------------------------------------
PASSED=0
FAILED=0
pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }

rs_client() { RUST_BACKTRACE=0 timeout "$CLIENT_TIMEOUT" "$RS_CLIENT" --socket "$SOCK" "$@"; }
py_client() { timeout "$CLIENT_TIMEOUT" "$PY" "$PY_CLIENT" --socket "$SOCK" "$@"; }

# expect_ok NAME CLIENT SERVER_NAME SERVER_ID CLIENT_ID
expect_ok() {
  local name=$1 client=$2 server=$3 sid=$4 cid=$5 out status=0
  out=$($client --connect "${ADDR[$server]}" --server-id "$sid" --message "$name" 2>"$TMP/client.err") || status=$?
  if [[ $status -eq 0 && $out == "hello $cid: $name" ]]; then
    pass "$name: $out"
  else
    fail "$name: exit $status, got '${out}' $(tr '\n' ' ' <"$TMP/client.err")"
  fi
}

# expect_refused NAME SERVER_NAME (server-side refusal is logged by that server) CLIENT ARGS...
expect_refused() {
  local name=$1 server=$2 client=$3 out status=0
  shift 3
  out=$($client --connect "${ADDR[$server]}" "$@" --message "$name" 2>"$TMP/client.err") || status=$?
  if [[ $status -ne 0 ]]; then
    pass "$name: refused ($(grep -v '^[[:space:]]*$' "$TMP/client.err" | tr -s '\n ' ' ' | cut -c1-200))"
  else
    fail "$name: expected a refusal, got '$out'"
  fi
}

expect_ok "rust->rust" rs_client rust-server "$(ID rust-server)" "$(ID rust-client)"
expect_ok "python->python" py_client py-server "$(ID py-server)" "$(ID py-client)"
expect_ok "python->rust" py_client rust-server "$(ID rust-server)" "$(ID py-client)"
expect_ok "rust->python" rs_client py-server "$(ID py-server)" "$(ID rust-client)"

# A client refuses a server whose ID it was not told to trust.
expect_refused "rust client refuses unexpected server ID" rust-server rs_client --server-id "$(ID billing)"
expect_refused "python client refuses unexpected server ID" py-server py_client --server-id "$(ID billing)"
# A server refuses a client whose ID it does not allow (and says so in its log).
expect_refused "rust server refuses rust-client" rust-server-strict rs_client --server-id "$(ID rust-server)"
expect_refused "python server refuses py-client" py-server-strict py_client --server-id "$(ID py-server)"
for s in rust-server-strict py-server-strict; do
  if grep -q '^refused ' "$TMP/$s.err"; then
    pass "$s logged: $(grep -m1 '^refused ' "$TMP/$s.err" | cut -c1-160)"
  else
    fail "$s did not log a refusal"
  fi
done

# --- 5. delegation: Alice's concierge searches, hands a narrower token to the booker, and books
# after a human approves (examples/delegation/README.md).
start_server flights-api "$DPY" "$DLG/flights_api.py" --token-socket "$TMP/token.sock" --issuer "$ISSUER/delegation"
"$DPY" "$DLG/idp.py" token "$TMP" alice "flight:search flight:reserve booking:create" >"$TMP/alice.jwt" \
  || die "idp.py token failed"
"$DPY" "$DLG/concierge.py" --token-socket "$TMP/token.sock" --issuer "$ISSUER" --api "${ADDR[flights-api]}" \
  --user-token "$TMP/alice.jwt" >"$TMP/concierge.out" 2>"$TMP/concierge.err" </dev/null &
CONCIERGE=$!
PIDS+=("$CONCIERGE")
deadline=$((SECONDS + CLIENT_TIMEOUT))
until grep -q '^pending ' "$TMP/concierge.out" 2>/dev/null || ! kill -0 "$CONCIERGE" 2>/dev/null; do
  ((SECONDS < deadline)) || break
  sleep 0.1
done
APPROVAL=$(awk '/^pending /{print $2; exit}' "$TMP/concierge.out")
if [[ -n $APPROVAL ]] && "$BIN" approvals --admin-socket "$TMP/admin.sock" | grep -q "$APPROVAL.*user=alice"; then
  pass "delegation: booking:create waits for a human ($APPROVAL listed by tessera approvals)"
else
  fail "delegation: no pending approval listed"
fi
if [[ -n $APPROVAL ]] && "$BIN" approve "$APPROVAL" --admin-socket "$TMP/admin.sock" >"$TMP/approve.out" 2>&1; then
  pass "delegation: $(cat "$TMP/approve.out")"
else
  fail "delegation: tessera approve failed: $(cat "$TMP/approve.out" 2>/dev/null)"
fi
wait "$CONCIERGE" 2>/dev/null || true
C="$TMP/concierge.out"
check() { # check NAME PATTERN FILE
  if grep -qE "$2" "$3"; then pass "delegation: $1"; else fail "delegation: $1 (no /$2/ in $(basename "$3"))"; fi
}
check "concierge searched as alice" "^search 200 .*'user': 'alice'.*'chain': \['spiffe://$TD/agents/concierge'\]" "$C"
check "a search token cannot book (scope enforced by PyJWT-verifying API)" "^book-with-search-token 403" "$C"
check "booker reserved for alice, chain booker <- concierge" \
  "^reserve 200 .*'chain': \['spiffe://$TD/agents/booker', 'spiffe://$TD/agents/concierge'\]" "$C"
check "booker cannot widen to booking:create" "^booker-widen invalid_scope" "$C"
check "concierge booked after approval" "^book 200 .*'user': 'alice'" "$C"
check "API saw the two-hop chain" "served POST /reservations for alice by spiffe://$TD/agents/booker <- spiffe://$TD/agents/concierge" \
  "$TMP/flights-api.out"
check "API refused the under-scoped token" "refused POST /bookings: insufficient_scope" "$TMP/flights-api.out"
if "$BIN" audit verify "$TMP/data/audit.log" >/dev/null && [[ $(grep -c '"event":"delegation_granted"' "$TMP/data/audit.log") -ge 4 ]] \
  && grep -q '"event":"delegation_approved"' "$TMP/data/audit.log"; then
  pass "delegation: audit chain verifies; grants and the approval are recorded"
else
  fail "delegation: audit log"
fi

if [[ $FAILED -ne 0 ]]; then
  for f in "$TMP"/*.err "$TMP/daemon.log"; do
    echo "--- $(basename "$f") (last 20 lines) ---"
    tail -n 20 "$f" || true
  done
fi
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
