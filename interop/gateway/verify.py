"""Assertions over what the upstream, the AS and tessera's audit log recorded (gateway.sh's checks).

    verify.py upstream LOG TAG [--header NAME=VALUE ...] [--server NAME] [--forbid VALUE ...]
        The upstream saw at least one request tagged X-Interop-Call: TAG, each of them with every
        --header exactly once and exactly so, from listener --server, with no --forbid value (the
        agent's placeholder) in any header, and no Proxy-Authorization or Proxy-Connection (curl -x
        sends `Proxy-Connection: Keep-Alive`: hop-by-hop, not for the upstream).
    verify.py absent LOG TAG
        The upstream saw no request tagged TAG.
    verify.py as-token UPSTREAM_LOG AS_LOG TAG --grant cc|jb|tx [--sub SPIFFE_ID] [--forbid VALUE ...]
        Each request tagged TAG carried `Authorization: Bearer T` where T is a token the AS issued
        by that grant (for that sub).
    verify.py error-json FILE
        FILE (a response body) is a JSON object with "error" and "reason" strings.
    verify.py audit AUDIT_LOG --agent ID [--route NAME[:CREDENTIAL] ...] [--denied N] [--forbid VALUE ...]
        The audit log has a "gateway_call" line per allowed route (agent, route, credential,
        status, method, host, path, decision "allow"), at least N with decision "deny" (each with a
        reason), every gateway_call line with the fields the contract names, and no path with a
        query string.
Prints one PASS/FAIL line; exits 1 on FAIL.
"""

import argparse
import json
import sys

FIELDS = ["agent", "pid", "uid", "exe", "route", "credential", "method", "host", "path", "status",
          "request_bytes", "response_bytes", "duration_ms", "decision", "reason"]


def out(ok, name, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""))
    sys.exit(0 if ok else 1)


def lines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def tagged(log, tag):
    return [r for r in lines(log) if tag in r["headers"].get("x-interop-call", [])]


def header_problems(r, forbid):
    problems = []
    for name, values in r["headers"].items():
        for v in values:
            for f in forbid:
                if f and f in v:
                    problems.append(f"{name} carries a forbidden value (the agent's placeholder)")
    for hop in ("proxy-authorization", "proxy-connection"):
        if hop in r["headers"]:
            problems.append(f"{hop} forwarded")
    return problems


def redact(v):
    return v[:14] + "..." if len(v) > 14 else v


def cmd_upstream(a):
    reqs = tagged(a.log, a.tag)
    if not reqs:
        out(False, a.name, f"the upstream saw no request tagged {a.tag}")
    problems = []
    for r in reqs:
        if a.server and r.get("server") != a.server:
            problems.append(f"came to listener {r.get('server')}, not {a.server}")
        for h in a.header:
            name, _, value = h.partition("=")
            got = r["headers"].get(name.lower(), [])
            if got != [value]:
                problems.append(f"{name}: {[redact(g) for g in got]}")
        problems += header_problems(r, a.forbid)
    r = reqs[0]
    detail = f"{len(reqs)} request(s), {r['method']} {r['path']}, " + ", ".join(
        f"{h.partition('=')[0]}: {redact(h.partition('=')[2])}" for h in a.header)
    out(not problems, a.name, "; ".join(sorted(set(problems))) or detail)


def cmd_absent(a):
    reqs = tagged(a.log, a.tag)
    out(not reqs, a.name, f"the upstream saw {len(reqs)} request(s) tagged {a.tag}" if reqs else "")


def cmd_as_token(a):
    reqs = tagged(a.upstream_log, a.tag)
    issued = {r["access_token"]: r for r in lines(a.as_log) if r.get("access_token")}
    if not reqs:
        out(False, a.name, f"the upstream saw no request tagged {a.tag}; the AS issued {sorted(r['grant'] for r in issued.values())}")
    problems, subs = [], set()
    for r in reqs:
        auth = r["headers"].get("authorization", [])
        if len(auth) != 1 or not auth[0].startswith("Bearer "):
            problems.append(f"Authorization {[redact(x) for x in auth]}")
            continue
        tok = issued.get(auth[0][len("Bearer "):])
        if tok is None:
            problems.append(f"Bearer {redact(auth[0][7:])} is no token the AS issued")
        elif tok["grant"] != a.grant:
            problems.append(f"token issued by grant {tok['grant']}, not {a.grant}")
        elif a.sub and tok.get("sub") != a.sub:
            problems.append(f"token issued for {tok.get('sub')}, not {a.sub}")
        else:
            subs.add(tok.get("sub") or tok.get("client_id"))
        problems += header_problems(r, a.forbid)
    out(not problems, a.name, "; ".join(sorted(set(problems))) or f"{len(reqs)} request(s) with an AS {a.grant} token for {', '.join(sorted(map(str, subs)))}")


