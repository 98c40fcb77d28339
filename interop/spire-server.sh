#!/usr/bin/env bash
# tessera as the node agent of a real, unmodified spire-server 1.13.3 (SPIRE mode).
#
#   interop/spire-server.sh
#
# Uses (or builds with Go, via bench/install-spire) spire-server and spire-agent v1.13.3 in
# $SPIRE_CACHE/bin, starts spire-server on a free port with a join_token node attestor, and
# tessera with [spire] against it, then checks: join-token attestation; a server entry reaching
# an unmodified client (spire-agent api fetch x509) with a chain verifying against the server
# bundle; a server-minted JWT-SVID verifying with the server's JWT bundle; a script:sha256 entry
# identifying the right Python script and not an impostor; entry delete withdrawing from an open
# stream; restart with persist_svids while spire-server is stopped; a reused join token refused
# with a clear message; agent ban stopping identities; x509pop attestation of a second node. Prints PASS/FAIL per check and
# "N passed, M failed"; SKIP (exit 0) when neither the binaries nor Go are there.
#
# Environment: SPIRE_CACHE (default ~/.cache/tessera-bench), TESSERA_BIN, KEEP_TMP=1,
# TESSERA_INTEROP_CACHE (py-spiffe venv, shared with interop/run.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/interop/spire"
SPIRE_CACHE=${SPIRE_CACHE:-$HOME/.cache/tessera-bench}
PYCACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
TD=example.test
PASS=0
FAIL=0

log() { printf '==> %s\n' "$*" >&2; }
pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
# poll SECONDS CMD...: until CMD succeeds (never a fixed sleep as the condition).
poll() { local until=$((SECONDS + $1)); shift; while ((SECONDS < until)); do "$@" && return 0; sleep 0.3; done; "$@"; }

# --- binaries ----------------------------------------------------------------
SS=$SPIRE_CACHE/bin/spire-server
SA=$SPIRE_CACHE/bin/spire-agent
if ! { [[ -x $SS && -x $SA ]] && "$SS" --version 2>&1 | grep -q '^1\.13\.3'; }; then
  if ! command -v go >/dev/null; then
    echo "SKIP spire-server interop: no spire-server 1.13.3 in $SPIRE_CACHE/bin and no Go toolchain to build it"
    echo "0 passed, 0 failed"
    exit 0
  fi
  log "building spire-server v1.13.3 (first time: 10-20 min)"
  bash "$ROOT/bench/install-spire" "$SPIRE_CACHE" v1.13.3 || { echo "FAIL build spire-server"; echo "0 passed, 1 failed"; exit 1; }
fi
if [[ -n ${TESSERA_BIN:-} ]]; then BIN=$TESSERA_BIN; else
  (cd "$ROOT" && cargo build --quiet --bin tessera) || { echo "FAIL cargo build"; echo "0 passed, 1 failed"; exit 1; }
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera"
fi
PY=$PYCACHE/venv/bin/python
if ! "$PY" -c 'import spiffe, jwt' 2>/dev/null; then
  log "py-spiffe venv in $PYCACHE/venv"
  python3 -m venv "$PYCACHE/venv" && "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/interop/python/requirements.txt" \
    || { echo "FAIL py-spiffe venv"; echo "0 passed, 1 failed"; exit 1; }
fi

