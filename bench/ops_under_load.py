#!/usr/bin/env python3
"""The `ops` scenario of bench/run (issue 22): failed requests and p99 latency while a
crew server's app is changed under steady keep-alive traffic.

  run      `crew server` (live.py's Server), a Python web app pushed at web=2, and
           CLIENTS keep-alive clients (loopback only), each at RATE requests a second,
           through the router; then, ROUNDS times, each operation in turn:
           config:set, restart, restart web.1, restart web, rollback, scale web=3
           then web=2, git push, and SIGKILL of one web dyno's process
  skip     record that the scenario could not run
  report   print the Markdown section from the results file

An operation's window runs from its command until the web dynos it replaces have
all been replaced and web=2 is all `up` again, plus a second. For each, the requests
and failures in the window and its p99 against the p99 of the 3 s before. Like
live.py, every measurement appends one JSON object to --results, the process is a
child subreaper and every wait has a deadline.
"""

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
import harness  # noqa: E402  (same directory)
from live import (  # noqa: E402
    OtherWork, Server, busy_note, median, recording_options, say, verdict, wait_until,
)

APP_NAME = "opsbench"

# The demo app's kind of web dyno: Python's threading server, keep-alive.
APP = r'''
import os
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("dyno=%s\n" % os.environ.get("DYNO")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hello).serve_forever()
'''

WEB = 2  # the formation between operations
BEFORE = 3.0  # seconds of load before an operation that its p99 is compared with
SETTLE = 1.0  # seconds of the window after the formation is back
PAUSE = 2.0  # seconds between operations
CRASH = "crash (SIGKILL web)"

# In the order they run each round.
OPERATIONS = ["config:set", "restart", "restart web.1", "restart web", "rollback",
              "scale web=3, web=2", "git push", CRASH]


class Sample:
    __slots__ = ("start", "end", "ok", "detail", "dyno")

    def __init__(self, start, end, ok, detail, dyno):
        self.start, self.end, self.ok, self.detail, self.dyno = start, end, ok, detail, dyno


