#!/usr/bin/env bash
# tessera interop check: unmodified py-spiffe and go-spiffe clients against a
# real tessera daemon.
#
#   interop/run.sh
#
# Builds tessera (cargo, the repo's target/), installs py-spiffe into a venv and
# builds the go-spiffe client (both in a cache dir outside the repo), starts
# `tessera run` on a temporary socket with one entry for the current uid, and
# has each client fetch an X.509-SVID, a JWT-SVID and the bundles, verify them,
# and call ValidateJWTSVID, then reads /metrics with prometheus_client's parsers
# (metrics_check.py). Prints one PASS/FAIL line per check and ends with
# "N passed, M failed"; exits non-zero on any failure.
#
# Environment:
#   TESSERA_INTEROP_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/tessera-interop)
#   TESSERA_BIN            use this tessera binary instead of building one
#   PYTHON                 interpreter for the venv (default python3)
#   KEEP_TMP=1             keep the temp dir (config, data, daemon log)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/interop"
CACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
PYTHON=${PYTHON:-python3}
TRUST_DOMAIN=interop.test
SPIFFE_ID="spiffe://$TRUST_DOMAIN/client/uid"
READY_TIMEOUT=10   # seconds for the daemon to accept connections
CLIENT_TIMEOUT=120 # seconds for each client as a whole

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'interop: %s\n' "$*" >&2; echo "0 passed, 1 failed"; exit 1; }

mkdir -p "$CACHE/bin"

# --- 1. build --------------------------------------------------------------
if [[ -n ${TESSERA_BIN:-} ]]; then
  BIN=$TESSERA_BIN
else
  log "cargo build --bin tessera"
  (cd "$ROOT" && cargo build --quiet --bin tessera) || die "cargo build failed"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera"
fi
[[ -x $BIN ]] || die "no tessera binary at $BIN"

VENV="$CACHE/venv"
REQS="$HERE/python/requirements.txt"
STAMP="$VENV/.tessera-requirements"
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$REQS" "$STAMP"; then
  log "py-spiffe venv in $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" \
    || die "pip install -r $REQS failed"
  cp "$REQS" "$STAMP"
fi
PY_VERSIONS=$("$VENV/bin/python" -c 'import importlib.metadata as m; print("spiffe", m.version("spiffe"), "grpcio", m.version("grpcio"), "prometheus_client", m.version("prometheus_client"))') \
  || die "py-spiffe does not import from $VENV"

log "go build interop/go"
GO_BIN="$CACHE/bin/interop-go"
(cd "$HERE/go" && GOFLAGS=-mod=readonly go build -o "$GO_BIN" .) || die "go build failed"
GO_VERSIONS=$(cd "$HERE/go" && go list -m -f '{{.Path}} {{.Version}}' github.com/spiffe/go-spiffe/v2)

# --- 2. start the daemon -----------------------------------------------------
# /tmp rather than $TMPDIR: a Unix socket path must stay under 108 bytes.
TMP=$(mktemp -d /tmp/tessera-interop.XXXXXX)
SOCK="$TMP/api.sock"
DAEMON_LOG="$TMP/daemon.log"
DAEMON_PID=

