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
#   TESSERA_BIN            use this tessera binary instead of building one (the Rust examples are
#                          taken from its directory's examples/ when there, else built)
#   TESSERA_INTEROP_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/tessera-interop)
#   PYTHON                 interpreter for the venv (default python3)
#   KEEP_TMP=1             keep the temp dir (config, data, logs)
#
# Then the delegation example (examples/delegation): a Python concierge agent acting for Alice
# (token exchange on the token socket with httpx), a booker agent it hands a narrower token to,
# and a flight API verifying every token with PyJWT against the published JWKS; the booking
# scope waits for `tessera approve`. Its venv (PyJWT, httpx) is venv-delegation in the cache.
#
# Last, the gateway example (examples/gateway): a second tessera with [gateway] in front of
# interop/gateway/upstream.py (a local HTTPS OpenAI stand-in), and a support agent on the official
# openai SDK run with `env -i` (no key, a placeholder in the SDK): it must get its answers, the
# upstream must see the real key from tessera's 0600 file and never the placeholder, the audit log
# must have gateway_call lines for the agent's ID and the credential's name, and the key must be in
# neither tessera's log nor the audit log. Its venv is venv-gateway, shared with interop/gateway.sh.
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
# With TESSERA_BIN, nothing is built when the Rust examples are beside it (DIR/examples/, as cargo
# lays them out); otherwise only they are.
if [[ -n ${TESSERA_BIN:-} ]]; then
  BIN=$TESSERA_BIN
  TARGET=$(cd "$(dirname "$BIN")" && pwd)
  if [[ ! -x $TARGET/examples/rust_agent_server || ! -x $TARGET/examples/rust_agent_client ]]; then
    log "cargo build --examples (tessera: $BIN)"
    (cd "$ROOT" && cargo build --quiet --example rust_agent_server --example rust_agent_client) \
      || die "cargo build failed"
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
  fi
else
  log "cargo build --bin tessera --examples"
  (cd "$ROOT" && cargo build --quiet --bin tessera --example rust_agent_server --example rust_agent_client) \
    || die "cargo build failed"
  TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
  BIN="$TARGET/tessera"
fi
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

# The gateway example's venv: the one interop/gateway.sh uses (the openai SDK it pins), made the
# same way when missing or when its requirements changed.
GVENV="$CACHE/venv-gateway"
GREQS="$ROOT/interop/gateway/requirements.txt"
if [[ ! -x $GVENV/bin/python ]] || ! cmp -s "$GREQS" "$GVENV/.tessera-requirements"; then
  log "gateway venv in $GVENV"
  mkdir -p "$CACHE"
  rm -rf "$GVENV"
  "$PYTHON" -m venv "$GVENV" || die "cannot create a venv with $PYTHON"
  "$GVENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$GREQS" \
    || die "pip install -r $GREQS failed"
  cp "$GREQS" "$GVENV/.tessera-requirements"
fi
GPY="$GVENV/bin/python"
"$GPY" -c 'import openai, cryptography' || die "the openai SDK does not import from $GVENV"
GW="$HERE/gateway"

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

