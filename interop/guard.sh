#!/usr/bin/env bash
# tessera's guard ([[guard]], mcp = true) between a real MCP server and a real MCP client, both the
# official Python `mcp` SDK 2.x (MCPServer over streamable HTTP; Client over streamable_http_client
# and httpx2). The client runs as the agent: it exchanges Alice's token (from a throwaway identity
# provider) for a delegated token on tessera's token socket (RFC 8693) and calls the server through
# the guard with it. Cedar policies permit search_flights and not purchase_flight. Checks:
#   - tools/list through the guard lists search_flights only
#   - search_flights runs; purchase_flight is refused (a JSON-RPC error naming it) and never runs
#   - the server never saw the bearer token (no Authorization header), and saw X-Tessera-Agent
#   - without a token the client is refused (the guard answers 401, audited) before the server
#     sees anything
#   - the audit log: guard_action lines for tools/list (tools_hidden), the allowed and the denied
#     tools/call (policy_decision, policies, user, act), and `tessera audit verify` passes
#   - no token in tessera's log or the audit log
#
#   interop/guard.sh
#
# Prints one PASS/FAIL/SKIP line per check and ends with "N passed, M failed"; exits non-zero on
# any failure. A missing Python, or a pip that cannot install the SDK, is a SKIP with the reason.
#
# Environment:
#   TESSERA_INTEROP_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/tessera-interop)
#   TESSERA_BIN            use this tessera binary instead of building one
#   PYTHON                 interpreter for the venv (default python3)
#   KEEP_TMP=1             keep the temp dir (config, logs, the server's record)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/interop/guard"
CACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
PYTHON=${PYTHON:-python3}
TD=guard.test
AGENT="spiffe://$TD/agents/travel"
AUD="https://flights.guard.test/mcp"
IDP="https://idp.guard.test"
PASS=0 FAIL=0
pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP $*"; }
log() { printf '==> %s\n' "$*" >&2; }
finish() { echo "$PASS passed, $FAIL failed"; [[ $FAIL == 0 ]]; exit; }
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { # path pid
  for _ in $(seq 150); do [[ -s $1 ]] && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.1; done
  return 1
}
noproxy() { env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy -u NO_PROXY -u no_proxy "$@"; }

command -v "$PYTHON" >/dev/null || { skip "guard interop: no $PYTHON"; finish; }

