#!/usr/bin/env python3
"""Operations under load (issue 22): failed requests and p99 latency while a crew
server's app is changed under steady keep-alive traffic.

    bench/ops_under_load.py --crew target/release/crew [--rounds 5] [--clients 8]

Starts a `crew server` in a temp dir, pushes a Python web app at web=2, and runs
CLIENTS keep-alive clients (loopback only), each at RATE requests a second, through
the router. Then, ROUNDS times, each operation in turn: config:set, restart,
restart web.1, restart web, rollback, scale web=3 then web=2, git push, and SIGKILL
of one web dyno's process. An operation's window runs from the command until the
formation is all up again, plus a second. Prints a table: per operation and round,
the requests and failures in the window, and its p99 against the p99 of the 3 s
before. Every wait has a deadline; the server and everything it started are stopped
at the end, even on failure or Ctrl-C.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

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

NAME = "opsbench"


def wait_until(what, seconds, check, poll=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting for {what}")


class Server:
    def __init__(self, crew, work, port):
        self.crew_bin, self.work = crew, work
        self.home = f"{work}/home"
        os.makedirs(self.home)
        self.env = dict(os.environ, HOME=self.home, GIT_CONFIG_NOSYSTEM="1",
                        GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="bench",
                        GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="bench",
                        GIT_COMMITTER_EMAIL="bench@localhost", NO_COLOR="1")
        for k in ("CREW_API_URL", "CREW_API_KEY", "GIT_DIR", "GIT_WORK_TREE"):
            self.env.pop(k, None)
        data = f"{work}/data"
        self.log = open(f"{work}/server.log", "wb")
        self.proc = subprocess.Popen(
            [crew, "server", "--data", data, "--listen", "127.0.0.1:0", "--router",
             "127.0.0.1:0", "--dyno-ports", f"{port}-{port + 99}"],
            cwd=work, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("crew server exited")
            with open(f"{work}/server.log", "rb") as f:
                text = f.read().decode(errors="replace")
            api = re.search(r"listening on (http://\S+)", text)
            router = re.search(r"at http://APP\.localhost:(\d+)/", text)
            if api and router and os.path.exists(f"{data}/api-token"):
                return api.group(1), int(router.group(1))
            return None

        self.url, self.router = wait_until("the server", 60, ready)
        with open(f"{data}/api-token") as f:
            self.token = f.read().strip()
        self.env.update(CREW_API_URL=self.url, CREW_API_KEY=self.token)

    def run(self, *cmd, cwd, deadline=180):
        p = subprocess.run(list(cmd), cwd=cwd, env=self.env, timeout=deadline, text=True,
                           stdin=subprocess.DEVNULL, capture_output=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {p.stdout}{p.stderr}")
        return p.stdout

    def crew(self, *args, cwd):
        return self.run(self.crew_bin, *args, cwd=cwd)

    def dynos(self):
        request = urllib.request.Request(
            f"{self.url}/apps/{NAME}/dynos",
            headers={"Authorization": f"Bearer {self.token}",
                     "Accept": "application/vnd.heroku+json; version=3"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return [d for d in json.load(r) if d.get("type") == "web"]

    def wait_web_up(self, count, seconds=120):
        wait_until(f"{count} web dynos up", seconds, lambda: (
            len(d := self.dynos()) == count and all(x["state"] == "up" for x in d)))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


class Load:
    """Keep-alive clients at a steady rate; every request's (start, seconds, ok)."""

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
            next_at += interval
            started = time.monotonic()
            ok, detail = False, ""
            for attempt in (1, 2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    conn.request("GET", "/", headers={"Host": f"{NAME}.localhost"})
                    r = conn.getresponse()
                    body = r.read()
                    ok = r.status == 200
                    if not ok:
                        detail = f"{r.status} {body.decode(errors='replace').strip()[-80:]}"
                    if r.will_close:
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    # A kept connection closed while idle is retried once on a
                    # new one, as HTTP clients do; a second failure counts.
                    if conn is not None:
                        conn.close()
                    conn = None
                    detail = repr(e)
            with self.lock:
                self.samples.append((started, time.monotonic() - started, ok, detail))

    def between(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] < t1]

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(70)