# --- 6. gateway: a support agent calls a model API with no key in its environment
# (examples/gateway/README.md). A second tessera, with [gateway], in front of interop/gateway's
# upstream.py as the model API (a local HTTPS OpenAI stand-in with its own CA, logging every
# request's headers); the real key is a 0600 file only tessera reads.
GWD="$TMP/gw"
mkdir -m 700 "$GWD" "$GWD/secrets"
free_port() { "$GPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPLOG="$GWD/upstream.jsonl"
"$GPY" "$ROOT/interop/gateway/upstream.py" --dir "$GWD/pki" --servers openai --log "$UPLOG" \
  --port-file "$GWD/upstream.ports" >"$TMP/gw-upstream.err" 2>&1 </dev/null &
UPSTREAM=$!
PIDS+=("$UPSTREAM")
deadline=$((SECONDS + READY_TIMEOUT))
until [[ -s $GWD/upstream.ports ]]; do
  kill -0 "$UPSTREAM" 2>/dev/null || { cat "$TMP/gw-upstream.err" >&2; die "upstream.py exited"; }
  ((SECONDS < deadline)) || die "upstream.py not listening within ${READY_TIMEOUT}s"
  sleep 0.05
done
OA_PORT=$(awk '$1 == "openai" { print $2 }' "$GWD/upstream.ports")
GW_PORT=$(free_port)
GW_AGENT="spiffe://$TD/agents/support"
GW_KEY="sk-real-openai-$("$GPY" -c 'import secrets; print(secrets.token_hex(16))')"
printf '%s' "$GW_KEY" >"$GWD/secrets/openai"
chmod 600 "$GWD/secrets/openai"
cat >"$GWD/tessera.toml" <<TOML
trust_domain = "$TD"
socket_path = "$GWD/api.sock"
data_dir = "$GWD/data"

[gateway]
# socket_path defaults to gateway.sock beside the Workload API socket.
listen = "127.0.0.1:$GW_PORT"

# In production: host = "api.openai.com" and no ca_file. Here the model API is the local stand-in.
[[gateway.routes]]
name = "openai"
host = "localhost:$OA_PORT"
prefix = "/openai"
for = ["$GW_AGENT"]
methods = ["POST"]
paths = ["/v1/chat/completions"]
credential = "openai-prod"
ca_file = "$GWD/pki/ca.pem"

[[gateway.credentials]]
name = "openai-prod"
header = "Authorization"
format = "Bearer {secret}"
source = { file = "$GWD/secrets/openai" }

[[entries]]
spiffe_id = "$GW_AGENT"
selectors = ["unix:uid:$U", "script:path:$GW/agent.py"]
TOML
"$BIN" run --config "$GWD/tessera.toml" >"$TMP/gw-daemon.log" 2>&1 </dev/null &
GW_DAEMON=$!
PIDS+=("$GW_DAEMON")
if ! "$PY" "$ROOT/interop/wait_socket.py" "$GWD/gateway.sock" "$GW_DAEMON" "$READY_TIMEOUT"; then
  cat "$TMP/gw-daemon.log" >&2
  die "tessera (gateway) did not become ready"
fi
# Both listeners are bound once it logs "gateway serving" (a probe of the TCP port would be an
# unattributable connection, audited as a refusal).
deadline=$((SECONDS + READY_TIMEOUT))
until grep -q 'gateway serving' "$TMP/gw-daemon.log"; do
  ((SECONDS < deadline)) || die "the gateway is not serving on 127.0.0.1:$GW_PORT"
  sleep 0.05
done
gw_agent() { # a clean environment: PATH and the base URL, no key
  env -i PATH=/usr/local/bin:/usr/bin:/bin OPENAI_BASE_URL="http://127.0.0.1:$GW_PORT/openai/v1" "$@" \
    timeout "$CLIENT_TIMEOUT" "$GPY" "$GW/agent.py"
}
status=0
gw_agent >"$TMP/gw-agent.out" 2>"$TMP/gw-agent.err" </dev/null || status=$?
if [[ $status -eq 0 ]] && grep -q '^answer: .' "$TMP/gw-agent.out" && grep -qE '^streamed pieces: ([2-9]|[1-9][0-9]+)$' "$TMP/gw-agent.out"; then
  pass "gateway: the agent (openai SDK, placeholder key, no key in its environment) got an answer and a stream in $(awk '/^streamed pieces:/{print $3}' "$TMP/gw-agent.out") pieces"
else
  fail "gateway: the agent exited $status: $(tr '\n' ' ' <"$TMP/gw-agent.out" | cut -c1-200) $(tail -n 3 "$TMP/gw-agent.err" | tr '\n' ' ')"
fi
# What the model API saw: every request with the real key, none with the placeholder.
if out=$("$GPY" - "$UPLOG" "$GW_KEY" <<'PY' 2>&1
import json, sys
log, key = sys.argv[1], sys.argv[2]
reqs = [json.loads(l) for l in open(log) if l.strip()]
chat = [r for r in reqs if r["method"] == "POST" and r["path"] == "/v1/chat/completions"]
assert len(chat) >= 2, f"{len(chat)} chat completion(s) reached the upstream, want 2"
for r in reqs:
    creds = r["headers"].get("authorization", []) + r["headers"].get("x-api-key", [])
    assert creds == ["Bearer " + key], f"{r['method']} {r['path']}: credentials {len(creds)} header(s), not the real key alone"
    values = [v for vs in r["headers"].values() for v in vs]
    assert not any(v in ("tessera", "Bearer tessera") for v in values), f"{r['method']} {r['path']}: the placeholder reached the upstream"
print(f"{len(chat)} chat completions, each with Authorization: Bearer sk-real-…, never the placeholder")
PY
); then pass "gateway: the model API saw $out"; else fail "gateway: the model API's log: $out"; fi
# The agent refuses to run with a key in its environment (and so never calls).
before=$(wc -l <"$UPLOG")
status=0
gw_agent OPENAI_API_KEY=sk-leaked >"$TMP/gw-leak.out" 2>"$TMP/gw-leak.err" </dev/null || status=$?
if [[ $status -eq 3 && $(wc -l <"$UPLOG") -eq $before ]] && grep -q 'OPENAI_API_KEY' "$TMP/gw-leak.err"; then
  pass "gateway: with OPENAI_API_KEY=sk-… in its environment the agent refuses to run ($(head -n 1 "$TMP/gw-leak.err"))"
else
  fail "gateway: the agent ran with a key in its environment (exit $status)"
fi
# The audit log: an allowed gateway_call by the agent's SPIFFE ID with the route's credential.
GW_AUDIT="$GWD/data/audit.log"
for _ in $(seq 50); do grep -q '"gateway_call"' "$GW_AUDIT" 2>/dev/null && break; sleep 0.1; done
if out=$("$GPY" - "$GW_AUDIT" "$GW_AGENT" <<'PY' 2>&1
import json, sys
path, agent = sys.argv[1], sys.argv[2]
calls = [json.loads(l) for l in open(path) if '"gateway_call"' in l]
ok = [c for c in calls if c.get("agent") == agent and c.get("credential") == "openai-prod"
      and c.get("decision") == "allow" and c.get("route") == "openai" and c.get("status") == 200]
assert len(ok) >= 2, f"{len(ok)} allowed gateway_call line(s) for {agent} with openai-prod, want 2 ({len(calls)} gateway_call lines)"
print(f"{len(ok)} gateway_call lines: agent {agent}, route openai, credential openai-prod, decision allow, status 200")
PY
) && "$BIN" audit verify "$GW_AUDIT" >/dev/null 2>&1; then
  pass "gateway: audit log has $out; the chain verifies"
else
  fail "gateway: audit log: $out"
fi
leaks=
for f in "$TMP/gw-daemon.log" "$GWD/data"/audit.log*; do
  [[ -f $f ]] && grep -qF "$GW_KEY" "$f" && leaks+=" $(basename "$f")"
done
if [[ -z $leaks ]]; then pass "gateway: the key is in neither tessera's log nor the audit log"
else fail "gateway: the key is in:$leaks"; fi

if [[ $FAILED -ne 0 ]]; then
  for f in "$TMP"/*.err "$TMP/daemon.log" "$TMP/gw-daemon.log"; do
    echo "--- $(basename "$f") (last 20 lines) ---"
    tail -n 20 "$f" || true
  done
fi
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