cleanup() {
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  if [[ ${KEEP_TMP:-} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port for the telemetry listener (/metrics, /live, /ready).
METRICS_PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$TMP/tessera.toml" <<EOF
trust_domain = "$TRUST_DOMAIN"
socket_path = "$SOCK"
data_dir = "$TMP/data"

[telemetry]
listen = "127.0.0.1:$METRICS_PORT"

[[entries]]
spiffe_id = "$SPIFFE_ID"
selectors = ["unix:uid:$(id -u)"]
EOF

log "tessera run --config $TMP/tessera.toml"
"$BIN" run --config "$TMP/tessera.toml" >"$DAEMON_LOG" 2>&1 </dev/null &
DAEMON_PID=$!

# Poll until the socket accepts a connection (or the daemon dies): no fixed sleeps.
if ! "$VENV/bin/python" "$HERE/wait_socket.py" "$SOCK" "$DAEMON_PID" "$READY_TIMEOUT"
then
  echo "--- daemon log ---" >&2; cat "$DAEMON_LOG" >&2
  die "tessera did not become ready"
fi
log "daemon ready (pid $DAEMON_PID); clients: $PY_VERSIONS; $GO_VERSIONS"

# --- 3. the clients ----------------------------------------------------------
PASSED=0
FAILED=0
count() { # count NAME EXIT_STATUS OUTPUT
  local name=$1 status=$2 out=$3 p f
  p=$(grep -c '^PASS ' <<<"$out" || true)
  f=$(grep -c '^FAIL ' <<<"$out" || true)
  if [[ $status -ne 0 && $f -eq 0 ]]; then
    echo "FAIL $name: client exited with status $status"
    f=1
  fi
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
}

run_client() { # run_client NAME CMD...
  local name=$1 out status=0
  shift
  out=$(timeout "$CLIENT_TIMEOUT" "$@" 2>"$TMP/$name.stderr") || status=$?
  if [[ -n $out ]]; then printf '%s\n' "$out"; fi
  if [[ $status -ne 0 && -s $TMP/$name.stderr ]]; then
    sed "s/^/  $name stderr: /" "$TMP/$name.stderr" | tail -n 20
  fi
  count "$name" "$status" "$out"
}

run_client python "$VENV/bin/python" "$HERE/python/check.py" \
  --socket "$SOCK" --id "$SPIFFE_ID" --audience interop-python
run_client go "$GO_BIN" -socket "$SOCK" -id "$SPIFFE_ID" -audience interop-go
# After the clients: /metrics parsed by prometheus_client (OpenMetrics and classic text), counters
# moved by the fetches above and by one more fetch and one refusal.
run_client metrics "$VENV/bin/python" "$HERE/python/metrics_check.py" \
  --url "http://127.0.0.1:$METRICS_PORT" --admin-socket "$TMP/admin.sock" --socket "$SOCK" --id "$SPIFFE_ID"

# spire-agent's own CLI as a client, when a spire-agent binary is at hand (bench/install-spire puts
# one in its cache; set SPIRE_AGENT to use another). Building SPIRE is too slow for CI, so this is
# skipped, and says so, when none is installed.
SPIRE_AGENT=${SPIRE_AGENT:-${TESSERA_BENCH_CACHE:-$HOME/.cache/tessera-bench}/bin/spire-agent}
if [[ -x $SPIRE_AGENT ]]; then
  spire_checks() {
    local out token
    if out=$("$SPIRE_AGENT" api fetch x509 -socketPath "$SOCK" 2>&1) && grep -q "SPIFFE ID:.*$SPIFFE_ID" <<<"$out"; then
      echo "PASS spire-agent api fetch x509 $SPIFFE_ID"
    else echo "FAIL spire-agent api fetch x509: $out"; fi
    out=$("$SPIRE_AGENT" api fetch jwt -audience interop-spire -socketPath "$SOCK" 2>&1) || true
    token=$(sed -n 2p <<<"$out" | tr -d '[:space:]')
    if [[ $token == ey* ]]; then echo "PASS spire-agent api fetch jwt"; else echo "FAIL spire-agent api fetch jwt: $out"; fi
    if out=$("$SPIRE_AGENT" api validate jwt -audience interop-spire -svid "$token" -socketPath "$SOCK" 2>&1) && grep -q "SVID is valid" <<<"$out"; then
      echo "PASS spire-agent api validate jwt"
    else echo "FAIL spire-agent api validate jwt: $out"; fi
    if out=$("$SPIRE_AGENT" healthcheck -socketPath "$SOCK" 2>&1) && grep -q "healthy" <<<"$out"; then
      echo "PASS spire-agent healthcheck"
    else echo "FAIL spire-agent healthcheck: $out"; fi
  }
  out=$(spire_checks)
  printf '%s\n' "$out"
  count spire-agent 0 "$out"
else
  echo "SKIP spire-agent CLI checks: no spire-agent at $SPIRE_AGENT (bench/install-spire builds one)"
fi

# --- 4. the daemon survived, and shuts down cleanly on SIGTERM ---------------
if kill -0 "$DAEMON_PID" 2>/dev/null; then
  kill -TERM "$DAEMON_PID"
  for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "FAIL daemon shutdown: still running 10s after SIGTERM"; FAILED=$((FAILED + 1))
  else
    status=0
    wait "$DAEMON_PID" || status=$?
    DAEMON_PID=
    if [[ $status -ne 0 ]]; then
      echo "FAIL daemon shutdown: exit status $status after SIGTERM"; FAILED=$((FAILED + 1))
    elif [[ -e $SOCK ]]; then
      echo "FAIL daemon shutdown: socket $SOCK left behind"; FAILED=$((FAILED + 1))
    else
      echo "PASS daemon shutdown SIGTERM: exit 0, socket removed"; PASSED=$((PASSED + 1))
    fi
  fi
else
  status=0
  wait "$DAEMON_PID" || status=$?
  DAEMON_PID=
  echo "FAIL daemon alive: tessera exited (status $status) during the checks"; FAILED=$((FAILED + 1))
fi

if [[ $FAILED -ne 0 ]]; then
  echo "--- daemon log (last 40 lines) ---"
  tail -n 40 "$DAEMON_LOG" || true
fi
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