class Load:
    """Keep-alive clients, each at a steady rate; every request's Sample."""

    def __init__(self, port, clients, rate):
        self.port, self.rate = port, rate
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.samples = []
        self.threads = [threading.Thread(target=self.client, daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def client(self):
        conn = None
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            # A client that fell behind does not burst to catch up.
            next_at = max(next_at + interval, time.monotonic() - interval)
            started = time.monotonic()
            ok, detail, dyno = False, "", None
            for _attempt in (1, 2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    conn.request("GET", "/", headers={"Host": f"{APP_NAME}.localhost"})
                    r = conn.getresponse()
                    body = r.read().decode(errors="replace")
                    ok = r.status == 200
                    if ok:
                        dyno = body.strip().removeprefix("dyno=")
                    else:
                        detail = f"{r.status} {body.strip()[-100:]}"
                    if r.will_close:
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    # A kept connection closed while idle is tried again once on a
                    # new one, as HTTP clients do; a second failure counts.
                    if conn is not None:
                        conn.close()
                    conn = None
                    detail = repr(e)
            with self.lock:
                self.samples.append(Sample(started, time.monotonic(), ok, detail, dyno))
        if conn is not None:
            conn.close()

    def started_between(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s.start < t1]

    def in_flight_at(self, t):
        """Requests under way at t (any dyno): at most CLIENTS."""
        with self.lock:
            return sum(1 for s in self.samples if s.start <= t < s.end)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(70)


def p99_ms(samples):
    times = sorted(s.end - s.start for s in samples)
    if not times:
        return None
    return times[min(len(times) - 1, int(len(times) * 0.99))] * 1000


def cmd_run(a):
    work = os.path.join(a.dir, "ops")
    os.makedirs(work)
    server = Server(a, work)
    summary = dict(rounds=a.rounds, clients=a.clients, rate=a.rate, web=WEB)
    other = OtherWork()
    load = None
    with server.scenario(summary, "ops        crew     "), keep_log_on_failure(server, a, summary):
        server.start()
        summary["command"] = " ".join(["crew"] + server.cmd[1:]).replace(work, "TMP")
        repo = server.new_app(APP_NAME, {"Procfile": "web: python3 app.py\n", "app.py": APP})
        server.git("push", "-q", "crew", "main", cwd=repo, deadline=a.deadline)
        server.crew("scale", f"web={WEB}", cwd=repo)

        def web():
            if server.proc.poll() is not None:
                raise RuntimeError(f"crew server exited ({server.proc.returncode})")
            return server.web_dynos(APP_NAME)

        def back(replaced, old_pids, count=WEB):
            """Waits until `count` web dynos are up and those named in `replaced`
            have pids they did not have before (an old release's dyno of the same
            name may still be listed until then)."""
            def done():
                dynos = web()
                return (len(dynos) == count and all(d["state"] == "up" for d in dynos)
                        and all(d.get("pid") not in old_pids
                                for d in dynos if d["name"] in replaced))
            wait_until(f"{count} web dynos up, {', '.join(sorted(replaced)) or 'none'} "
                       "replaced", a.deadline, done, poll=0.05)

        back(set(), set())

        def app_errors():
            status, app = server.api.get(f"/apps/{APP_NAME}")
            return dict(app.get("router_errors") or {}) if status == 200 else {}

        pushes = [0]
        killed = {}

        def operate(name, r):
            """Runs one operation; waits until the dynos it replaces are back."""
            before = web()
            pids = {d.get("pid") for d in before if d.get("pid")}
            every = {d["name"] for d in before}
            if name == "config:set":
                server.crew("config:set", f"ROUND={r}", cwd=repo)
                back(every, pids)
            elif name == "restart":
                server.crew("restart", cwd=repo)
                back(every, pids)
            elif name == "restart web.1":
                server.crew("restart", "web.1", cwd=repo)
                back({"web.1"}, pids)
            elif name == "restart web":
                server.crew("restart", "web", cwd=repo)
                back(every, pids)
            elif name == "rollback":
                server.crew("rollback", cwd=repo)
                back(every, pids)
            elif name == "scale web=3, web=2":
                server.crew("scale", f"web={WEB + 1}", cwd=repo)
                back(set(), pids, WEB + 1)
                server.crew("scale", f"web={WEB}", cwd=repo)
                back(set(), pids)
            elif name == "git push":
                pushes[0] += 1
                with open(f"{repo}/bump.txt", "w") as f:
                    f.write(f"{pushes[0]}\n")
                server.git("add", "bump.txt", cwd=repo)
                server.git("commit", "-q", "-m", f"bump {pushes[0]}", cwd=repo)
                server.git("push", "-q", "crew", "main", cwd=repo, deadline=a.deadline)
                back(every, pids)
            elif name == CRASH:
                victim = next(d for d in before if d.get("pid"))
                killed["at"] = time.monotonic()
                os.kill(int(victim["pid"]), signal.SIGKILL)
                killed["dyno"] = victim["name"]
                back({victim["name"]}, pids)
            else:
                raise ValueError(name)

        load = Load(server.router_port, a.clients, a.rate)
        load_started = time.monotonic()
        time.sleep(BEFORE)
        for r in range(1, a.rounds + 1):
            for name in OPERATIONS:
                errors0 = app_errors()
                t0 = time.monotonic()
                operate(name, r)
                time.sleep(SETTLE)
                t1 = time.monotonic()
                during = load.started_between(t0, t1)
                before = load.started_between(t0 - BEFORE, t0)
                failed = [s for s in during if not s.ok]
                errors1 = app_errors()
                codes = {k: v - errors0.get(k, 0) for k, v in errors1.items()
                         if v - errors0.get(k, 0) > 0}
                row = dict(op=name, requests=len(during), failed=len(failed),
                           p99_before_ms=p99_ms(before), p99_during_ms=p99_ms(during),
                           window_s=t1 - t0, codes=codes,
                           examples=[s.detail for s in failed[:3]])
                if name == CRASH:
                    row["killed"] = killed["dyno"]
                    row["in_flight"] = load.in_flight_at(killed["at"])
                    # Answered by the killed dyno just before it died: it was
                    # taking its share of the load.
                    row["killed_served_before"] = sum(
                        1 for s in before if s.dyno == killed["dyno"])
                a.run = r
                harness_record(a, status="complete", **row)
                p99b, p99d = row["p99_before_ms"], row["p99_during_ms"]
                say(f"ops        round {r} {name:<20} requests {len(during):>5}, "
                    f"failed {len(failed)}, p99 {fmt_ms(p99b)} before, {fmt_ms(p99d)} during"
                    + (f", in flight at the kill {row['in_flight']}" if name == CRASH else "")
                    + (f", router errors {codes}" if codes else "")
                    + (f"; e.g. {failed[0].detail}" if failed else ""))
                time.sleep(PAUSE)
        load.stop()
        summary["load_s"] = time.monotonic() - load_started
        summary["requests"] = len(load.samples)
        summary["router_errors"] = app_errors()
        load = None
        server.stopped(summary, "ops        crew     ")
    if load is not None:
        load.stop()
    a.run = None
    summary["other_cores"] = other.cores()
    harness_record(a, summary=True, **summary)


@contextlib.contextmanager
def keep_log_on_failure(server, a, summary):
    """A scenario that fails leaves the server's log beside the results (the
    scenario's directory is removed), for a look at what the dynos did."""
    try:
        yield
    except Exception:
        if getattr(server, "log_path", None) and os.path.exists(server.log_path):
            kept = os.path.splitext(a.results)[0] + ".ops-server.log"
            shutil.copyfile(server.log_path, kept)
            summary["server_log"] = kept
            say(f"ops        the server's log is in {kept}")
        raise


def harness_record(a, **fields):
    row = {"scenario": "ops", "tool": "crew", "version": a.version, "run": a.run}
    row.update(fields)
    with open(a.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def achieved(summary):
    if not summary.get("load_s") or not summary.get("requests"):
        return ""
    return f" (they sent {summary['requests'] / summary['load_s']:,.0f} requests/s on average)"


def fmt_ms(x):
    return "n/a" if x is None else f"{x:.0f} ms"


def cmd_skip(a):
    a.run = None
    harness_record(a, skipped=a.reason.replace("|", "/").replace("\n", " "))
    say(f"ops        skipped: {a.reason}")


# ---------------------------------------------------------------- report


def cmd_report(a):
    rows = [json.loads(line) for line in open(a.results)]
    rows = [r for r in rows if r.get("scenario") == "ops"]
    if not rows:
        return
    print("## Operations under load (issue 22)\n")
    skipped = next((r for r in rows if "skipped" in r), None)
    if skipped:
        print(f"Skipped: {skipped['skipped']}\n")
        return
    summary = next((r for r in rows if r.get("summary")), {})
    ops = [r for r in rows if not r.get("summary")]
    clients, rate = summary.get("clients", "?"), summary.get("rate", "?")
    version = next((r.get("version") for r in rows if r.get("version")), "")
    print(f"crew {version or '(version unknown)'} (`cargo build --release -p crew`).\n")
    print(f"`{summary.get('command', 'crew server …')}` (TMP a fresh temp dir) with one "
          f"app, `{APP_NAME}`, deployed by `git push`: a Python `ThreadingHTTPServer` "
          f"answering every GET with its `DYNO` on kept-alive connections (the demo "
          f"app's kind of web dyno), at `web={WEB}`. {clients} clients (Python threads, "
          f"loopback), each on one kept-alive connection, send a GET every "
          f"{1000 / float(rate):.0f} ms through the router ({clients} × {rate} "
          f"requests/s), or as soon as its previous answer came when that took "
          f"longer{achieved(summary)}, from before the first operation until after the "
          f"last. Then "
          f"{summary.get('rounds', '?')} rounds of each operation in turn:\n")
    print("- `crew config:set ROUND=N`, `crew restart`, `crew restart web.1`, "
          "`crew restart web`, `crew rollback`; `crew scale web=3` until 3 are up, then "
          "`web=2`; `git push` of a new commit; and SIGKILL of one web dyno's process "
          "(its pid from the API), which the engine restarts.")
    print("- An operation's *window* is from its command until every web dyno it "
          "replaces has a new pid and `web=2` is all `up` again (`GET "
          f"/apps/{APP_NAME}/dynos`), plus {SETTLE:.0f} s; {PAUSE:.0f} s pass between "
          "operations.")
    print("- A request *failed* if its answer was not `200`, or no answer came. A "
          "client tries a request again on a new connection only when its kept one was "
          "closed before any answer (as HTTP clients do with a connection closed while "
          "idle); a second failure counts.")
    print(f"- *p99 before* is of the requests in the {BEFORE:.0f} s before the command, "
          "*p99 during* of those in the window; each the median over the rounds, "
          "with every round's after it. *router errors* are the H-codes `crew "
          "apps:info` counted in the windows.\n")
    print("| operation | failed requests, each round | requests | p99 before | "
          "p99 during | p99 during, each round | router errors |")
    print("|---|---|---:|---:|---:|---|---|")
    for name in OPERATIONS:
        mine = [r for r in ops if r.get("op") == name]
        if not mine:
            continue
        codes = {}
        for r in mine:
            for k, v in (r.get("codes") or {}).items():
                codes[k] = codes.get(k, 0) + v
        print(f"| {name} | {' '.join(str(r['failed']) for r in mine)} | "
              f"{sum(r['requests'] for r in mine):,} | "
              f"{fmt_ms(median(r['p99_before_ms'] for r in mine))} | "
              f"{fmt_ms(median(r['p99_during_ms'] for r in mine))} | "
              f"{', '.join(fmt_ms(r['p99_during_ms']).removesuffix(' ms') for r in mine)} ms | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(codes.items())) or 'none'} |")
    examples = [(r["op"], r["run"], e) for r in ops for e in r.get("examples") or []]
    if examples:
        print("\nFailed requests, for example:\n")
        for op, run, e in examples[:10]:
            print(f"- {op}, round {run}: `{e}`")
    if summary.get("status") != "complete":
        print(f"\nThe scenario did not finish: {summary.get('status', 'not run')}")
        if summary.get("server_log"):
            print(f"(the server's log: `{os.path.basename(summary['server_log'])}` in "
                  "`bench/results/`)")
    print(f"\n{summary.get('requests', 0):,} requests in all. crew server's peak RSS: "
          f"{harness.fmt_rss(summary.get('server_hwm_kb'))}; it stopped "
          f"{(summary.get('stop_s') or 0) * 1000:.0f} ms after SIGTERM, leaving "
          f"{harness.fmt_left(summary.get('leftover') or [])} behind.\n")

    print("### crew against the target of issue 22\n")
    print("| target | measured | |")
    print("|---|---|---|")
    complete = summary.get("status") == "complete"
    for name in OPERATIONS:
        mine = [r for r in ops if r.get("op") == name]
        if not mine:
            continue
        failed = sum(r["failed"] for r in mine)
        if name == CRASH:
            flights = [r.get("in_flight", 0) for r in mine]
            print(f"| {name}: failed at most the requests in flight on that dyno | "
                  f"{failed} failed in {len(mine)} rounds; in flight on all dynos at the "
                  f"kill, each round: {', '.join(map(str, flights))} | "
                  f"{verdict(all(r['failed'] <= r.get('in_flight', 0) for r in mine))} |")
        else:
            print(f"| {name}: 0 failed, every round | {failed} failed in {len(mine)} "
                  f"rounds | {verdict(failed == 0 and complete)} |")
    print()
    crash = [r for r in ops if r.get("op") == CRASH]
    if crash:
        failed = sum(r["failed"] for r in crash)
        print(f"The crash: SIGKILL ends the dyno with no answer to the requests it is "
              "reading or answering, and its kept router connections close. The router "
              "sends such a request again to the other `up` dyno when nothing of an "
              "answer has reached the client and the method is idempotent (a GET here) "
              "or the connection was a kept one; until the engine has seen the exit, a "
              "request picked for the dead dyno finds its port refusing and goes to the "
              "next. So only a request the router cannot replay could fail: one not "
              "idempotent on a new connection, or one whose answer had begun. "
              f"Here {failed} failed; at most the requests in flight at the kill "
              "(counted over both dynos, since the client does not know which dyno a "
              "request is on until it answers) could have.\n")
    busy_note([summary.get("other_cores")])


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    rec = recording_options()
    sp = sub.add_parser("run", parents=[rec])
    sp.add_argument("--crew", required=True)
    sp.add_argument("--port", type=int, default=64000, help="look for free ports from here")
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--clients", type=int, default=8)
    sp.add_argument("--rate", type=float, default=50, help="requests a second per client")
    sp.add_argument("dir")
    sp = sub.add_parser("skip", parents=[rec])
    sp.add_argument("--reason", required=True)
    sp = sub.add_parser("report")
    sp.add_argument("--results", required=True)
    a = p.parse_args()
    harness.dispatch(a, globals(), "ops")


if __name__ == "__main__":
    main()
