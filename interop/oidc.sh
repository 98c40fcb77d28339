#!/usr/bin/env bash
# tessera's published keys checked by verifiers nobody on the tessera team wrote:
#   - PyJWT PyJWKClient via the OIDC discovery document
#   - an authlib RFC 7523 jwt-bearer authorization server (grant; replayed jti and wrong aud refused)
#   - github.com/coreos/go-oidc/v3 via discovery
#   - a WIT-SVID client generated from proto/workload.proto (grpcio-tools): joserfc verifies the WIT
#     against FetchWITBundles; a WIMSE Workload Proof Token signed with the returned key verifies
#     (PyJWT) against the WIT's cnf.jwk
#   - a real spire-server 1.13.3 federating with tessera's https_spiffe bundle endpoint, and a
#     tessera federating with spire-server's bundle endpoint
#
#   interop/oidc.sh
#
# Prints one PASS/FAIL/SKIP line per check and ends with "N passed, M failed"; exits non-zero
# on any failure. A missing Python, Go or spire-server binary is a SKIP with the reason.
#
# Environment:
#   TESSERA_INTEROP_CACHE  cache dir (default ${XDG_CACHE_HOME:-~/.cache}/tessera-interop)
#   TESSERA_BIN            use this tessera binary instead of building one
#   SPIRE_SERVER           spire-server binary (default ~/.cache/tessera-bench/bin/spire-server)
#   PYTHON                 interpreter for the venv (default python3)
#   KEEP_TMP=1             keep the temp dir
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/interop/oidc"
CACHE=${TESSERA_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera-interop}
PYTHON=${PYTHON:-python3}
SPIRE_SERVER=${SPIRE_SERVER:-$HOME/.cache/tessera-bench/bin/spire-server}
TD=oidc.test
AS_AUD="https://as.example/token"
PASS=0 FAIL=0
pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP $*"; }
log() { printf '==> %s\n' "$*" >&2; }
free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 40000))
}
wait_http() { # url [curl args]: until it answers, 15 s at most
  local url=$1; shift
  for _ in $(seq 150); do curl -fsS "$@" "$url" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

mkdir -p "$CACHE/bin"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [[ ${KEEP_TMP:-} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

if [[ -n ${TESSERA_BIN:-} ]]; then BIN=$TESSERA_BIN; else
  log "cargo build --bin tessera"
  (cd "$ROOT" && cargo build --quiet --bin tessera) || { fail "cargo build"; echo "$PASS passed, $FAIL failed"; exit 1; }
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera"
fi

OIDC_PORT=$(free_port) BE_PORT=$(free_port)
ISSUER="http://127.0.0.1:$OIDC_PORT"
cat > "$TMP/tessera.toml" <<TOML
trust_domain = "$TD"
socket_path = "$TMP/api.sock"
data_dir = "$TMP/data"
jwt_issuer = "$ISSUER"
[oidc]
listen = "127.0.0.1:$OIDC_PORT"
[bundle_endpoint]
listen = "127.0.0.1:$BE_PORT"
profile = "https_spiffe"
[[entries]]
spiffe_id = "spiffe://$TD/client"
selectors = ["unix:uid:$(id -u)"]
TOML
"$BIN" run -c "$TMP/tessera.toml" >"$TMP/tessera.log" 2>&1 &
PIDS+=($!)
wait_http "$ISSUER/.well-known/openid-configuration" || { fail "tessera serves discovery ($(tail -3 "$TMP/tessera.log"))"; echo "$PASS passed, $FAIL failed"; exit 1; }
pass "tessera serves $ISSUER/.well-known/openid-configuration"

# Count a checker's PASS/FAIL lines; a checker that exits non-zero without a FAIL line (a crash)
# is a failure too, with its last lines.
tally() {
  local out=$1 rc=$2 name=$3 fails=0
  while read -r line; do
    case $line in PASS*) pass "${line#PASS }";; FAIL*) fail "${line#FAIL }"; fails=1;; esac
  done <"$out"
  if [[ $rc != 0 && $fails == 0 ]]; then fail "$name exited $rc: $(tail -2 "$out" | tr '\n' ' ')"; fi
}

token_for() { "$BIN" api fetch jwt -a "$1" -s "$TMP/api.sock" | awk '/^token\(/{getline; gsub(/[ \t]/,""); print; exit}'; }

# --- Python -------------------------------------------------------------
VENV="$CACHE/venv-oidc"
REQS="$HERE/requirements.txt"
if ! command -v "$PYTHON" >/dev/null; then
  skip "Python checks: no $PYTHON"
else
  if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$REQS" "$VENV/.tessera-requirements"; then
    log "venv $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" \
      && cp "$REQS" "$VENV/.tessera-requirements"
  fi
  if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import jwt, authlib, joserfc' 2>/dev/null; then
    T1=$(token_for "$AS_AUD") T2=$(token_for "https://other.example/token")
    "$VENV/bin/python" "$HERE/oidc_check.py" "$ISSUER" "$T1" "$T2" "$AS_AUD" >"$TMP/py-oidc.out" 2>&1
    tally "$TMP/py-oidc.out" $? oidc_check.py
    # WIT-SVID through a client generated from the proto; the WPT proof of possession.
    "$VENV/bin/python" "$HERE/wit_check.py" "$TMP/api.sock" "$ROOT/proto" "$TMP/pygen" >"$TMP/py-wit.out" 2>&1
    tally "$TMP/py-wit.out" $? wit_check.py
  else
    skip "Python checks: cannot install $REQS into $VENV"
  fi
fi

# --- Go -----------------------------------------------------------------
if ! command -v go >/dev/null; then
  skip "go-oidc: no Go toolchain"
else
  GO_BIN="$CACHE/bin/oidc-verify"
  if (cd "$HERE/go" && go build -o "$GO_BIN" .) 2>"$TMP/go-build.log"; then
    T=$(token_for "go-client")
    if out=$("$GO_BIN" "$ISSUER" go-client "$T" 2>&1); then pass "go-oidc verifies a JWT-SVID via discovery: $out"
    else fail "go-oidc verifies a JWT-SVID via discovery: $out"; fi
    if out=$("$GO_BIN" "$ISSUER" someone-else "$T" 2>&1); then fail "go-oidc refuses the wrong audience: $out"
    else pass "go-oidc refuses the wrong audience"; fi
  else
    skip "go-oidc: build failed ($(tail -1 "$TMP/go-build.log"))"
  fi
fi

# --- spire-server federating with tessera's bundle endpoint ---------------
if ! command -v "$PYTHON" >/dev/null; then
  skip "SPIRE federation: no $PYTHON (needed to shape the bootstrap bundle)"
elif [[ ! -x $SPIRE_SERVER ]]; then
  skip "SPIRE federation: no spire-server at $SPIRE_SERVER (bench/install-spire ~/.cache/tessera-bench v1.13.3)"
else
  SP_PORT=$(free_port) SP_BE_PORT=$(free_port)
  SOCK="$TMP/spire/api.sock"
  mkdir -p "$TMP/spire/data"
  cat > "$TMP/spire/server.conf" <<HCL
server {
    bind_address = "127.0.0.1"
    bind_port    = "$SP_PORT"
    socket_path  = "$SOCK"
    trust_domain = "spire.test"
    data_dir     = "$TMP/spire/data"
    log_level    = "DEBUG"
    federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port    = $SP_BE_PORT
        }
        federates_with "$TD" {
            bundle_endpoint_url = "https://127.0.0.1:$BE_PORT"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://$TD/tessera/bundle-endpoint"
            }
        }
    }
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3"  connection_string = "$TMP/spire/data/datastore.sqlite3" } }
    KeyManager "memory" { plugin_data {} }
    NodeAttestor "join_token" { plugin_data {} }
}
HCL
  "$SPIRE_SERVER" run -config "$TMP/spire/server.conf" >"$TMP/spire/server.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do "$SPIRE_SERVER" healthcheck -socketPath "$SOCK" >/dev/null 2>&1 && break; sleep 0.2; done
  # Bootstrap: tessera's X.509 roots only (the JWT keys must come from the endpoint).
  curl -fsSk "https://127.0.0.1:$BE_PORT/" \
    | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); d["keys"]=[k for k in d["keys"] if k["use"]=="x509-svid"]; print(json.dumps(d))' \
    > "$TMP/tessera-initial.json"
  "$SPIRE_SERVER" bundle set -socketPath "$SOCK" -format spiffe -id "spiffe://$TD" -path "$TMP/tessera-initial.json" >/dev/null
  KID=$(curl -fsS "$ISSUER/keys" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["kid"])')
  ok=
  for _ in $(seq 60); do
    "$SPIRE_SERVER" federation refresh -socketPath "$SOCK" -id "$TD" >/dev/null 2>&1
    "$SPIRE_SERVER" bundle list -socketPath "$SOCK" -format spiffe -id "spiffe://$TD" > "$TMP/spire-list.txt" 2>&1
    grep -q "$KID" "$TMP/spire-list.txt" && { ok=1; break; }
    sleep 0.5
  done
  if [[ -n $ok ]]; then
    pass "spire-server 1.13.3 federates with tessera's https_spiffe bundle endpoint (bundle list holds spiffe://$TD and JWT kid $KID)"
    { echo "spire-server bundle list -format spiffe -id spiffe://$TD:"; grep -E '"(use|kid)"|spiffe_sequence' "$TMP/spire-list.txt"; } >&2
    grep -E "Bundle refreshed|bundle.*$TD" "$TMP/spire/server.log" | tail -2 >&2
  else
    fail "spire-server federates with tessera's bundle endpoint: $(tail -3 "$TMP/spire-list.txt") $(grep -i "error" "$TMP/spire/server.log" | tail -2)"
  fi

  # The other way: a second tessera federates with spire-server's https_spiffe bundle endpoint.
  "$SPIRE_SERVER" bundle show -socketPath "$SOCK" -format spiffe > "$TMP/spire-initial.json"
  cat > "$TMP/fed.toml" <<TOML
