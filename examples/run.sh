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
cat >"$TMP/tessera.toml" <<TOML
trust_domain = "$TD"
socket_path = "$SOCK"
data_dir = "$TMP/data"

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

if [[ $FAILED -ne 0 ]]; then
  for f in "$TMP"/*.err "$TMP/daemon.log"; do
    echo "--- $(basename "$f") (last 20 lines) ---"
    tail -n 20 "$f" || true
  done
fi
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