def p99(samples):
    times = sorted(s[1] for s in samples)
    if not times:
        return float("nan")
    return times[min(len(times) - 1, int(len(times) * 0.99))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crew", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rate", type=float, default=50, help="requests a second per client")
    p.add_argument("--port", type=int, default=62000, help="first of 100 dyno ports")
    a = p.parse_args()
    crew = os.path.abspath(a.crew)
    work = tempfile.mkdtemp(prefix="crew-ops-bench.")
    server = load = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server = Server(crew, work, a.port)
        repo = f"{work}/{NAME}"
        os.makedirs(repo)
        with open(f"{repo}/Procfile", "w") as f:
            f.write("web: python3 app.py\n")
        with open(f"{repo}/app.py", "w") as f:
            f.write(APP)
        server.run("git", "init", "-q", "-b", "main", cwd=repo)
        server.run("git", "add", "-A", cwd=repo)
        server.run("git", "commit", "-q", "-m", "app", cwd=repo)
        server.crew("apps:create", NAME, cwd=repo)
        server.run("git", "push", "-q", "crew", "main", cwd=repo)
        server.crew("scale", "web=2", cwd=repo)
        server.wait_web_up(2)

        pushes = [0]

        def push():
            pushes[0] += 1
            with open(f"{repo}/bump.txt", "w") as f:
                f.write(f"{pushes[0]}\n")
            server.run("git", "add", "bump.txt", cwd=repo)
            server.run("git", "commit", "-q", "-m", f"bump {pushes[0]}", cwd=repo)
            server.run("git", "push", "-q", "crew", "main", cwd=repo)

        def scale():
            server.crew("scale", "web=3", cwd=repo)
            server.wait_web_up(3)
            server.crew("scale", "web=2", cwd=repo)

        def crash():
            pid = next(d["pid"] for d in server.dynos() if d.get("pid"))
            os.kill(int(pid), signal.SIGKILL)
            # Until the engine has seen it go: then wait_web_up means back up.
            wait_until("the crash seen", 30, lambda: any(
                d["state"] != "up" for d in server.dynos()), poll=0.01)

        ops = [
            ("config:set", lambda r: server.crew("config:set", f"ROUND={r}", cwd=repo)),
            ("restart", lambda r: server.crew("restart", cwd=repo)),
            ("restart web.1", lambda r: server.crew("restart", "web.1", cwd=repo)),
            ("restart web", lambda r: server.crew("restart", "web", cwd=repo)),
            ("rollback", lambda r: server.crew("rollback", cwd=repo)),
            ("scale web=3, web=2", lambda r: scale()),
            ("git push", lambda r: push()),
            ("crash (SIGKILL web)", lambda r: crash()),
        ]
        load = Load(server.router, a.clients, a.rate)
        time.sleep(3)
        rows = []
        for r in range(1, a.rounds + 1):
            for name, op in ops:
                t0 = time.monotonic()
                op(r)
                server.wait_web_up(2)
                time.sleep(1)
                t1 = time.monotonic()
                before = load.between(t0 - 3, t0)
                during = load.between(t0, t1)
                failed = [s for s in during if not s[2]]
                rows.append((name, r, len(during), len(failed), p99(before), p99(during),
                             failed[:3]))
                print(f"round {r} {name:20} requests={len(during)} failed={len(failed)} "
                      f"p99 before={p99(before) * 1000:.1f} ms during={p99(during) * 1000:.1f} ms"
                      + (f" e.g. {failed[0][3]}" if failed else ""), flush=True)
                time.sleep(2)
        load.stop()
        info = server.crew("apps:info", cwd=repo)
        print()
        print(f"{a.clients} keep-alive clients at {a.rate:g} requests/s each, "
              f"{a.rounds} rounds, web=2, `{os.path.basename(crew)} server`")
        print()
        print("| operation | failed requests, each round | requests | p99 before (ms) | p99 during (ms) |")
        print("|---|---|---|---|---|")
        for name, _ in ops:
            mine = [x for x in rows if x[0] == name]
            print(f"| {name} | {' '.join(str(x[3]) for x in mine)} | {sum(x[2] for x in mine)} "
                  f"| {' '.join(f'{x[4] * 1000:.0f}' for x in mine)} "
                  f"| {' '.join(f'{x[5] * 1000:.0f}' for x in mine)} |")
        errors = [line for line in info.splitlines() if line.startswith("Router errors")]
        print()
        print(errors[0] if errors else "Router errors: none")
    finally:
        if load is not None:
            load.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
