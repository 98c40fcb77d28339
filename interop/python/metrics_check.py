"""tessera's telemetry interop check.

Reads /metrics, /live and /ready from a running tessera over its telemetry listener and its admin
socket, and parses the metrics with prometheus_client's own parsers (the OpenMetrics parser for the
default format, the classic text parser for `Accept: text/plain; version=0.0.4`). Then makes the
counters move with py-spiffe (a fetch, and a refusal) and checks they did. Prints one
"PASS metrics <check> <detail>" or "FAIL metrics <check>: <reason>" line per check; exit status 1
if any failed.

usage: metrics_check.py --url http://127.0.0.1:PORT --admin-socket PATH --socket PATH --id SPIFFE_ID
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import time
import urllib.request
from typing import Callable, Dict, Tuple

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from spiffe import SpiffeId, WorkloadApiClient

OPENMETRICS = "application/openmetrics-text"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"

# Metric families outside checks read (OpenMetrics family names: counters without _total).
REQUIRED = {
    "tessera_attestations": "counter",
    "tessera_svids_issued": "counter",
    "tessera_refusals": "counter",
    "tessera_open_streams": "gauge",
    "tessera_attestation_duration_seconds": "histogram",
    "tessera_reloads": "counter",
    "tessera_revocations": "counter",
    "tessera_withdrawals": "counter",
    "tessera_drift": "counter",
    "tessera_key_rotations": "counter",
    "tessera_digest_cache_hits": "counter",
    "tessera_digest_cache_misses": "counter",
    "tessera_jwt_validations": "counter",
    "tessera_ca_expiry_seconds": "gauge",
}

failures = 0

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def run(check: str, f: Callable[[], str]) -> None:
    global failures
    try:
        detail = f()
    except Exception as e:  # noqa: BLE001 - every error is a FAIL line
        failures += 1
        print(f"FAIL metrics {check}: {type(e).__name__}: {e}", flush=True)
        return
    print(f"PASS metrics {check} {detail}", flush=True)


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def get(url: str, accept: str | None = None) -> Tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get_unix(path: str, target: str, accept: str | None = None) -> Tuple[int, str, str]:
    conn = UnixConnection(path)
    conn.request("GET", target, headers={"Accept": accept} if accept else {})
    r = conn.getresponse()
    out = r.status, r.getheader("Content-Type", ""), r.read().decode()
    conn.close()
    return out


def samples(families) -> Samples:
    out: Samples = {}
    for fam in families:
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape_openmetrics(url: str) -> Tuple[dict, Samples]:
    status, ctype, body = get(url + "/metrics", OPENMETRICS)
    require(status == 200, f"/metrics answered {status}")
    require(ctype.startswith(OPENMETRICS), f"content type {ctype!r}")
    families = list(parse_openmetrics(body))
    return {f.name: f.type for f in families}, samples(families)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="telemetry listener, e.g. http://127.0.0.1:9988")
    ap.add_argument("--admin-socket", required=True)
    ap.add_argument("--socket", required=True, help="Workload API socket")
    ap.add_argument("--id", required=True, help="SPIFFE ID this caller holds")
    args = ap.parse_args()
    url = args.url.rstrip("/")

    def ready() -> str:
        deadline = time.monotonic() + 10
        while True:
            status, _, body = get(url + "/ready")
            if status == 200:
                return body.strip()
            require(time.monotonic() < deadline, f"/ready still {status}: {body}")
            time.sleep(0.05)

    run("ready", ready)
    run("live", lambda: str(require(get(url + "/live")[0] == 200, "/live not 200") or "200"))

    state: Dict[str, Samples] = {}

    def openmetrics() -> str:
        types, s = scrape_openmetrics(url)
        for name, kind in REQUIRED.items():
            require(types.get(name) == kind, f"{name}: {types.get(name)!r}, want {kind}")
        require(s[("tessera_svids_issued_total", (("kind", "x509"),))] >= 1, "no X.509-SVID counted")
        require(s[("tessera_attestations_total", (("result", "success"),))] >= 1, "no attestation counted")
        require(s[("tessera_attestation_duration_seconds_count", ())] >= 1, "no attestation timed")
        require(s[("tessera_ca_expiry_seconds", ())] > 0, "CA expired")
        state["before"] = s
        return f"{len(types)} families, {len(s)} samples (prometheus_client OpenMetrics parser)"

    run("openmetrics", openmetrics)

    def classic() -> str:
        status, ctype, body = get(url + "/metrics", PROMETHEUS_TEXT)
        require(status == 200, f"/metrics answered {status}")
        require(ctype.startswith(PROMETHEUS_TEXT), f"content type {ctype!r}")
        families = list(parse_text(body))
        names = {f.name for f in families}
        require("tessera_open_streams" in names, f"families: {sorted(names)}")
        s = samples(families)
        require(s[("tessera_svids_issued_total", (("kind", "x509"),))] >= 1, "no X.509-SVID counted")
        return f"{len(families)} families (prometheus_client text parser)"

    run("prometheus-text", classic)

    def admin() -> str:
        status, ctype, body = get_unix(args.admin_socket, "/metrics")
        require(status == 200 and ctype.startswith(OPENMETRICS), f"{status} {ctype}")
        n = len(list(parse_openmetrics(body)))
        require(get_unix(args.admin_socket, "/ready")[0] == 200, "admin /ready not 200")
        return f"admin socket: {n} families"

    run("admin-socket", admin)

    def counters_move() -> str:
        before = state["before"]
        client = WorkloadApiClient(socket_path=f"unix:{args.socket}", default_timeout=10.0)
        try:
            client.fetch_x509_svid()
            other = SpiffeId(args.id + "-not-mine")
            try:
                client.fetch_jwt_svid(audience={"metrics"}, subject=other)
                raise AssertionError(f"got a JWT-SVID for {other}")
            except AssertionError:
                raise
            except Exception:  # noqa: BLE001 - the refusal is the point
                pass
        finally:
            client.close()
        _, after = scrape_openmetrics(url)

        def moved(name: str, labels: Tuple[Tuple[str, str], ...]) -> float:
            return after[(name, labels)] - before[(name, labels)]

        x509 = moved("tessera_svids_issued_total", (("kind", "x509"),))
        refused = moved("tessera_refusals_total", (("reason", "not_entitled"),))
        require(x509 == 1, f"x509 counter moved by {x509}")
        require(refused == 1, f"not_entitled refusals moved by {refused}")
        return "x509 +1, refusals{reason=not_entitled} +1"

    run("counters-move", counters_move)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
