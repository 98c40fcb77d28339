#!/usr/bin/env bash
# tessera's node gateway ([gateway]) driven by clients nobody on the tessera team wrote, in front
# of a local HTTPS upstream and a real OAuth authorization server:
#   - the official openai 3.x and anthropic 2.x Python SDKs (over httpx2) in base-URL mode
#     (http://127.0.0.1:PORT/openai/v1, .../anthropic), plain and streaming (the stream must
#     arrive in pieces, not buffered); requests and httpx2 in proxy mode (absolute-form
#     http://localhost:PORT/... upgraded to HTTPS upstream); httpx2 and openai over the Unix socket
#   - curl (--unix-socket, base URL, -x proxy, CONNECT) and Go's net/http dialing the Unix socket
#   - credentials from a file, and from an authlib authorization server by client_credentials,
#     RFC 7523 jwt-bearer and RFC 8693 token exchange (the agent's JWT-SVID, verified by the AS
#     against tessera's [oidc] /keys); a token endpoint that is down
# and checks what the upstream saw (the real key, never the agent's placeholder), the refusals
# (a host no route covers, a path the route does not allow, CONNECT without tunnel: 4xx with a
# JSON {error, reason}), the audit log (a gateway_call line per call; `tessera audit verify`) and
# that no secret reaches tessera's log, the audit log or /metrics.
#
#   interop/gateway.sh
#
# The pieces (interop/gateway/): pki.py (a throwaway CA and the upstream's certificate),
# upstream.py (OpenAI/Anthropic stand-in, logs every request's headers), oauth_as.py (authlib AS),
# sdk_check.py (the SDKs, run as the agent), go/ (net/http over the socket), verify.py (the checks
# over the logs). Prints one PASS/FAIL/SKIP line per check and ends with "N passed, M failed";
# exits non-zero on any failure. A missing Python, Go or curl is a SKIP with the reason.
#
# Environment:
#   TESSERA_INTEROP_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/tessera-interop)
#   TESSERA_BIN            use this tessera binary instead of building one
#   PYTHON                 interpreter for the venv (default python3)
#   KEEP_TMP=1             keep the temp dir (config, logs, the upstream's and the AS's records)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/interop/gateway"
CACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
PYTHON=${PYTHON:-python3}
TD=gateway.test
AGENT="spiffe://$TD/agents/support"
PLACEHOLDER=tessera-placeholder
PASS=0 FAIL=0
pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP $*"; }
log() { printf '==> %s\n' "$*" >&2; }
finish() { echo "$PASS passed, $FAIL failed"; [[ $FAIL == 0 ]]; exit; }
free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 40000))
}
wait_http() { # url [curl args]: until it answers, 15 s at most
  local url=$1; shift
  for _ in $(seq 150); do curl -fsS "$@" "$url" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
wait_file() { # path pid: until the file is there (a server writes its port file once listening)
  for _ in $(seq 150); do [[ -s $1 ]] && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.1; done
  return 1
}
# The clients must reach only what they are pointed at: no proxy from the environment.
noproxy() { env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy -u NO_PROXY -u no_proxy "$@"; }

for tool in "$PYTHON" curl; do
  command -v "$tool" >/dev/null || { skip "gateway interop: no $tool (the upstream, the AS and the checks need it)"; finish; }
done

mkdir -p "$CACHE/bin"
# /tmp rather than $TMPDIR: a Unix socket path must stay under 108 bytes.
TMP=$(mktemp -d /tmp/tessera-gw.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [[ ${KEEP_TMP:-} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Python venv (upstream, AS, SDKs) ----------------------------------------
VENV="$CACHE/venv-gateway"
REQS="$HERE/requirements.txt"
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$REQS" "$VENV/.tessera-requirements"; then
  log "venv $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" \
    && cp "$REQS" "$VENV/.tessera-requirements"
fi
VPY="$VENV/bin/python"
if ! [[ -x $VPY ]] || ! "$VPY" -c 'import openai, anthropic, httpx2, requests, authlib, jwt, cryptography' 2>/dev/null; then
  skip "gateway interop: cannot install $REQS into $VENV"
  finish
fi
log "clients: $("$VPY" -c 'import importlib.metadata as m; print(", ".join(p + " " + m.version(p) for p in ("openai", "anthropic", "httpx2", "requests", "authlib", "pyjwt")))')"

# --- tessera -----------------------------------------------------------------
if [[ -n ${TESSERA_BIN:-} ]]; then BIN=$TESSERA_BIN; else
  log "cargo build --bin tessera"
  (cd "$ROOT" && cargo build --quiet --bin tessera) || { fail "cargo build"; finish; }
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera"
fi

# --- the upstream and the authorization server --------------------------------
PKI="$TMP/pki"
"$VPY" "$HERE/pki.py" "$PKI" >/dev/null || { fail "pki.py makes a CA"; finish; }
CA="$PKI/ca.pem"
UPLOG="$TMP/upstream.jsonl" ASLOG="$TMP/as.jsonl"
# Three listeners so that each route names its own upstream host: openai, anthropic, and one API
# behind the OAuth token sources (told apart by prefix).
"$VPY" "$HERE/upstream.py" --dir "$PKI" --servers openai,anthropic,api --log "$UPLOG" --port-file "$TMP/upstream.ports" \
  >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_file "$TMP/upstream.ports" "$!" || { fail "upstream.py listens ($(tail -3 "$TMP/upstream.log"))"; finish; }
port_of() { awk -v n="$1" '$1 == n { print $2 }' "$TMP/upstream.ports"; }
OA_PORT=$(port_of openai) AN_PORT=$(port_of anthropic) API_PORT=$(port_of api)
wait_http "https://localhost:$OA_PORT/health" --cacert "$CA" || { fail "upstream answers over TLS ($(tail -3 "$TMP/upstream.log"))"; finish; }

OIDC_PORT=$(free_port) GW_PORT=$(free_port) METRICS_PORT=$(free_port) CLOSED_PORT=$(free_port) UNROUTED_PORT=$(free_port)
ISSUER="http://127.0.0.1:$OIDC_PORT"
SECRETS="$TMP/secrets"
mkdir -m 700 "$SECRETS"
rand() { "$VPY" -c 'import secrets; print(secrets.token_hex(16))'; }
OPENAI_KEY="sk-real-openai-$(rand)" ANTHROPIC_KEY="sk-real-anthropic-$(rand)" CLIENT_SECRET="cs-$(rand)"
printf '%s' "$OPENAI_KEY" >"$SECRETS/openai"
printf '%s' "$ANTHROPIC_KEY" >"$SECRETS/anthropic"
printf '%s' "$CLIENT_SECRET" >"$SECRETS/as-client"
chmod 600 "$SECRETS"/*

# The AS reads tessera's JWKS at each grant, so it can start first; the audience of the JWT-SVIDs
# it accepts is its token endpoint.
"$VPY" "$HERE/oauth_as.py" --dir "$PKI" --jwks "$ISSUER/keys" --issuer "$ISSUER" --client "gw:$SECRETS/as-client" \
  --log "$ASLOG" --port-file "$TMP/as.port" >"$TMP/as.log" 2>&1 &
PIDS+=($!)
wait_file "$TMP/as.port" "$!" || { fail "oauth_as.py listens ($(tail -3 "$TMP/as.log"))"; finish; }
AS_PORT=$(cat "$TMP/as.port")
TOKEN_URL="https://localhost:$AS_PORT/token"
wait_http "https://localhost:$AS_PORT/health" --cacert "$CA" || { fail "the AS answers over TLS"; finish; }
log "upstream openai :$OA_PORT anthropic :$AN_PORT api :$API_PORT; AS $TOKEN_URL"

# --- tessera with the gateway ---------------------------------------------------
GW_SOCK="$TMP/gw.sock"
route() { # name host prefix methods paths credential
  cat <<TOML
[[gateway.routes]]
name = "$1"
host = "$2"
prefix = "$3"
for = ["$AGENT"]
methods = $4
paths = $5
credential = "$6"
ca_file = "$CA"

TOML
}
oauth_cred() { # name kind extra-inline-table-fields
  cat <<TOML
[[gateway.credentials]]
name = "$1"
header = "Authorization"
format = "Bearer {secret}"
source = { $2 = { $3 } }

TOML
}
{
  cat <<TOML
trust_domain = "$TD"
socket_path = "$TMP/api.sock"
data_dir = "$TMP/data"
jwt_issuer = "$ISSUER"

[oidc]
listen = "127.0.0.1:$OIDC_PORT"

[telemetry]
listen = "127.0.0.1:$METRICS_PORT"

[gateway]
socket_path = "$GW_SOCK"
listen = "127.0.0.1:$GW_PORT"

TOML
  route openai "localhost:$OA_PORT" /openai '["GET", "POST"]' '["/v1/chat/completions", "/v1/responses", "/v1/models"]' openai-prod
  route anthropic "localhost:$AN_PORT" /anthropic '["POST"]' '["/v1/messages"]' anthropic-prod
  route cc "localhost:$API_PORT" /cc '["GET"]' '["/v1/*"]' as-cc
  route jb "localhost:$API_PORT" /jb '["GET"]' '["/v1/*"]' as-jb
  route tx "localhost:$API_PORT" /tx '["GET"]' '["/v1/*"]' as-tx
  route down "localhost:$API_PORT" /down '["GET"]' '["/v1/*"]' as-down
  cat <<TOML
[[gateway.credentials]]
name = "openai-prod"
header = "Authorization"
format = "Bearer {secret}"
source = { file = "$SECRETS/openai" }

[[gateway.credentials]]
name = "anthropic-prod"
header = "x-api-key"
format = "{secret}"
source = { file = "$SECRETS/anthropic" }

TOML
  oauth_cred as-cc oauth_client_credentials "token_url = \"$TOKEN_URL\", client_id = \"gw\", client_secret_file = \"$SECRETS/as-client\", scope = \"read\", ca_file = \"$CA\""
  oauth_cred as-jb jwt_bearer "token_url = \"$TOKEN_URL\", audience = \"$TOKEN_URL\", scope = \"read\", ca_file = \"$CA\""
  oauth_cred as-tx token_exchange "token_url = \"$TOKEN_URL\", audience = \"$TOKEN_URL\", scope = \"read\", ca_file = \"$CA\""
  oauth_cred as-down oauth_client_credentials "token_url = \"https://127.0.0.1:$CLOSED_PORT/token\", client_id = \"gw\", client_secret_file = \"$SECRETS/as-client\", scope = \"read\", ca_file = \"$CA\""
  cat <<TOML
[[entries]]
spiffe_id = "$AGENT"
selectors = ["unix:uid:$(id -u)"]
TOML
} >"$TMP/tessera.toml"

"$BIN" run -c "$TMP/tessera.toml" >"$TMP/tessera.log" 2>&1 </dev/null &
TESSERA_PID=$!
PIDS+=($TESSERA_PID)
if ! "$VPY" "$ROOT/interop/wait_socket.py" "$GW_SOCK" "$TESSERA_PID" 15 2>"$TMP/wait.err"; then
  fail "tessera serves the gateway on $GW_SOCK ($(cat "$TMP/wait.err"); log: $(tail -5 "$TMP/tessera.log" | tr '\n' ' '))"
  finish
fi
wait_http "$ISSUER/keys" || { fail "tessera serves $ISSUER/keys"; finish; }
for _ in $(seq 150); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/" 2>/dev/null) != 000 ]] && break
  sleep 0.1
done
pass "tessera serves the gateway on $GW_SOCK and 127.0.0.1:$GW_PORT"

# Count a checker's PASS/FAIL lines; a checker that exits non-zero without a FAIL line (a crash)
# is a failure too, with its last lines.
tally() {
  local out=$1 rc=$2 name=$3 fails=0
  while read -r line; do
    case $line in PASS*) pass "${line#PASS }";; FAIL*) fail "${line#FAIL }"; fails=1;; SKIP*) echo "$line";; esac
  done <"$out"
  if [[ $rc != 0 && $fails == 0 ]]; then fail "$name exited $rc: $(tail -2 "$out" | tr '\n' ' ')"; fi
}
verify() { # verify NAME SUBCOMMAND ARGS...: one PASS/FAIL line
  local name=$1; shift
  "$VPY" "$HERE/verify.py" "$@" --name "$name" >"$TMP/verify.out" 2>&1
  tally "$TMP/verify.out" $? "verify.py $1"
}
# gw_curl TAG ARGS...: curl as the agent (placeholder key, X-Interop-Call: TAG); the status code
# on stdout (000: no HTTP answer), the body in $TMP/body.TAG.
gw_curl() {
  local tag=$1; shift
  noproxy curl -sS --max-time 30 -o "$TMP/body.$tag" -w '%{http_code}' \
    -H "X-Interop-Call: $tag" -H "Authorization: Bearer $PLACEHOLDER" "$@" 2>"$TMP/curl.$tag.err"
}
expect_status() { # NAME WANT GOT TAG
  if [[ $3 == "$2" ]]; then pass "$1: $3"; else fail "$1: got $3, want $2 ($(head -c 300 "$TMP/body.$4" 2>/dev/null) $(cat "$TMP/curl.$4.err" 2>/dev/null))"; fi
}
OA=(--server openai --header "Authorization=Bearer $OPENAI_KEY" --forbid "$PLACEHOLDER")
AN=(--server anthropic --header "x-api-key=$ANTHROPIC_KEY" --forbid "$PLACEHOLDER")

# --- 1. the SDKs as the agent -----------------------------------------------------
noproxy "$VPY" "$HERE/sdk_check.py" \
  --openai-base "http://127.0.0.1:$GW_PORT/openai/v1" --anthropic-base "http://127.0.0.1:$GW_PORT/anthropic" \
  --proxy "http://127.0.0.1:$GW_PORT" --proxy-url "http://localhost:$OA_PORT/v1/models" \
  --uds "$GW_SOCK" --uds-base "http://localhost:$OA_PORT/v1" --api-key "$PLACEHOLDER" >"$TMP/sdk.out" 2>"$TMP/sdk.err"
tally "$TMP/sdk.out" $? sdk_check.py
for tag in openai-models openai-chat openai-chat-stream openai-responses requests-proxy httpx2-proxy openai-uds httpx2-uds; do
  verify "upstream saw $tag with the real OpenAI key, not the placeholder" upstream "$UPLOG" "$tag" "${OA[@]}"
done
for tag in anthropic-messages anthropic-stream; do
  verify "upstream saw $tag with the real x-api-key, not the placeholder" upstream "$UPLOG" "$tag" "${AN[@]}"
done

# --- 2. curl and Go -------------------------------------------------------------------
code=$(gw_curl curl-uds --unix-socket "$GW_SOCK" "http://localhost:$OA_PORT/v1/models")
expect_status "curl --unix-socket GET http://localhost:$OA_PORT/v1/models (by host)" 200 "$code" curl-uds
verify "upstream saw curl-uds with the real key" upstream "$UPLOG" curl-uds "${OA[@]}"
code=$(gw_curl curl-uds-prefix --unix-socket "$GW_SOCK" "http://localhost/openai/v1/models")
expect_status "curl --unix-socket GET /openai/v1/models (by prefix)" 200 "$code" curl-uds-prefix
verify "upstream saw curl-uds-prefix with the real key" upstream "$UPLOG" curl-uds-prefix "${OA[@]}"
code=$(gw_curl curl-base "http://127.0.0.1:$GW_PORT/openai/v1/models?limit=5")
expect_status "curl GET http://127.0.0.1:$GW_PORT/openai/v1/models?limit=5 (base URL)" 200 "$code" curl-base
verify "upstream saw curl-base with the real key" upstream "$UPLOG" curl-base "${OA[@]}"
code=$(gw_curl curl-proxy -x "http://127.0.0.1:$GW_PORT" "http://localhost:$OA_PORT/v1/models")
expect_status "curl -x http://127.0.0.1:$GW_PORT GET http://localhost:$OA_PORT/v1/models (proxy)" 200 "$code" curl-proxy
verify "upstream saw curl-proxy with the real key" upstream "$UPLOG" curl-proxy "${OA[@]}"

if ! command -v go >/dev/null; then
  skip "Go net/http over the gateway socket: no Go toolchain"
else
  GO_BIN="$CACHE/bin/gateway-uds"
  if (cd "$HERE/go" && GOFLAGS=-mod=readonly go build -o "$GO_BIN" .) 2>"$TMP/go-build.log"; then
    if out=$(noproxy "$GO_BIN" -socket "$GW_SOCK" -url "http://localhost:$OA_PORT/v1/models" -key "$PLACEHOLDER" -tag go-uds 2>&1); then
      pass "Go net/http GET over the Unix socket: ${out:0:120}"
    else fail "Go net/http GET over the Unix socket: ${out:0:300}"; fi
    verify "upstream saw go-uds with the real key" upstream "$UPLOG" go-uds "${OA[@]}"
  else
    skip "Go net/http over the gateway socket: build failed ($(tail -1 "$TMP/go-build.log"))"
  fi
fi

# --- 3. token sources -----------------------------------------------------------------
for src in cc jb tx; do
  code=$(gw_curl "$src" "http://127.0.0.1:$GW_PORT/$src/v1/models")
  expect_status "route $src (token source $src) GET /$src/v1/models" 200 "$code" "$src"
done
verify "client_credentials: the upstream saw a token the AS issued to client gw" as-token "$UPLOG" "$ASLOG" cc --grant cc --forbid "$PLACEHOLDER"
verify "jwt-bearer (RFC 7523): the upstream saw a token the AS issued for $AGENT" as-token "$UPLOG" "$ASLOG" jb --grant jb --sub "$AGENT" --forbid "$PLACEHOLDER"
verify "token exchange (RFC 8693): the upstream saw a token the AS issued for $AGENT" as-token "$UPLOG" "$ASLOG" tx --grant tx --sub "$AGENT" --forbid "$PLACEHOLDER"
code=$(gw_curl down "http://127.0.0.1:$GW_PORT/down/v1/models")
expect_status "token endpoint down (closed port): 502" 502 "$code" down
verify "token endpoint down: the body is JSON {error, reason}" error-json "$TMP/body.down"
verify "token endpoint down: the upstream saw no request" absent "$UPLOG" down

# --- 4. refusals ----------------------------------------------------------------------
code=$(gw_curl nohost -x "http://127.0.0.1:$GW_PORT" "http://localhost:$UNROUTED_PORT/v1/models")
expect_status "a host no route covers (proxy mode, localhost:$UNROUTED_PORT): 403" 403 "$code" nohost
verify "a host no route covers: the body is JSON {error, reason}" error-json "$TMP/body.nohost"
code=$(gw_curl nohost-uds --unix-socket "$GW_SOCK" "http://api.elsewhere.test/v1/models")
expect_status "a host no route covers (Unix socket, Host: api.elsewhere.test): 403" 403 "$code" nohost-uds
verify "a host no route covers (Unix socket): the body is JSON {error, reason}" error-json "$TMP/body.nohost-uds"
code=$(gw_curl badpath "http://127.0.0.1:$GW_PORT/openai/v1/files")
expect_status "a path the route does not allow (/openai/v1/files): 403" 403 "$code" badpath
verify "a path the route does not allow: the body is JSON {error, reason}" error-json "$TMP/body.badpath"
code=$(gw_curl badmethod -X DELETE "http://127.0.0.1:$GW_PORT/openai/v1/models")
expect_status "a method the route does not allow (DELETE /openai/v1/models): 403" 403 "$code" badmethod
for tag in badpath badmethod; do verify "refused $tag: the upstream saw no request" absent "$UPLOG" "$tag"; done
# CONNECT on a route without tunnel = true: refused before any tunnel exists.
# -H goes to the request inside the tunnel (tagged, so a tunnel that opens shows at the upstream),
# --proxy-header to the CONNECT itself.
connect=$(noproxy curl -sS --max-time 15 -p -x "http://127.0.0.1:$GW_PORT" --proxy-header "X-Interop-Call: connect" \
  -H "X-Interop-Call: connect" --cacert "$CA" -o /dev/null -w '%{http_connect}' "https://localhost:$OA_PORT/v1/models" 2>"$TMP/curl.connect.err")
if [[ $connect =~ ^[45][0-9][0-9]$ ]]; then pass "CONNECT localhost:$OA_PORT on a route without tunnel = true: refused ($connect)"
else fail "CONNECT localhost:$OA_PORT on a route without tunnel = true: refused (CONNECT answered '$connect': $(cat "$TMP/curl.connect.err"))"; fi
verify "CONNECT refused: no request through a tunnel reached the upstream" absent "$UPLOG" connect
n=$(grep -c "\"$PLACEHOLDER" "$UPLOG" || true)
if [[ $n == 0 ]]; then pass "the upstream never saw the placeholder key ($(wc -l <"$UPLOG") requests)"
else fail "the upstream saw the placeholder key in $n request(s)"; fi

# --- 5. audit log, secrets --------------------------------------------------------------
AUDIT="$TMP/data/audit.log"
TOKENS=$("$VPY" -c 'import json,sys; print("\n".join(json.loads(l)["access_token"] for l in open(sys.argv[1]) if json.loads(l).get("access_token")))' "$ASLOG")
FORBID=(--forbid "$OPENAI_KEY" --forbid "$ANTHROPIC_KEY" --forbid "$CLIENT_SECRET")
while read -r t; do [[ -n $t ]] && FORBID+=(--forbid "$t"); done <<<"$TOKENS"
# Give the audit writer its moment: it writes from its own thread.
for _ in $(seq 50); do grep -q '"gateway_call"' "$AUDIT" 2>/dev/null && break; sleep 0.1; done
verify "audit log: a gateway_call line per route (agent, route, credential, status), the refusals, no secret" \
  audit "$AUDIT" --agent "$AGENT" --route openai:openai-prod --route anthropic:anthropic-prod \
  --route cc:as-cc --route jb:as-jb --route tx:as-tx --denied 4 "${FORBID[@]}"
if out=$("$BIN" audit verify "$TMP/data" 2>&1); then pass "tessera audit verify $TMP/data: ${out:0:160}"
else fail "tessera audit verify $TMP/data: ${out:0:300}"; fi

curl -sS --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics" >"$TMP/metrics.txt" 2>&1
printf '%s\n' "$OPENAI_KEY" "$ANTHROPIC_KEY" "$CLIENT_SECRET" $TOKENS >"$TMP/secret-values"
leaks=
for f in "$TMP/tessera.log" "$TMP/data"/audit.log* "$TMP/metrics.txt"; do
  [[ -f $f ]] && grep -qFf "$TMP/secret-values" "$f" && leaks+=" $(basename "$f")"
done
if [[ -z $leaks ]]; then
  pass "no secret (API keys, client secret, $(wc -w <<<"$TOKENS") AS tokens) in tessera's log, the audit log or /metrics"
else fail "a secret value is in:$leaks"; fi

if ! kill -0 "$TESSERA_PID" 2>/dev/null; then fail "tessera exited during the checks: $(tail -5 "$TMP/tessera.log" | tr '\n' ' ')"; fi
if [[ $FAIL != 0 ]]; then
  echo "--- tessera log (last 30 lines) ---" >&2
  tail -n 30 "$TMP/tessera.log" >&2
fi
finish