TMP=$(mktemp -d /tmp/tessera-guard.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [[ ${KEEP_TMP:-} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Python venv (the mcp SDK) -----------------------------------------------------
VENV="$CACHE/venv-guard"
REQS="$HERE/requirements.txt"
mkdir -p "$CACHE"
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$REQS" "$VENV/.tessera-requirements"; then
  log "venv $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" \
    && cp "$REQS" "$VENV/.tessera-requirements"
fi
VPY="$VENV/bin/python"
if ! [[ -x $VPY ]] || ! "$VPY" -c 'import mcp, httpx2, jwt; from mcp.server.mcpserver import MCPServer' 2>/dev/null; then
  skip "guard interop: cannot install $REQS into $VENV"
  finish
fi
log "mcp $("$VPY" -c 'import importlib.metadata as m; print(m.version("mcp"))')"

# --- tessera -----------------------------------------------------------------------
if [[ -n ${TESSERA_BIN:-} ]]; then BIN=$TESSERA_BIN; else
  log "cargo build --bin tessera"
  (cd "$ROOT" && cargo build --quiet --bin tessera) || { fail "cargo build"; finish; }
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera"
fi

# --- the MCP server ----------------------------------------------------------------
SRVLOG="$TMP/server.jsonl"
"$VPY" "$HERE/mcp_server.py" --port-file "$TMP/server.port" --log "$SRVLOG" >"$TMP/server.log" 2>&1 &
PIDS+=($!)
wait_file "$TMP/server.port" "$!" || { fail "mcp_server.py listens ($(tail -3 "$TMP/server.log"))"; finish; }
SRV_PORT=$(cat "$TMP/server.port")

# --- tessera with the guard ----------------------------------------------------------
USER_TOKEN=$("$VPY" "$HERE/idp.py" "$TMP" "$IDP") || { fail "idp.py"; finish; }
GUARD_PORT=$(free_port)
cat >"$TMP/policy.cedar" <<CEDAR
// The rest of this node is open; the guard is what this script checks.
@id("node-open")
permit(principal, action in [Action::"fetch_x509", Action::"fetch_jwt", Action::"delegate", Action::"call"], resource);

// The MCP session itself (initialize, tools/list, notifications) for the travel agent.
@id("flights-session")
permit(principal == Agent::"$AGENT", action == Action::"serve", resource == Guard::"flights");

// Searching is free.
@id("search-free")
permit(principal, action == Action::"serve", resource == Tool::"search_flights") when { context has user };

// Buying needs the booking scope, which this delegation does not carry.
@id("purchase-needs-booking")
permit(principal, action == Action::"serve", resource == Tool::"purchase_flight")
  when { context has user && context.scopes.contains("booking:create") };
CEDAR
cat >"$TMP/tessera.toml" <<TOML
trust_domain = "$TD"
socket_path = "$TMP/api.sock"
data_dir = "$TMP/data"
jwt_issuer = "https://tessera.$TD"

[[delegation.issuers]]
issuer = "$IDP"
jwks_path = "$TMP/jwks.json"
audience = "tessera"

[policy]
files = ["$TMP/policy.cedar"]

[[guard]]
name = "flights"
listen = "127.0.0.1:$GUARD_PORT"
upstream = "http://127.0.0.1:$SRV_PORT"
audience = "$AUD"
mcp = true

[[entries]]
spiffe_id = "$AGENT"
selectors = ["unix:uid:$(id -u)"]
[entries.delegation]
from = ["$IDP"]
scopes = ["flight:search"]
audiences = ["$AUD"]
TOML
"$BIN" check -c "$TMP/tessera.toml" >"$TMP/check.log" 2>&1 || { fail "tessera check: $(tail -5 "$TMP/check.log")"; finish; }
"$BIN" run -c "$TMP/tessera.toml" >"$TMP/tessera.log" 2>&1 </dev/null &
TESSERA_PID=$!
PIDS+=($TESSERA_PID)
for _ in $(seq 150); do [[ -S $TMP/token.sock ]] && [[ -S $TMP/api.sock ]] && break; sleep 0.1; done
[[ -S $TMP/token.sock ]] || { fail "tessera serves ($(tail -5 "$TMP/tessera.log"))"; finish; }
log "MCP server :$SRV_PORT behind guard :$GUARD_PORT"

# --- the MCP client through the guard --------------------------------------------------
URL="http://127.0.0.1:$GUARD_PORT/mcp"
if ! noproxy "$VPY" "$HERE/mcp_client.py" "$TMP/token.sock" "$USER_TOKEN" "$AUD" "$URL" >"$TMP/client.json" 2>"$TMP/client.err"; then
  fail "mcp_client.py ran: $(tail -5 "$TMP/client.err")"
  tail -20 "$TMP/tessera.log" >&2
  finish
fi
log "client: $(cat "$TMP/client.json")"
AUDIT="$TMP/data/audit.log"
for _ in $(seq 50); do grep -q '"purchase_flight"' "$AUDIT" 2>/dev/null && break; sleep 0.1; done

# One check per line of output: "PASS|FAIL text".
"$VPY" - "$TMP/client.json" "$SRVLOG" "$AUDIT" "$AGENT" <<'PY' >"$TMP/checks.txt"
import json, sys
client = json.load(open(sys.argv[1]))
server = [json.loads(l) for l in open(sys.argv[2])]
audit = [json.loads(l) for l in open(sys.argv[3])]
agent = sys.argv[4]
def check(ok, text):
    print(("PASS " if ok else "FAIL ") + text)
check(client.get("tools") == ["search_flights"], f"tools/list through the guard lists only search_flights (got {client.get('tools')})")
s = client.get("search", {})
check(not s.get("is_error") and "AF006" in s.get("text", ""), f"search_flights ran through the guard ({s})")
err = client.get("purchase_error") or json.dumps(client.get("purchase"))
check("purchase_error" in client and "forbidden" in err and "purchase_flight" in err, f"purchase_flight refused with a JSON-RPC error the SDK raises ({err[:200]})")
ran = [e["tool"] for e in server if "tool" in e]
check(ran == ["search_flights"], f"the server ran search_flights only (ran: {ran})")
http = [e for e in server if "headers" in e]
check(http and not any("authorization" in e["headers"] for e in http), f"the server never saw the bearer token ({len(http)} requests)")
check(http and all(e["headers"].get("x-tessera-agent") == agent for e in http), "every request reached the server with X-Tessera-Agent")
refused = [a for a in audit if a.get("event") == "guard_action" and a.get("status") == 401]
check(client.get("no_token", "served") != "served" and refused and refused[0]["agent"] is None,
      f"without a token the client is refused 401 and audited ({client.get('no_token', '')[:160]})")
lines = [a for a in audit if a.get("event") == "guard_action"]
allow = [a for a in lines if a.get("tool") == "search_flights" and a["decision"] == "allow"]
deny = [a for a in lines if a.get("tool") == "purchase_flight" and a["decision"] == "deny"]
listed = [a for a in lines if a.get("mcp_method") == "tools/list"]
check(allow and allow[0]["agent"] == agent and allow[0]["user"] == "alice" and allow[0]["policies"] == ["search-free"] and allow[0]["act"] == [agent],
      f"guard_action allow: {json.dumps(allow[:1])[:400]}")
check(deny and deny[0]["policy_decision"] == "deny" and deny[0]["policies"] == [] and deny[0]["user"] == "alice",
      f"guard_action deny: {json.dumps(deny[:1])[:400]}")
check(listed and listed[0].get("tools_hidden") == ["purchase_flight"], f"guard_action tools/list: {json.dumps(listed[:1])[:300]}")
PY
while read -r verdict text; do
  if [[ $verdict == PASS ]]; then pass "$text"; else fail "$text"; fi
done <"$TMP/checks.txt"
[[ -s $TMP/checks.txt ]] || fail "the checks ran"

if out=$("$BIN" audit verify "$TMP/data" 2>&1); then pass "tessera audit verify: ${out:0:160}"
else fail "tessera audit verify: ${out:0:300}"; fi
SIG=$(cut -d. -f3 <<<"$USER_TOKEN")
if grep -qF "$SIG" "$TMP/tessera.log" "$AUDIT"; then fail "a token is in tessera's log or the audit log"
else pass "no token in tessera's log or the audit log"; fi
kill -0 "$TESSERA_PID" 2>/dev/null || fail "tessera exited during the checks: $(tail -5 "$TMP/tessera.log" | tr '\n' ' ')"
if [[ $FAIL != 0 ]]; then
  echo "--- tessera log (last 30 lines) ---" >&2
  tail -n 30 "$TMP/tessera.log" >&2
  KEEP_TMP=1
fi
finish