def cmd_error_json(a):
    try:
        with open(a.file) as f:
            body = json.load(f)
        ok = isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("reason"), str)
        out(ok, a.name, json.dumps(body)[:300])
    except (OSError, ValueError) as e:
        with open(a.file, errors="replace") as f:
            out(False, a.name, f"not JSON ({e}): {f.read(300)!r}")


def cmd_audit(a):
    calls = [r for r in lines(a.log) if r.get("event") == "gateway_call"]
    if not calls:
        out(False, a.name, f"no gateway_call line in {a.log}")
    problems = []
    for r in calls:
        missing = [f for f in FIELDS if f not in r]
        if missing:
            problems.append(f"a line lacks {missing}")
        if "?" in str(r.get("path", "")):
            problems.append(f"path with a query: {r['path']}")
        if r.get("decision") not in ("allow", "deny"):
            problems.append(f"decision {r.get('decision')!r}")
        if r.get("decision") == "deny" and not r.get("reason"):
            problems.append("a deny line without a reason")
        if isinstance(r.get("exe"), dict) and not {"path", "sha256"} <= set(r["exe"]):
            problems.append(f"exe {r['exe']}")
    allowed = [r for r in calls if r.get("decision") == "allow"]
    for spec in a.route:
        route, _, cred = spec.partition(":")
        hits = [r for r in allowed if r.get("route") == route and r.get("agent") == a.agent
                and (not cred or r.get("credential") == cred) and isinstance(r.get("status"), int)]
        if not hits:
            seen = sorted({(r.get("route"), r.get("credential"), r.get("agent")) for r in calls if r.get("route") == route}, key=str)
            problems.append(f"no allowed call on route {route} by {a.agent} with credential {cred or '*'} (seen {seen})")
    denied = [r for r in calls if r.get("decision") == "deny"]
    if len(denied) < a.denied:
        problems.append(f"{len(denied)} deny line(s), expected at least {a.denied}")
    text = open(a.log).read()
    for f in a.forbid:
        if f and f in text:
            problems.append("a secret value is in the audit log")
    summary = f"{len(calls)} gateway_call lines: {len(allowed)} allow, {len(denied)} deny; routes " + \
        ", ".join(sorted({f"{r.get('route')}:{r.get('credential')}:{r.get('status')}" for r in allowed}))
    out(not problems, a.name, "; ".join(sorted(set(problems))) or summary)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("upstream")
    p.add_argument("log")
    p.add_argument("tag")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--server")
    p.add_argument("--forbid", action="append", default=[])
    p.set_defaults(fn=cmd_upstream)
    p = sub.add_parser("absent")
    p.add_argument("log")
    p.add_argument("tag")
    p.set_defaults(fn=cmd_absent)
    p = sub.add_parser("as-token")
    p.add_argument("upstream_log")
    p.add_argument("as_log")
    p.add_argument("tag")
    p.add_argument("--grant", required=True)
    p.add_argument("--sub")
    p.add_argument("--forbid", action="append", default=[])
    p.set_defaults(fn=cmd_as_token)
    p = sub.add_parser("error-json")
    p.add_argument("file")
    p.set_defaults(fn=cmd_error_json)
    p = sub.add_parser("audit")
    p.add_argument("log")
    p.add_argument("--agent", required=True)
    p.add_argument("--route", action="append", default=[])
    p.add_argument("--denied", type=int, default=0)
    p.add_argument("--forbid", action="append", default=[])
    p.set_defaults(fn=cmd_audit)
    for p in sub.choices.values():
        p.add_argument("--name", required=True, help="the check's name on its PASS/FAIL line")
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