trust_domain = "fed.test"
socket_path = "$TMP/fed/api.sock"
data_dir = "$TMP/fed-data"
[[federation]]
trust_domain = "spire.test"
bundle_path = "$TMP/spire-initial.json"
bundle_endpoint_url = "https://127.0.0.1:$SP_BE_PORT"
profile = "https_spiffe"
endpoint_spiffe_id = "spiffe://spire.test/spire/server"
[[entries]]
spiffe_id = "spiffe://fed.test/client"
selectors = ["unix:uid:$(id -u)"]
federates_with = ["spire.test"]
TOML
  mkdir -p "$TMP/fed"
  "$BIN" run -c "$TMP/fed.toml" >"$TMP/fed.log" 2>&1 &
  PIDS+=($!)
  ok=
  for _ in $(seq 100); do grep -q "federated bundle updated from its endpoint" "$TMP/fed.log" && { ok=1; break; }; sleep 0.1; done
  if [[ -n $ok ]] && "$BIN" api fetch bundles -s "$TMP/fed/api.sock" > "$TMP/fed-bundles.txt" 2>&1 && grep -q "spiffe://spire.test" "$TMP/fed-bundles.txt"; then
    pass "tessera federates with spire-server's https_spiffe bundle endpoint (FetchX509Bundles holds spiffe://spire.test)"
    grep "federated bundle updated" "$TMP/fed.log" | tail -1 >&2
    grep -E "^(X.509|JWT) bundle" "$TMP/fed-bundles.txt" >&2
  else
    fail "tessera federates with spire-server's bundle endpoint: $(grep -E "federat" "$TMP/fed.log" | tail -2) $(cat "$TMP/fed-bundles.txt" 2>/dev/null | head -3)"
  fi
fi

echo "$PASS passed, $FAIL failed"
[[ $FAIL == 0 ]]