# --- spire-server --------------------------------------------------------------
TMP=$(mktemp -d /tmp/tessera-spire.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ -n ${KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SOCK=$TMP/server/api.sock
mkdir -p "$TMP/server/data" "$TMP/node"
cat > "$TMP/server/server.conf" <<CONF
server {
    bind_address = "127.0.0.1"
    bind_port    = "$PORT"
    socket_path  = "$SOCK"
    trust_domain = "$TD"
    data_dir     = "$TMP/server/data"
    log_level    = "INFO"
    default_x509_svid_ttl = "10m"
    default_jwt_svid_ttl = "5m"
    ca_key_type = "ec-p256"
    ratelimit { attestation = false }
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3"  connection_string = "$TMP/server/data/datastore.sqlite3" } }
    KeyManager "disk" { plugin_data { keys_path = "$TMP/server/data/keys.json" } }
    NodeAttestor "join_token" { plugin_data {} }
    NodeAttestor "x509pop" { plugin_data { ca_bundle_path = "$TMP/node-ca.pem" } }
}
CONF
# x509pop: a node CA the server trusts, and this node's certificate (digitalSignature) and key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/node-ca.key" -out "$TMP/node-ca.pem" \
  -days 2 -subj /CN=node-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/node.key" -out "$TMP/node.csr" -subj /CN=host1 2>/dev/null
printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$TMP/node.ext"
openssl x509 -req -in "$TMP/node.csr" -CA "$TMP/node-ca.pem" -CAkey "$TMP/node-ca.key" -CAcreateserial \
  -out "$TMP/node.pem" -days 1 -extfile "$TMP/node.ext" 2>/dev/null
SERVER_PID=
start_server() {
  "$SS" run -config "$TMP/server/server.conf" >>"$TMP/server/log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  poll 60 "$SS" healthcheck -socketPath "$SOCK" >/dev/null 2>&1
}
start_server || { echo "FAIL spire-server start (log: $TMP/server/log)"; echo "0 passed, 1 failed"; exit 1; }
srv() { "$SS" "$@" -socketPath "$SOCK"; }
srv bundle show >"$TMP/node/bundle.pem"
srv bundle show -format spiffe >"$TMP/server-bundle.json"
TOKEN=$(srv token generate -spiffeID "spiffe://$TD/node/ci" | awk '{print $2}')

# --- tessera ---------------------------------------------------------------------
API=$TMP/node/api.sock
write_config() { # FILE DATA_DIR SOCKET
  cat >"$1" <<CONF
trust_domain = "$TD"
socket_path = "$3"
admin_socket_path = "$2.admin.sock"
data_dir = "$2"
[spire]
server_address = "127.0.0.1:$PORT"
trust_bundle_path = "$TMP/node/bundle.pem"
join_token = "$TOKEN"
persist_svids = true
sync_interval = "1s"
CONF
}
write_config "$TMP/node/tessera.toml" "$TMP/node/data" "$API"
TESSERA_PID=
start_tessera() {
  "$BIN" run -c "$TMP/node/tessera.toml" >>"$TMP/node/log" 2>&1 &
  TESSERA_PID=$!
  PIDS+=("$TESSERA_PID")
  poll 20 test -S "$API"
}
start_tessera || { echo "FAIL tessera start (log: $TMP/node/log)"; echo "0 passed, 1 failed"; exit 1; }

# 1. join-token attestation
AGENT_ID="spiffe://$TD/spire/agent/join_token/$TOKEN"
check "join-token attestation (agent $AGENT_ID listed by the server)" \
  poll 30 bash -c "'$SS' agent list -socketPath '$SOCK' | grep -q '$AGENT_ID'"

# 2. a server entry reaches an unmodified client; the chain verifies against the server bundle
SA_PATH=$(readlink -f "$SA")
srv entry create -parentID "spiffe://$TD/node/ci" -spiffeID "spiffe://$TD/w/spire-agent-cli" \
  -selector "unix:uid:$(id -u)" -selector "unix:path:$SA_PATH" >/dev/null
fetch_x509() { rm -rf "$TMP/out" && mkdir -p "$TMP/out" && "$SA" api fetch x509 -socketPath "$API" -write "$TMP/out" >"$TMP/fetch.log" 2>&1; }
if poll 40 fetch_x509 && grep -q "spiffe://$TD/w/spire-agent-cli" "$TMP/fetch.log" \
  && openssl verify -CAfile "$TMP/node/bundle.pem" "$TMP/out/svid.0.pem" >/dev/null 2>&1; then
  pass "entry create -> spire-agent api fetch x509 via tessera; chain verifies against the server bundle"
else
  fail "entry create -> fetch x509 ($(tail -2 "$TMP/fetch.log" | tr '\n' ' '))"
fi

# 3. a server-minted JWT-SVID verifies with the server's JWT bundle
JWT=$("$SA" api fetch jwt -audience interop-aud -socketPath "$API" 2>/dev/null | awk '/^token/{getline; gsub(/[ \t]/,""); print; exit}')
SUB=$("$PY" "$HERE/verify_jwt.py" "$JWT" interop-aud "$TMP/server-bundle.json" 2>&1)
check "JWT-SVID from NewJWTSVID verifies with spire-server's JWT bundle (sub=$SUB)" test "$SUB" = "spiffe://$TD/w/spire-agent-cli"

# 4. script:sha256 entry: the right Python script, not an impostor
cp "$HERE/workload.py" "$TMP/right.py"
{ cat "$HERE/workload.py"; echo "# impostor: same code, other bytes"; } >"$TMP/impostor.py"
HEX=$(sha256sum "$TMP/right.py" | cut -d' ' -f1)
srv entry create -parentID "spiffe://$TD/node/ci" -spiffeID "spiffe://$TD/agents/summarizer" \
  -selector "unix:uid:$(id -u)" -selector "script:sha256:$HEX" >/dev/null
right() { "$PY" "$TMP/right.py" "$API" >"$TMP/right.out" 2>&1 && grep -q "spiffe://$TD/agents/summarizer" "$TMP/right.out"; }
check "script:sha256 entry from the server identifies the right Python script" poll 40 right
"$PY" "$TMP/impostor.py" "$API" >"$TMP/impostor.out" 2>&1
check "the impostor script gets no identity ($(head -c 80 "$TMP/impostor.out"))" grep -q NOIDENTITY "$TMP/impostor.out"

# 5. entry delete withdraws the identity from an open stream
"$SA" api watch -socketPath "$API" >"$TMP/watch.log" 2>&1 &
WATCH_PID=$!
PIDS+=("$WATCH_PID")
poll 20 grep -q "Received" "$TMP/watch.log"
EID=$(srv entry show -spiffeID "spiffe://$TD/w/spire-agent-cli" | awk '/Entry ID/{print $4}')
srv entry delete -entryID "$EID" >/dev/null
T0=$SECONDS
check "entry delete withdraws the identity from an open stream" poll 40 grep -q "PermissionDenied" "$TMP/watch.log"
echo "    (withdrawn $((SECONDS - T0)) s after entry delete)"
kill "$WATCH_PID" 2>/dev/null

# 6. restart with persist_svids while spire-server is stopped: the last SVIDs are still served
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null
kill "$TESSERA_PID"; wait "$TESSERA_PID" 2>/dev/null
start_tessera
check "tessera restarted while spire-server is down still serves the persisted SVID" poll 20 right
admin_get() { # PATH: the body of a GET on the admin socket
  "$PY" - "$TMP/node/data.admin.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET " + sys.argv[2].encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\r\n\r\n", 1)[1].decode())
PY
}
AGE=$(admin_get /ready | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["spire"]["seconds_since_last_sync"])' 2>&1)
GAUGE=$(admin_get /metrics | awk '/^tessera_spire_seconds_since_last_sync /{print $2}')
check "the sync age while the server is down: /ready ${AGE} s, gauge ${GAUGE:-none} s" \
  bash -c "[ '$AGE' -ge 0 ] && awk 'BEGIN { exit !(\"$GAUGE\" + 0 >= $AGE) }'"
perms=$(stat -c %a "$TMP/node/data/spire/svids.pb" "$TMP/node/data/spire/agent.pb" | sort -u | tr '\n' ' ')
check "persisted agent and workload keys are mode 0600 ($perms)" test "$perms" = "600 "
MARK=$(wc -l <"$TMP/node/log")
start_server
check "after the server is back: synced again without a new join token" \
  poll 40 bash -c "tail -n +$((MARK + 1)) '$TMP/node/log' | grep -q 'synced with the SPIRE Server' && ! grep -q 'attestation refused' '$TMP/node/log'"
tail -n +$((MARK + 1)) "$TMP/node/log" | grep -m1 -o 'synced with the SPIRE Server.*' | sed 's/^/    /'

# 7. a reused join token is refused with a clear message
write_config "$TMP/node/second.toml" "$TMP/node/data2" "$TMP/node/api2.sock"
"$BIN" run -c "$TMP/node/second.toml" >"$TMP/node/second.log" 2>&1 &
SECOND=$!
PIDS+=("$SECOND")
check "a reused join token is refused with a clear message" \
  poll 20 grep -q "join token does not exist or has already been used" "$TMP/node/second.log"
grep -m1 -o "join-token attestation refused: .*single-use[^.]*" "$TMP/node/second.log" | sed 's/^/    /'
kill "$SECOND" 2>/dev/null

# 8. agent ban stops tessera's identities
srv agent ban -spiffeID "$AGENT_ID" >/dev/null
check "agent ban: tessera stops serving identities (logged loudly)" \
  poll 40 grep -q "NO IDENTITIES ARE SERVED" "$TMP/node/log"
"$PY" "$TMP/right.py" "$API" >"$TMP/right.out" 2>&1
check "agent ban: the right script now gets no identity" grep -q NOIDENTITY "$TMP/right.out"
check "agent ban: audited (spire_agent_stopped in the audit log)" grep -q spire_agent_stopped "$TMP/node/data/audit.log"

# 9. x509pop node attestation (a second node): node alias by x509pop:subject:cn, entry under it
srv entry create -node -spiffeID "spiffe://$TD/nodes/ai" -selector x509pop:subject:cn:host1 >/dev/null
srv entry create -parentID "spiffe://$TD/nodes/ai" -spiffeID "spiffe://$TD/w/x509pop-node" \
  -selector "unix:uid:$(id -u)" -selector "unix:path:$SA_PATH" >/dev/null
cat >"$TMP/node/x509pop.toml" <<CONF
trust_domain = "$TD"
socket_path = "$TMP/node/api3.sock"
admin_socket_path = "$TMP/node/admin3.sock"
data_dir = "$TMP/node/data3"
[spire]
server_address = "127.0.0.1:$PORT"
trust_bundle_path = "$TMP/node/bundle.pem"
sync_interval = "1s"
[spire.x509pop]
cert_path = "$TMP/node.pem"
key_path = "$TMP/node.key"
CONF
"$BIN" run -c "$TMP/node/x509pop.toml" >"$TMP/node/x509pop.log" 2>&1 &
PIDS+=("$!")
fetch3() { "$SA" api fetch x509 -socketPath "$TMP/node/api3.sock" >"$TMP/fetch3.log" 2>&1 && grep -q "spiffe://$TD/w/x509pop-node" "$TMP/fetch3.log"; }
check "x509pop attestation: the node's alias entry reaches a workload" poll 40 fetch3
grep -m1 -o 'agent_id=[^ ]*' "$TMP/node/x509pop.log" | sed 's/^/    /'

echo "$PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
