#!/usr/bin/env python3
"""What happens when a gateway replica leaves in the middle of a burst (docs/workers-and-replicas.md,
"The fleet example"): the fleet of deploy/fleet (three replicas, Envoy --concurrency 2 each,
behind the round-robin front) and a login API whose refresh tokens work once (delay 1 s per
refresh call, so the burst is out while it answers). For each trial a fresh fleet, one session,
a burst of 32 requests with its access token expired through the front, and, as soon as the
login API has received the refresh call, one replica's Envoy is stopped by its PID (SIGTERM):

  owner  the replica that owns the session on the ring (it is making the login API call)
  other  a replica that does not own it (it holds some of the burst's requests)
  none   no replica stops (the baseline)

Prints, per trial and summed: login API calls (and their answers), what the 32 clients got
(200 rotated / 401 with the four clearing cookies, i.e. logged out / other statuses / socket
errors) and the slowest answer.

    scripts/build-wasm.sh
    .venv/bin/python tests/load/fleet_leave.py --trials 5
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "e2e"))

from harness import tokens  # noqa: E402
from harness.client import request  # noqa: E402
from harness.upstreams import EchoApp  # noqa: E402
from fleet_support import SingleUseLoginApi, burst, expired_session, start_fleet  # noqa: E402

N = 32
REFRESH_PATH = "/api/auth/refreshtoken"


def owner_of(fleet, key: str) -> int:
    """The replica (0-based) whose refresh listener the ring picks for `key`: a probe through
    replica 1's router with the key and no cookie (the owner answers 401, no login API call)."""
    before = fleet.listener_requests("refresh")
    r = request(fleet.base + 11, "POST", REFRESH_PATH, headers={"x-etls-session-key": key})
    assert r.status == 401, r
    after = fleet.listener_requests("refresh")
    (owner,) = [i for i, (a, b) in enumerate(zip(after, before)) if a != b]
    return owner


def filter_counters(fleet) -> Counter:
    """The filter's denied_* counters, summed over the replicas still running."""
    out: Counter = Counter()
    for e in fleet.replicas:
        if not e.alive():
            continue
        _, body = e.admin_get("/stats?filter=^wasmcustom.etls_auth.denied_")
        for line in body.splitlines():
            k, _, v = line.partition(": ")
            if v.isdigit() and int(v):
                out[k.removeprefix("wasmcustom.etls_auth.")] += int(v)
    return out


def outcome(r) -> str:
    if isinstance(r, Exception):
        return f"socket error ({type(r).__name__})"
    if r.status == 200:
        return "200 rotated" if r.cookie("accessToken") is not None else "200 not rotated"
    cleared = [c for c in r.set_cookies if c.value == "" or c.max_age == 0]
    if r.status == 401 and len(cleared) == 4:
        return "401 logged out (4 clearing cookies)"
    return f"{r.status} {r.body[:60].decode('latin-1')!r}"


def trial(app_port: int, scenario: str, delay: float) -> dict:
    api = SingleUseLoginApi(f"leave-api-{scenario}", delay=delay).start()
    fleet = start_fleet(f"leave-{scenario}", app_port, api.port)
    try:
        up = api.issue({"id": 4242, "role": "editor"})
        cookies = expired_session(up)
        owner = owner_of(fleet, tokens.session_key(up))
        victim = {"owner": owner, "other": (owner + 1) % 3, "none": None}[scenario]
        results: list = []
        started = time.monotonic()
        t = threading.Thread(target=lambda: results.extend(burst(fleet, cookies, N)))
        t.start()
        stopped_at = None
        if victim is not None:
            for _ in range(200):  # up to 10 s for the refresh call to reach the login API
                if api.refresh_calls():
                    break
                time.sleep(0.05)
            stopped_at = time.monotonic() - started
            fleet.replicas[victim].stop()
        t.join(timeout=60)
        took = time.monotonic() - started
        denied = filter_counters(fleet)
        return {
            "scenario": scenario,
            "owner": owner + 1,
            "stopped": None if victim is None else victim + 1,
            "stopped_after_s": None if stopped_at is None else round(stopped_at, 2),
            "api_calls": len(api.refresh_calls()),
            "api_answers": Counter(status for _, status in api.answers),
            "clients": Counter(outcome(r) for r in results),
            "denied_on_live_replicas": dict(denied),
            "slowest_s": round(took, 2),
        }
    finally:
        fleet.stop()
        api.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--delay", type=float, default=1.0, help="login API answer delay, seconds")
    ap.add_argument("--scenarios", default="none,other,owner")
    a = ap.parse_args()
    app = EchoApp().start()
    try:
        totals: dict[str, dict] = {}
        for scenario in a.scenarios.split(","):
            for k in range(a.trials):
                res = trial(app.port, scenario, a.delay)
                print(json.dumps({**res, "api_answers": dict(res["api_answers"]), "clients": dict(res["clients"])}), flush=True)
                tot = totals.setdefault(scenario, {"trials": 0, "api_calls": Counter(), "clients": Counter(), "slowest_s": 0.0})
                tot["trials"] += 1
                tot["api_calls"][res["api_calls"]] += 1
                tot["clients"].update(res["clients"])
                tot["slowest_s"] = max(tot["slowest_s"], res["slowest_s"])
        print("summary:")
        for scenario, tot in totals.items():
            print(json.dumps({"scenario": scenario, "trials": tot["trials"],
                              "trials_by_api_calls": dict(sorted(tot["api_calls"].items())),
                              "clients_total": dict(tot["clients"]), "slowest_s": tot["slowest_s"]}))
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
