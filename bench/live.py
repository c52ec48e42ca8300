#!/usr/bin/env python3
"""The scenarios of bench/run that drive a running crew, not a one-shot manager.

  scale    `crew start -m web=0`, then `crew scale web=N` and `web=0`: the time
           until all N are `up`, the time until none is left, and crew's RSS
  push     `crew server`, `git push crew main` of a Procfile-only app (and of a Flask
           app, first and second push, with --python-buildpack): the time until
           the new release's web.1 is `up`, and crew's share of it
  router   `crew server` with one web dyno (nginx serving a constant), measured by
           wrk directly, through crew's router and through an nginx reverse proxy
  skip     record a scenario that could not run
  report   print the Markdown sections of these scenarios from the results file

Like harness.py, every measurement appends one JSON object to --results, the process
is a child subreaper (so nothing a server starts escapes the leftover check), and
every wait has a deadline. SIGINT/SIGTERM/SIGHUP stop whatever was started.
"""

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
import harness  # noqa: E402  (same directory)
from harness import (  # noqa: E402
    Stopped, kill_everything, proc_table, signal_group, vm_hwm_kb,
)

POLL = 0.01  # seconds between polls of the API
STOP_GRACE = 15.0  # crew's own stop timeout is 5 s per process


# ---------------------------------------------------------------- small helpers


def vm_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def port_free(port):
    # The same socket options as the dynos' listeners (Rust's std and nginx both set
    # SO_REUSEADDR), so a port in TIME_WAIT counts as free, as it is for them.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ephemeral_ports():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_range(start, count):
    """The first base >= start with count free ports after it, outside the kernel's
    ephemeral range (where the load's own connections would take ports)."""
    lo, hi = ephemeral_ports()
    base = start
    while base + count <= 65535:
        if base < hi and base + count > lo:
            base = hi + 1
            continue
        busy = next((p for p in range(base, base + count) if not port_free(p)), None)
        if busy is None:
            return base
        base = busy + 1
    raise RuntimeError(f"no {count} free ports from {start}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(what, deadline, check, poll=POLL):
    """Poll check() until it returns something truthy; raise after deadline seconds."""
    end = time.monotonic() + deadline
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: nothing after {deadline:.0f} s")
        time.sleep(poll)


def run(cmd, deadline, **kw):
    """subprocess.run with a deadline; the output comes back as text."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    p = subprocess.run(cmd, timeout=deadline, text=True, **kw)
    return p


def check(p, what):
    if p.returncode != 0:
        tail = "\n".join((p.stdout or "").strip().splitlines()[-5:])
        raise RuntimeError(f"{what} failed (exit {p.returncode}): {tail}")
    return p


def launch(cmd, cwd, out, env=None):
    """A long-running process in a session of its own, output to a file."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_and_count(proc, sig=signal.SIGTERM, group=False):
    """harness.stop_and_count with crew's longer grace."""
    return harness.stop_and_count(proc, sig, group, grace=STOP_GRACE)


def stop_only(proc, sig):
    """Stop one process and its group, leaving every other descendant alone."""
    try:
        proc.send_signal(sig)
        proc.wait(STOP_GRACE)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def descendants_named(name):
    table = proc_table()
    return [p for p in harness.descendants(table) if table[p][2] == name and table[p][1] != "Z"]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Api:
    """GET JSON from crew's API: the control socket of `crew start`, or a server."""

    def __init__(self, unix=None, url=None, token=None):
        self.unix, self.token = unix, token
        if url:
            m = re.match(r"http://([^:/]+):(\d+)", url)
            self.host, self.port = m.group(1), int(m.group(2))

    def get(self, path):
        """(status, parsed JSON) or (None, error) when it does not answer."""
        conn = (UnixHTTPConnection(self.unix) if self.unix
                else http.client.HTTPConnection(self.host, self.port, timeout=5.0))
        headers = {"Accept": "application/vnd.heroku+json; version=3"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read()
            try:
                return r.status, json.loads(body)
            except ValueError:
                return r.status, body.decode(errors="replace")
        except OSError as e:
            return None, str(e)
        finally:
            conn.close()


def busy_ticks():
    """CPU time the whole machine spent running processes, or lost to the
    hypervisor's other guests (steal), in clock ticks (/proc/stat). Interrupt time is
    left out: it cannot be told apart from our own loopback traffic's."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + steal


def tree_ticks():
    """CPU time, in clock ticks, of this process and everything below it: the live
    ones' own and reaped children's time, and ours (utime, stime, cutime, cstime)."""
    total = 0
    for pid in [os.getpid()] + harness.descendants(proc_table()):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])
    return total


class OtherWork:
    """How many cores the rest of the machine kept busy while a scenario ran: all
    non-idle CPU time minus this process tree's, over the wall time. Our own load
    (wrk, nginx, crew, the dynos) does not count, unlike in the load average."""

    def __init__(self):
        self.wall, self.busy, self.ours = time.monotonic(), busy_ticks(), tree_ticks()

    def cores(self):
        wall = time.monotonic() - self.wall
        other = (busy_ticks() - self.busy) - (tree_ticks() - self.ours)
        return max(0.0, other / harness.TICKS / wall) if wall > 0 else None


def record(a, **fields):
    row = {"scenario": a.scenario, "tool": getattr(a, "tool", "crew"),
           "version": a.version, "run": getattr(a, "run", None)}
    row.update(fields)
    with open(a.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def say(text):
    print(f"  {text}", flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- scale


def cmd_scale(a):
    n = a.processes
    app = "scale-bench"
    # The local app's name in API paths is its directory's name.
    work = os.path.join(a.dir, f"scale-{a.run}", app)
    os.makedirs(work)
    with open(f"{work}/Procfile", "w") as f:
        f.write(f"web: exec {a.fakeproc} --listen\n")
    base = free_range(a.port, n)
    cmd = [a.crew, "start", "-m", "web=0", "-p", str(base), "--no-color"]
    row = dict(processes=n, base_port=base, command=" ".join(["crew"] + cmd[1:]))
    other = OtherWork()
    proc = None
    try:
        with open(f"{work}/out.log", "wb") as out:
            proc = launch(cmd, work, out)
            sock = f"{work}/.crew.sock"
            api = Api(unix=sock)
            wait_until("the control socket", 30, lambda: (
                proc.poll() is None or _raise(f"crew start exited ({proc.returncode})"))
                and os.path.exists(sock) and api.get(f"/apps/{app}/formation")[0] == 200)
            time.sleep(0.2)  # settle: the socket is served before start has finished
            row["rss0_kb"] = vm_kb(proc.pid, "VmRSS")

            def states():
                status, dynos = api.get(f"/apps/{app}/dynos")
                if status != 200:
                    return None
                count = {}
                for d in dynos:
                    count[d["state"]] = count.get(d["state"], 0) + 1
                return count

            # Up: from launching `crew scale web=N` until the API lists N `up`.
            start = time.monotonic()
            scale = Cli([a.crew, "scale", f"web={n}"], work)
            seen = {}
            while True:
                seen = states() or seen
                scale.poll()
                now = time.monotonic()
                if seen.get("up", 0) >= n:
                    row["up_s"] = now - start
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"crew start exited ({proc.returncode})")
                if now - start > a.deadline:
                    raise TimeoutError(f"not all up after {a.deadline:.0f} s: {seen}")
                time.sleep(POLL)
            row["scale_up_cmd_s"] = scale.finish(a.deadline)
            row["rss_kb"] = vm_kb(proc.pid, "VmRSS")
            # Each of them really listens.
            row["listening"] = sum(accepts(base + i) for i in range(n))

            # Down: from launching `crew scale web=0` until the API lists no dyno, and
            # until no fakeproc is left among crew's descendants.
            start = time.monotonic()
            scale = Cli([a.crew, "scale", "web=0"], work)
            api_empty = gone = None
            while api_empty is None or gone is None:
                scale.poll()
                now = time.monotonic()
                if api_empty is None:
                    status, dynos = api.get(f"/apps/{app}/dynos")
                    if status == 200 and not dynos:
                        api_empty = time.monotonic() - start
                if gone is None and not descendants_named("fakeproc"):
                    gone = time.monotonic() - start
                if now - start > a.deadline:
                    raise TimeoutError(
                        f"after {a.deadline:.0f} s: API empty={api_empty is not None}, "
                        f"{len(descendants_named('fakeproc'))} fakeproc left")
                time.sleep(POLL)
            row["scale_down_cmd_s"] = scale.finish(a.deadline)
            row.update(api_empty_s=api_empty, gone_s=gone, down_s=max(api_empty, gone))
            row["hwm_kb"] = vm_hwm_kb(proc.pid)
            row["rss_after_kb"] = vm_kb(proc.pid, "VmRSS")
            row["cpu"] = harness.manager_cpu()
            _, row["leftover"] = stop_and_count(proc, group=True)
            row["status"] = "complete"
    except Stopped:
        raise
    except Exception as e:  # noqa: BLE001  (recorded as the run's status)
        row["status"] = f"failed: {e}"
        if proc is not None and proc.poll() is None:
            _, row["leftover"] = stop_and_count(proc, group=True)
    finally:
        kill_everything(proc)
        if not a.keep:
            shutil.rmtree(os.path.dirname(work), ignore_errors=True)
    row["other_cores"] = other.cores()
    if row.get("rss_kb") is not None and row.get("rss0_kb") is not None:
        row["per_process_kb"] = (row["rss_kb"] - row["rss0_kb"]) / n
    record(a, **row)
    if row["status"] == "complete":
        say(f"scale      crew      run {a.run}: {n} up in {row['up_s']:.3f} s, none left "
            f"after {row['down_s']:.3f} s (API {row['api_empty_s']:.3f} s, processes "
            f"{row['gone_s']:.3f} s), RSS {row['rss0_kb']} -> {row['rss_kb']} kB "
            f"({row['per_process_kb']:.1f} kB/process), {row['listening']} listening, "
            f"leftover={row['leftover'] or 0}")
    else:
        say(f"scale      crew      run {a.run}: {row['status']}")


def _raise(msg):
    raise RuntimeError(msg)


class Cli:
    """A crew command run alongside a poll. poll() notes when it exited (at most one
    poll late); finish() waits for it, with a deadline, and returns its wall time.
    If the scenario fails first, kill_everything() ends it with the rest."""

    def __init__(self, cmd, cwd):
        self.cmd = cmd
        self.start = time.monotonic()
        self.exited = None
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def poll(self):
        if self.exited is None and self.proc.poll() is not None:
            self.exited = time.monotonic()

    def finish(self, deadline):
        out = self.proc.communicate(timeout=deadline)[0]
        self.poll()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self.cmd[1:])} failed: {out.strip()}")
        return self.exited - self.start


# ---------------------------------------------------------------- crew server


class Server:
    """One `crew server` in a temp dir, with a HOME of its own for it and for git."""

    def __init__(self, a, work):
        self.a, self.work = a, work
        self.proc = None
        self.home = f"{work}/home"
        os.makedirs(self.home)
        self.env = dict(os.environ, HOME=self.home, GIT_CONFIG_NOSYSTEM="1",
                        GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="bench",
                        GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="bench",
                        GIT_COMMITTER_EMAIL="bench@localhost", NO_COLOR="1")
        for k in ("CREW_API_URL", "CREW_API_KEY", "GIT_DIR", "GIT_WORK_TREE"):
            self.env.pop(k, None)

    def start(self):
        base = free_range(self.a.port, 100)
        self.dyno_ports = f"{base}-{base + 99}"
        data = f"{self.work}/data"
        # A bridge and range of its own: a crew server replaces the bridge of
        # its name when it starts and removes it when it stops, so another
        # server on the default one (anyone's, on this machine) would cut
        # this one's isolated dynos off the router halfway through.
        pid = os.getpid()
        self.cmd = [self.a.crew, "server", "--data", data, "--listen", "127.0.0.1:0",
                    "--router", "127.0.0.1:0", "--dyno-ports", self.dyno_ports,
                    "--dyno-bridge", f"crewb{pid % 100000}",
                    "--dyno-network", f"10.{220 + pid % 20}.{pid // 20 % 256}.0/24"]
        self.log_path = f"{self.work}/server.log"
        self.log = open(self.log_path, "wb")
        self.proc = launch(self.cmd, self.work, self.log, self.env)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"crew server exited ({self.proc.returncode}): "
                                   f"{self.output()[-300:]}")
            text = self.output()
            api = re.search(r"listening on (http://\S+)", text)
            router = re.search(r"at http://APP\.localhost:(\d+)/", text)
            token = f"{data}/api-token"
            if api and router and os.path.exists(token):
                return api.group(1), int(router.group(1)), token
            return None

        url, self.router_port, token = wait_until("crew server's address", 30, ready)
        with open(token) as f:
            key = f.read().strip()
        self.env.update(CREW_API_URL=url, CREW_API_KEY=key)
        self.api = Api(url=url, token=key)
        wait_until("crew server's API", 30, lambda: self.api.get("/apps")[0] == 200)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def crew(self, *args, cwd=None, deadline=60):
        return check(run([self.a.crew, *args], deadline, cwd=cwd, env=self.env),
                     "crew " + " ".join(args))

    def git(self, *args, cwd, deadline=120):
        return check(run(["git", *args], deadline, cwd=cwd, env=self.env),
                     "git " + " ".join(args))

    def new_app(self, name, files):
        """A git repo holding files, with a `crew` remote made by apps:create."""
        repo = f"{self.work}/{name}"
        os.makedirs(repo)
        for path, text in files.items():
            with open(f"{repo}/{path}", "w") as f:
                f.write(text)
        self.git("init", "-q", "-b", "main", cwd=repo)
        self.git("add", "-A", cwd=repo)
        self.git("commit", "-q", "-m", "first", cwd=repo)
        self.crew("apps:create", name, cwd=repo)
        return repo

    def web_dynos(self, app):
        status, dynos = self.api.get(f"/apps/{app}/dynos")
        if status != 200:
            return []
        return [d for d in dynos if d.get("type") == "web"]

    def wait_new_web1(self, app, old_pids, start, deadline):
        """Seconds from start until web.1 is `up` with a pid not in old_pids."""
        def fresh():
            if self.proc.poll() is not None:
                raise RuntimeError(f"crew server exited ({self.proc.returncode})")
            for d in self.web_dynos(app):
                if d["name"] == "web.1" and d["state"] == "up" and d.get("pid") not in old_pids:
                    return time.monotonic()
            return None
        return wait_until(f"{app}'s new web.1 up", deadline, fresh, poll=0.005) - start

    def stop(self):
        """SIGTERM to the server itself; (seconds, leftover descendants)."""
        if self.proc is None:
            return None, []
        rss = vm_hwm_kb(self.proc.pid)
        seconds, left = stop_and_count(self.proc, signal.SIGTERM)
        self.log.close()
        self.proc = None
        self.hwm_kb = rss
        return seconds, left

    def close(self):
        if self.proc is not None:
            kill_everything(self.proc)
            self.log.close()
            self.proc = None

    def stopped(self, summary, label):
        """Stops the server at the end of a scenario that went through: how
        long SIGTERM took, what it left and its peak memory go in `summary`."""
        summary["stop_s"], summary["leftover"] = self.stop()
        summary["server_hwm_kb"] = self.hwm_kb
        summary["status"] = "complete"
        say(f"{label} server stopped by SIGTERM in {summary['stop_s'] * 1000:.0f} ms, "
            f"leftover={summary['leftover'] or 0}")

    @contextlib.contextmanager
    def scenario(self, summary, label):
        """The body of a scenario against this server. A failure (but not a
        stop by signal) becomes `summary`'s status, and the server is stopped
        to see what it leaves; whatever happens, the server, everything
        started and (without --keep) the scenario's directory are gone after."""
        try:
            yield
        except Stopped:
            raise
        except Exception as e:  # noqa: BLE001  (recorded as the scenario's status)
            summary["status"] = f"failed: {e or repr(e)}"
            if self.proc is not None:
                summary["stop_s"], summary["leftover"] = self.stop()
            say(f"{label} {summary['status']}")
        finally:
            self.close()
            kill_everything()
            if not self.a.keep:
                shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- push


def time_buildpack(buildpack, repo, work, times):
    """Median seconds of bin/detect + bin/compile + bin/release on a copy of the app."""
    seconds = []
    for i in range(times):
        build, cache, env = (f"{work}/bp-{i}/{d}" for d in ("build", "cache", "env"))
        shutil.copytree(repo, build, ignore=shutil.ignore_patterns(".git"))
        os.makedirs(cache)
        os.makedirs(env)
        start = time.monotonic()
        check(run([f"{buildpack}/bin/detect", build], 30), "bin/detect")
        check(run([f"{buildpack}/bin/compile", build, cache, env], 30), "bin/compile")
        check(run([f"{buildpack}/bin/release", build], 30), "bin/release")
        seconds.append(time.monotonic() - start)
        shutil.rmtree(f"{work}/bp-{i}")
    return statistics.median(seconds), seconds


FLASK_FILES = {
    "requirements.txt": "flask==3.0.3\ngunicorn==22.0.0\n",
    "app.py": "from flask import Flask\n\napp = Flask(__name__)\n\n\n"
              "@app.route(\"/\")\ndef hello():\n    return \"flask says hi\\n\"\n",
    "Procfile": "web: gunicorn app:app --bind 0.0.0.0:$PORT\n",
}


def time_compile(buildpack, repo, build, cache, deadline):
    """Seconds of bin/compile BUILD CACHE ENV on a fresh copy of the app."""
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(repo, build, ignore=shutil.ignore_patterns(".git"))
    os.makedirs(f"{build}.env", exist_ok=True)
    start = time.monotonic()
    check(run([f"{buildpack}/bin/compile", build, cache, f"{build}.env"], deadline),
          f"{buildpack}/bin/compile")
    return time.monotonic() - start


def push_lines(repo, env, deadline):
    """`git push crew main`, each output line with the seconds since the start."""
    start = time.monotonic()
    p = subprocess.Popen(["git", "push", "crew", "main"], cwd=repo, env=env, text=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    lines = []
    for line in p.stdout:
        lines.append((time.monotonic() - start, line.rstrip()))
        if time.monotonic() - start > deadline:
            p.kill()
    p.wait()
    if p.returncode != 0:
        tail = "\n".join(line for _, line in lines[-5:])
        raise RuntimeError(f"git push crew main (Flask) failed (exit {p.returncode}): {tail}")
    return lines


def flask_pushes(a, server, work):
    """A Flask app (from PyPI) pushed twice: with an empty cache, then with an
    unchanged requirements.txt. Its rows carry `flask`; a failure (no PyPI)
    is recorded and leaves the other rows alone."""
    app = "flaskbench"
    try:
        repo = server.new_app(app, FLASK_FILES)
        cache = f"{work}/flask-cache"
        os.makedirs(cache)
        slow = max(a.deadline, 600)
        bp = [time_compile(a.python_buildpack, repo, f"{work}/flask-build", cache, slow)
              for _ in range(2)]
        for i, label in enumerate(("first", "second")):
            if i:
                with open(f"{repo}/bump.txt", "w") as f:
                    f.write("again\n")
                server.git("add", "bump.txt", cwd=repo)
                server.git("commit", "-q", "-m", "again", cwd=repo)
            old = {d.get("pid") for d in server.web_dynos(app)}
            start = time.monotonic()
            lines = push_lines(repo, server.env, slow)
            push_s = time.monotonic() - start
            total = server.wait_new_web1(app, old, start, slow)
            # The buildpack's part of the push, as the pusher sees it: from
            # "Python app detected" to crew's "Discovering process types".
            at = {}
            for t, line in lines:
                for mark in ("app detected", "Discovering process types"):
                    if mark in line and mark not in at:
                        at[mark] = t
            in_push = (at["Discovering process types"] - at["app detected"]
                       if len(at) == 2 else None)
            record(a, flask=label, status="complete", total_s=total, push_s=push_s,
                   buildpack_s=bp[i], in_push_s=in_push)
            say(f"push       crew      Flask {label} push: web.1 up {total * 1000:.0f} ms "
                f"after `git push` began (push itself {push_s * 1000:.0f} ms, buildpack "
                f"{(in_push or 0) * 1000:.0f} ms of it); bin/compile alone {bp[i] * 1000:.0f} ms")
    except Stopped:
        raise
    except Exception as e:  # noqa: BLE001  (recorded as the rows' status)
        record(a, flask="first", status=f"failed: {e or repr(e)}")
        say(f"push       crew      Flask pushes failed: {e}")


def cmd_push(a):
    app = "pushbench"
    work = os.path.join(a.dir, "push")
    os.makedirs(work)
    server = Server(a, work)
    summary = dict(pushes=a.pushes)
    other = OtherWork()
    with server.scenario(summary, "push       crew     "):
        server.start()
        summary["command"] = " ".join(["crew"] + server.cmd[1:]).replace(work, "TMP")
        # The router scenario's nginx dyno: a server that runs isolated dynos
        # (as root) shows them the stack's /usr, and not the bench's own
        # target/release/fakeproc.
        repo = server.new_app(app, {"Procfile": BACKEND_PROCFILE, "nginx.tmpl": BACKEND})
        bare = f"{work}/bare.git"
        check(run(["git", "init", "-q", "--bare", "-b", "main", bare], 30, env=server.env),
              "git init --bare")
        server.git("remote", "add", "bare", bare, cwd=repo)

        bp, bp_runs = time_buildpack(a.buildpack, repo, work, 5)
        summary.update(buildpack_s=bp, buildpack_runs=bp_runs)
        say(f"push       buildpack bin/detect+compile+release alone: {bp * 1000:.1f} ms "
            f"(median of {len(bp_runs)})")

        for i in range(1, a.pushes + 1):
            if i > 1:
                with open(f"{repo}/bump.txt", "w") as f:
                    f.write(f"push {i}\n")
                server.git("add", "bump.txt", cwd=repo)
                server.git("commit", "-q", "-m", f"push {i}", cwd=repo)
            old = {d.get("pid") for d in server.web_dynos(app)}
            start = time.monotonic()
            p = check(run(["git", "push", "crew", "main"], a.deadline, cwd=repo, env=server.env),
                      "git push crew main")
            push_s = time.monotonic() - start
            released = re.search(r"Released (v\d+)", p.stdout)
            total = server.wait_new_web1(app, old, start, a.deadline)
            start = time.monotonic()
            check(run(["git", "push", "bare", "main"], a.deadline, cwd=repo, env=server.env),
                  "git push bare main")
            git_s = time.monotonic() - start
            share = total - git_s - bp
            record(a, run=i, status="complete", total_s=total, push_s=push_s, git_s=git_s,
                   buildpack_s=bp, share_s=share,
                   release=released.group(1) if released else None)
            say(f"push       crew      push {i}: web.1 up {total * 1000:.0f} ms after "
                f"`git push` began (push itself {push_s * 1000:.0f} ms, "
                f"{released.group(1) if released else 'no release line'}); "
                f"git alone {git_s * 1000:.0f} ms; crew's share {share * 1000:.0f} ms")
        if a.python_buildpack:
            a.run = None
            flask_pushes(a, server, work)
        server.stopped(summary, "push       crew     ")
    a.run = None
    summary["other_cores"] = other.cores()
    record(a, summary=True, **summary)


# ---------------------------------------------------------------- router


NGINX_COMMON = """\
error_log stderr;
pid nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
  keepalive_requests 1000000;
@BODY@
}
"""

# The dyno: nginx answering every request with a constant, keep-alive capable. Its
# Procfile puts $PORT in place of @PORT@.
BACKEND = "worker_processes 1;\n" + NGINX_COMMON.replace("@BODY@", """\
  server {
    listen 127.0.0.1:@PORT@;
    location / { default_type text/plain; return 200 "ok\\n"; }
  }""")

# The comparison proxy: nginx's usual reverse proxy with pooled upstream connections.
PROXY = "worker_processes auto;\n" + NGINX_COMMON.replace("@BODY@", """\
  upstream dyno {
    server @DYNO@;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:@PORT@;
    location / {
      proxy_pass http://dyno;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }""")

# nginx lives in /usr/sbin, which a dyno's PATH (the stack's, when the server
# isolates dynos) leaves out.
BACKEND_PROCFILE = ("web: export PATH=\"$PATH:/usr/sbin\" && mkdir -p tmp "
                    "&& sed \"s/@PORT@/$PORT/\" nginx.tmpl > nginx.conf "
                    "&& exec nginx -p \"$PWD/\" -e stderr -c nginx.conf -g 'daemon off;'\n")


def http_get(port, host=None, address="127.0.0.1"):
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host} if host else {})
        r = conn.getresponse()
        return r.status, r.read()
    except OSError as e:
        return None, str(e).encode()
    finally:
        conn.close()


def dyno_address(pid):
    """The IPv4 address of the dyno whose process is `pid`: its eth0 in its own
    network namespace, or 127.0.0.1 when it shares the host's."""
    try:
        own = os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        own = False
    if not own:
        return "127.0.0.1"
    p = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "-4", "addr", "show",
                        "dev", "eth0"], capture_output=True, text=True, timeout=10)
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", p.stdout)
    if not m:
        raise RuntimeError(f"the dyno's address: {p.stdout.strip()} {p.stderr.strip()}")
    return m.group(1)


def parse_wrk(text):
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    for pct, val, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        out[f"p{pct}_ms"] = float(val) * unit[u]
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["errors"] = sum(map(int, m.groups())) if m else 0
    return out


def cmd_router(a):
    app = "routerbench"
    work = os.path.join(a.dir, "router")
    os.makedirs(work)
    server = Server(a, work)
    proxy = None
    summary = {}
    other = OtherWork()
    # The proxy nginx is among what the scenario's end kills.
    with server.scenario(summary, "router     crew     "):
        server.start()
        summary["command"] = " ".join(["crew"] + server.cmd[1:]).replace(work, "TMP")
        repo = server.new_app(app, {"Procfile": BACKEND_PROCFILE, "nginx.tmpl": BACKEND})
        old = set()
        start = time.monotonic()
        server.git("push", "crew", "main", cwd=repo, deadline=a.deadline)
        server.wait_new_web1(app, old, start, a.deadline)
        # The dyno's port, as `crew ps -a APP --json` gives it.
        dynos = json.loads(server.crew("ps", "-a", app, "--json").stdout)
        dyno = next(d["port"] for d in dynos if d["name"] == "web.1")
        dyno_pid = next(d["pid"] for d in dynos if d["name"] == "web.1")
        # Where the router reaches it: an isolated dyno listens in a network
        # namespace of its own, at its address on crew's bridge, so nginx and
        # wrk go there too (the same hop the router makes).
        dyno_addr = dyno_address(dyno_pid)

        pdir = f"{work}/proxy"
        os.makedirs(f"{pdir}/tmp")
        pport = free_port()
        with open(f"{pdir}/nginx.conf", "w") as f:
            f.write(PROXY.replace("@DYNO@", f"{dyno_addr}:{dyno}").replace("@PORT@", str(pport)))
        plog = open(f"{pdir}/out.log", "wb")
        proxy = launch(["nginx", "-p", f"{pdir}/", "-e", "stderr", "-c", "nginx.conf", "-g",
                        "daemon off;"], pdir, plog)
        wait_until("the nginx proxy", 10, lambda: (
            proxy.poll() is None or _raise(f"nginx exited ({proxy.returncode})"))
            and accepts(pport))

        host = f"{app}.localhost"
        targets = {  # name -> (wrk arguments, what the report says)
            "direct": ([f"http://{dyno_addr}:{dyno}/"], f"`http://{dyno_addr}:{dyno}/`, the dyno"),
            "crew": (["-H", f"Host: {host}", f"http://127.0.0.1:{server.router_port}/"],
                     f"`http://127.0.0.1:ROUTER/` with `-H 'Host: {host}'`"),
            "nginx": ([f"http://127.0.0.1:{pport}/"], "`http://127.0.0.1:PROXY/`"),
        }
        for name, port, h, at in (("direct", dyno, None, dyno_addr),
                                  ("crew", server.router_port, host, "127.0.0.1"),
                                  ("nginx", pport, None, "127.0.0.1")):
            status, body = http_get(port, h, at)
            if status != 200 or body != b"ok\n":
                raise RuntimeError(f"{name}: GET / gave {status} {body[:80]!r}")
        summary.update(dyno_port=dyno, router_port=server.router_port, proxy_port=pport,
                       targets={k: v[1] for k, v in targets.items()})

        # Whose CPU time counts as the proxy's: crew server's own process (all its
        # threads; not the dynos it runs), nginx's master and workers, and for
        # "direct" the dyno's nginx.
        owners = {"direct": (dyno_pid, True), "crew": (server.proc.pid, False),
                  "nginx": (proxy.pid, True)}

        def cpu(name):
            pid, tree = owners[name]
            table = proc_table()
            pids = [pid] + (harness.descendants(table, pid) if tree else [])
            return sum(table[p][3] for p in pids if p in table)

        def wrk(name, duration, threads, connections):
            cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}",
                   "--latency", *targets[name][0]]
            before = cpu(name)
            p = check(run(cmd, float(duration.rstrip("s")) + 60), "wrk")
            res = parse_wrk(p.stdout)
            res["cpu_s"] = cpu(name) - before
            return res, " ".join(cmd)

        for name in targets:  # warm up: pools, caches, the dyno's first connections
            wrk(name, a.warmup, a.threads, a.connections)
        names = list(targets)
        one = f"{max(1, int(a.duration.rstrip('s')) // 2)}s"
        for r in range(1, a.runs + 1):
            # Rotate the order each round, so a slow drift of the machine hits all alike.
            k = (r - 1) % len(names)
            for name in names[k:] + names[:k]:
                res, cmd = wrk(name, a.duration, a.threads, a.connections)
                # One connection, one request at a time: nothing is saturated, so the
                # latency over direct is what the proxy adds to each request.
                c1, _ = wrk(name, one, 1, 1)
                res.update({f"c1_{k}": v for k, v in c1.items()})
                a.tool, a.run = name, r
                record(a, status="complete", command=cmd.replace(str(server.router_port),
                       "ROUTER").replace(str(pport), "PROXY"), c1_duration=one, **res)
                say(f"router     {name:<9} run {r}: {res['rps']:,.0f} req/s, p50 "
                    f"{res.get('p50_ms', 0):.3f} ms, p99 {res.get('p99_ms', 0):.3f} ms, "
                    f"non-2xx {res['non2xx']}, socket errors {res['errors']}, "
                    f"server-side CPU {res['cpu_s']:.2f} s; one connection: "
                    f"p50 {c1.get('p50_ms', 0):.3f} ms, p99 {c1.get('p99_ms', 0):.3f} ms")
        status, body = http_get(server.router_port, host)  # still serving afterwards
        if status != 200:
            raise RuntimeError(f"crew's router stopped answering: {status} {body[:80]!r}")
        stop_only(proxy, signal.SIGQUIT)  # nginx's graceful stop
        plog.close()
        server.stopped(summary, "router     crew     ")
    a.tool, a.run = "crew", None
    summary["other_cores"] = other.cores()
    record(a, summary=True, **summary)


# ---------------------------------------------------------------- report


def verdict(ok):
    return "**met**" if ok else "**not met**"


def each(rows, key, fmt, scale=1):
    """'1.0, 2.0, 3.0': one field of every row, formatted."""
    return ", ".join(fmt.format(r[key] * scale) for r in rows)


def busy_note(others):
    """How busy the rest of the machine was; a warning when it took more than a
    quarter of a core, since the timings then are as much about that work."""
    others = [x for x in others if x is not None]
    if not others:
        return
    worst = max(others)
    print(f"Other work on the machine during this scenario (CPU time of all processes, "
          f"and steal, minus the bench's own process tree): {worst:.2f} of "
          f"{os.cpu_count()} cores"
          f"{' at worst' if len(others) > 1 else ''}.", end="")
    if worst > 0.25:
        print(" **The machine was busy with other work**, so the timings above are "
              "slower and noisier than crew alone would make them (the memory and "
              "leftover figures are not affected); rerun on a quiet machine for timings "
              "to hold crew to.")
    else:
        print()
    print()


def fmt_left(names):
    return harness.fmt_left(names or [])


def section(title, rows):
    """Prints a scenario's heading; its rows split into (the summary, the rest),
    or None when the scenario was skipped, which is then said."""
    print(f"## {title}\n")
    skipped = next((r for r in rows if "skipped" in r), None)
    if skipped:
        print(f"Skipped: {skipped['skipped']}\n")
        return None
    summary = next((r for r in rows if r.get("summary")), {})
    return summary, [r for r in rows if not r.get("summary")]


def report_scale(rows, a):
    if section("Live scale", rows) is None:
        return
    n = rows[0]["processes"]
    ok = [r for r in rows if r["status"] == "complete"]
    print(f"A Procfile of one type, `web: exec …/target/release/fakeproc --listen` (the "
          f"repo's stand-in process: it listens on 127.0.0.1:$PORT and does nothing "
          f"else). `{rows[0]['command']}` runs in the background; once its control socket "
          f"`.crew.sock` answers, `crew scale web={n}`, then `crew scale web=0`. A fresh "
          f"`crew start` for each of {len(rows)} runs.\n")
    print(f"- *all up*: from launching `crew scale web={n}` until `GET "
          f"/apps/APP/dynos` on the control socket (what `crew ps --json` shows, polled "
          f"every {POLL * 1000:.0f} ms from Python) lists {n} dynos `up`. crew calls a web "
          f"process `up` once its port accepts TCP; afterwards the bench connects to "
          f"all {n} ports itself (*listening*).")
    print("- *none left*: from launching `crew scale web=0` until the API lists no dyno "
          "**and** no `fakeproc` is alive among crew's descendants (the bench is a "
          "child subreaper, so none can escape); each is listed too.")
    print(f"- *RSS*: VmRSS of the `crew start` process with 0 processes (just after the "
          f"socket answered) and with all {n} up; *per process* = (RSS@{n} − RSS@0) / {n}. "
          "*peak* is its VmHWM at the end of the run.")
    print("- *left behind*: descendants alive 2 s after `crew start` was stopped with "
          "SIGTERM to its process group.")
    print("- No peer is measured: foreman, honcho, nf and ultraman take the formation "
          "once, at startup (`-m`/`-c`), and cannot change it while running.\n")
    if not ok:
        for r in rows:
            print(f"- run {r['run']}: {r['status']}")
        print()
        return
    up = median(r["up_s"] for r in ok)
    down = median(r["down_s"] for r in ok)
    per = median(r["per_process_kb"] for r in ok)
    rss = median(r["rss_kb"] for r in ok)
    rss0 = median(r["rss0_kb"] for r in ok)
    runs = lambda key, scale=1000: ", ".join(
        f"{r[key] * scale:.0f}" if r["status"] == "complete" else f"*{r['status']}*" for r in rows)
    print("| | median | runs |")
    print("|---|---:|---|")
    print(f"| all {n} up | {up * 1000:.0f} ms | {runs('up_s')} ms |")
    print(f"| listening afterwards | {min(r['listening'] for r in ok)} of {n} | "
          f"{', '.join(str(r['listening']) for r in ok)} |")
    print(f"| none left | {down * 1000:.0f} ms | {runs('down_s')} ms |")
    print(f"| … the API lists none | {median(r['api_empty_s'] for r in ok) * 1000:.0f} ms "
          f"| {runs('api_empty_s')} ms |")
    print(f"| … no process alive | {median(r['gone_s'] for r in ok) * 1000:.0f} ms | "
          f"{runs('gone_s')} ms |")
    print(f"| `crew scale web={n}` returned | "
          f"{median(r['scale_up_cmd_s'] for r in ok) * 1000:.0f} ms | {runs('scale_up_cmd_s')} ms |")
    print(f"| `crew scale web=0` returned | "
          f"{median(r['scale_down_cmd_s'] for r in ok) * 1000:.0f} ms | "
          f"{runs('scale_down_cmd_s')} ms |")
    print(f"| crew RSS at 0 | {rss0 / 1024:.1f} MiB | {each(ok, 'rss0_kb', '{:.1f}', 1 / 1024)} MiB |")
    print(f"| crew RSS at {n} | {rss / 1024:.1f} MiB | "
          f"{each(ok, 'rss_kb', '{:.1f}', 1 / 1024)} MiB |")
    print(f"| crew RSS per process | {per:.1f} KiB | "
          f"{each(ok, 'per_process_kb', '{:.1f}')} KiB |")
    print(f"| crew peak RSS (VmHWM) | {max(r['hwm_kb'] for r in ok) / 1024:.1f} MiB | "
          f"{each(ok, 'hwm_kb', '{:.1f}', 1 / 1024)} MiB |")
    print(f"| crew CPU, whole run | {median(r['cpu'] for r in ok):.2f} s | "
          f"{each(ok, 'cpu', '{:.2f}')} s |")
    worst = max((r.get("leftover") or [] for r in rows), key=len)
    print(f"| left behind | {fmt_left(worst)} | |")
    failed = [r for r in rows if r["status"] != "complete"]
    for r in failed:
        print(f"\nRun {r['run']}: {r['status']}")
    print(f"\n### crew against the target of issue 3\n")
    print("| target | measured | |")
    print("|---|---|---|")
    print(f"| {n} up within 2 s on 2 cores | {up * 1000:.0f} ms ({os.cpu_count()} cores) | "
          f"{verdict(up <= 2.0 and not failed)} |")
    print(f"| under 100 KiB of crew memory per process | {per:.1f} KiB | "
          f"{verdict(per < 100)} |")
    print(f"| nothing left after `scale web=0` and the stop | {fmt_left(worst)} | "
          f"{verdict(not worst and not failed)} |")
    print()
    busy_note([r.get("other_cores") for r in rows])


def report_push(rows, a):
    split = section("Push to up", rows)
    if split is None:
        return
    summary, pushes = split
    flask = [r for r in pushes if r.get("flask")]
    pushes = [r for r in pushes if not r.get("flask")]
    print(f"`{summary.get('command', 'crew server …')}` (TMP a fresh temp dir), "
          "`CREW_API_URL`/`CREW_API_KEY` from its output and `TMP/data/api-token`, and a "
          "fresh git repo holding a Procfile and an nginx config template, whose web dyno "
          "is the router scenario's nginx (below: `fakeproc` from the bench's own target "
          "directory is not in the stack an isolated dyno sees); `crew apps:create "
          "pushbench` in it adds the `crew` remote. Then "
          f"{len(pushes)} pushes, each of a new commit, of `git push crew main`.\n")
    print("- *total*: from launching `git push crew main` until `GET /apps/pushbench/dynos` "
          "(what `crew ps -a pushbench --json` shows, polled every 5 ms) lists `web.1` "
          "`up` with a pid it did not have before the push: the new release's dyno. "
          "*push*: the `git push` command alone (it returns after the build and release).")
    print("- *git alone*: the same commit pushed right after with `git push bare main` to a "
          "local bare repository (`git init --bare`, local transport), no crew.")
    print("- *buildpack alone*: `buildpacks/procfile/bin/detect`, `bin/compile BUILD CACHE "
          "ENV` and `bin/release` run one after the other on a copy of the app; the median "
          "of 5.")
    print("- *crew's share* = total − git alone − buildpack alone: smart HTTP, the "
          "pre-receive build driver, slug, release, starting the dyno and its health "
          "check. Push 1 also makes the formation (web=1); later pushes replace web.1.\n")
    if not pushes:
        print(f"No push was timed: {summary.get('status', 'not run')}\n")
        return
    print("| push | total | push | git alone | buildpack alone | crew's share | release |")
    print("|---|---:|---:|---:|---:|---:|---|")
    ms = lambda s: f"{s * 1000:.0f} ms"
    for r in pushes:
        print(f"| {r['run']} | {ms(r['total_s'])} | {ms(r['push_s'])} | {ms(r['git_s'])} | "
              f"{r['buildpack_s'] * 1000:.1f} ms | {ms(r['share_s'])} | {r['release'] or '?'} |")
    med = {k: median(r[k] for r in pushes) for k in ("total_s", "push_s", "git_s", "share_s")}
    print(f"| **median** | **{ms(med['total_s'])}** | {ms(med['push_s'])} | "
          f"{ms(med['git_s'])} | {summary.get('buildpack_s', 0) * 1000:.1f} ms | "
          f"**{ms(med['share_s'])}** | |")
    if summary.get("status") != "complete":
        print(f"\nThe scenario did not finish: {summary.get('status')}")
    report_flask(flask)
    print(f"\nThe server stopped {(summary.get('stop_s') or 0) * 1000:.0f} ms after SIGTERM; left behind: "
          f"{fmt_left(summary.get('leftover'))}. Its peak RSS: "
          f"{harness.fmt_rss(summary.get('server_hwm_kb'))}.\n")
    print("### crew against the target of issue 4\n")
    print("| target | measured | |")
    print("|---|---|---|")
    print(f"| crew's share of push → up under 1 s | {ms(med['share_s'])} (median of "
          f"{len(pushes)}) | {verdict(med['share_s'] < 1.0)} |")
    left = summary.get("leftover") or []
    print(f"| nothing left after SIGTERM to the server | {fmt_left(left)} | "
          f"{verdict(not left and summary.get('status') == 'complete')} |")
    second = next((r for r in flask if r.get("flask") == "second"
                   and r.get("status") == "complete"), None)
    if second:
        spent = second.get("in_push_s") or second["buildpack_s"]
        print(f"| Flask second push under 1 s in the buildpack (issue 18) | "
              f"{spent * 1000:.0f} ms in the push, {second['buildpack_s'] * 1000:.0f} ms alone | "
              f"{verdict(spent < 1.0)} |")
    print()
    busy_note([summary.get("other_cores")])


def report_flask(rows):
    if not rows:
        return
    print("\n### A Flask app\n")
    reqs = ", ".join(f"`{r}`" for r in FLASK_FILES["requirements.txt"].split())
    print(f"A second app on the same server, `flaskbench`: {reqs} in `requirements.txt` (from "
          "PyPI), a one-route `app.py` and `web: gunicorn app:app`. Pushed twice: with an "
          "empty build cache, then a new commit with the same requirements.\n")
    print("- *total* and *push* as above. *buildpack in the push*: from `Python app "
          "detected` to `Discovering process types` in the push's output (`bin/compile` and "
          "`bin/release`, sandboxed when the server runs as root). *bin/compile alone*: "
          "`buildpacks/python/bin/compile` run on the host on a copy of the app, first with an "
          "empty cache dir, then with the cache the first run left.\n")
    failed = [r for r in rows if r.get("status") != "complete"]
    for r in failed:
        print(f"The Flask pushes did not finish: {r['status']}\n")
    done = [r for r in rows if r.get("status") == "complete"]
    if not done:
        return
    print("| Flask push | total | push | buildpack in the push | bin/compile alone |")
    print("|---|---:|---:|---:|---:|")
    names = {"first": "first push (empty cache)", "second": "second push (cache)"}
    ms = lambda s: "?" if s is None else f"{s * 1000:.0f} ms"
    for r in done:
        print(f"| {names.get(r['flask'], r['flask'])} | {ms(r['total_s'])} | "
              f"{ms(r['push_s'])} | {ms(r.get('in_push_s'))} | {ms(r['buildpack_s'])} |")


def report_router(rows, a):
    split = section("Router", rows)
    if split is None:
        return
    summary, runs = split
    print(f"`{summary.get('command', 'crew server …')}` with one app, `routerbench`, "
          "deployed by `git push`, whose one web dyno is nginx answering `200 ok` to "
          "everything (`worker_processes 1`, keep-alive, no access log), started by its "
          "Procfile as "
          f"`{BACKEND_PROCFILE.strip()}`. A Rust or Python stand-in would not do: "
          "`fakeproc --listen` closes the connection after every response. Its port comes "
          "from `crew ps -a routerbench --json`.\n")
    print("The same dyno is loaded three ways, side by side, in rounds whose order rotates:\n")
    t = summary.get("targets", {})
    print(f"- *direct*: {t.get('direct', 'the dyno')}.")
    print(f"- *crew*: crew's router, {t.get('crew', '')}. It writes an access-log line "
          "for every request into `crew logs`, as Heroku's router does.")
    print(f"- *nginx*: {t.get('nginx', '')}, a second nginx as a reverse proxy to the dyno (`worker_processes "
          "auto`, upstream `keepalive 64`, `proxy_http_version 1.1`, `proxy_set_header "
          "Connection \"\"`, no access log).\n")
    cmd = runs[0]["command"] if runs else "wrk …"
    cmd = re.sub(r"(-H Host: \S+)", r"-H 'Host: routerbench.localhost'", cmd)
    print(f"Each is `{re.sub(r' http://.*', ' URL', cmd)}` (after a warm-up run each), "
          f"{a.runs} rounds; the table shows the median of the rounds. wrk, the proxy and "
          f"the dyno all share the machine's {os.cpu_count()} cores, so a proxy's CPU is "
          "taken from the load generator and the dyno too: the numbers compare the "
          "proxies with each other on this machine, not their ceilings.\n")
    if not runs:
        print(f"No load was run: {summary.get('status', 'not run')}\n")
        return
    by = {}
    for r in runs:
        by.setdefault(r["tool"], []).append(r)
    fields = ("rps", "p50_ms", "p99_ms", "c1_rps", "c1_p50_ms", "c1_p99_ms")
    med = {k: {f: median(r.get(f) for r in v) for f in fields} for k, v in by.items()}
    one = runs[0].get("c1_duration")
    print("- *CPU per request*: user + system CPU time during the run of the proxy's own "
          "processes (crew server's process with all its threads, but not its dynos; "
          "nginx's master and workers) over the requests served; for *direct*, the "
          "dyno's. The median of the rounds.")
    if one:
        print(f"- *one connection*: right after each run, `wrk -t1 -c1 -d{one} --latency` "
              "on the same path: one request at a time, nothing saturated, so its latency "
              "over direct is what the proxy adds to a request. At 50 connections each "
              "path runs at its own saturation, so its p99 is mostly queueing at that "
              "path's throughput (direct serves the most requests/s, hence the longest "
              "queue), not the proxy's cost. On a small VM the one-connection p99 is "
              "itself mostly scheduling jitter (see direct's own), so it is listed for "
              "information, without a verdict; its p50 is the steadier figure.")
    print()
    print("| via | requests/s | p50 | p99 | requests/s, each round | CPU per request "
          "| one connection: requests/s | p50 | p99 | non-2xx | socket errors |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    ms = lambda x: "n/a" if x is None else f"{x:.3f} ms"
    for k in ("direct", "crew", "nginx"):
        if k not in by:
            continue
        m = med[k]
        per = median(r["cpu_s"] / r["requests"] * 1e6 for r in by[k]
                     if r.get("cpu_s") is not None and r.get("requests"))
        c1 = "n/a" if m["c1_rps"] is None else f"{m['c1_rps']:,.0f}"
        print(f"| {k} | {m['rps']:,.0f} | {ms(m['p50_ms'])} | {ms(m['p99_ms'])} | "
              f"{each(by[k], 'rps', '{:,.0f}')} | "
              f"{'n/a' if per is None else f'{per:.1f} µs'} | {c1} | {ms(m['c1_p50_ms'])} | "
              f"{ms(m['c1_p99_ms'])} | "
              f"{sum(r['non2xx'] + r.get('c1_non2xx', 0) for r in by[k])} | "
              f"{sum(r['errors'] + r.get('c1_errors', 0) for r in by[k])} |")
    if summary.get("status") != "complete":
        print(f"\nThe scenario did not finish: {summary.get('status')}")
    print(f"\ncrew server's peak RSS: {harness.fmt_rss(summary.get('server_hwm_kb'))}; it "
          f"stopped {(summary.get('stop_s') or 0) * 1000:.0f} ms after SIGTERM, leaving "
          f"{fmt_left(summary.get('leftover'))} behind.\n")
    if {"direct", "crew", "nginx"} <= med.keys():
        ratio = med["crew"]["rps"] / med["nginx"]["rps"]
        extra = med["crew"]["p99_ms"] - med["direct"]["p99_ms"]
        nginx_extra = med["nginx"]["p99_ms"] - med["direct"]["p99_ms"]
        clean = all(r["non2xx"] == 0 and r["errors"] == 0 and r.get("c1_non2xx", 0) == 0
                    and r.get("c1_errors", 0) == 0 for r in by["crew"])
        print("### crew against the target of issue 6\n")
        print("| target | measured | |")
        print("|---|---|---|")
        print(f"| ≥ 90% of nginx's requests/s | {ratio * 100:.0f}% "
              f"({med['crew']['rps']:,.0f} against {med['nginx']['rps']:,.0f}) | "
              f"{verdict(ratio >= 0.9)} |")
        print(f"| p99 at most 1 ms over direct, at {a_connections(runs)} connections | "
              f"{extra:+.3f} ms ({med['crew']['p99_ms']:.3f} against "
              f"{med['direct']['p99_ms']:.3f}; nginx {nginx_extra:+.3f} ms) | "
              f"{verdict(extra <= 1.0)} |")
        if med["crew"]["c1_p99_ms"] is not None and med["direct"]["c1_p99_ms"] is not None:
            e1 = med["crew"]["c1_p99_ms"] - med["direct"]["c1_p99_ms"]
            n1 = med["nginx"]["c1_p99_ms"] - med["direct"]["c1_p99_ms"]
            print(f"| (for information) p99 over direct at one connection | {e1:+.3f} ms "
                  f"({med['crew']['c1_p99_ms']:.3f} against {med['direct']['c1_p99_ms']:.3f}; "
                  f"nginx {n1:+.3f} ms) | — |")
        print(f"| every response 2xx, no socket error | "
              f"{sum(r['non2xx'] + r.get('c1_non2xx', 0) for r in by['crew'])} non-2xx, "
              f"{sum(r['errors'] + r.get('c1_errors', 0) for r in by['crew'])} errors | "
              f"{verdict(clean)} |")
        print()
    busy_note([summary.get("other_cores")])


def a_connections(runs):
    m = re.search(r"-c(\d+)", runs[0].get("command", ""))
    return m.group(1) if m else "?"


def cmd_report(a):
    rows = [json.loads(line) for line in open(a.results)]
    for scenario, fn in (("scale", report_scale), ("push", report_push),
                         ("router", report_router)):
        mine = [r for r in rows if r["scenario"] == scenario]
        if mine:
            fn(mine, a)


def cmd_skip(a):
    a.run = None
    record(a, skipped=a.reason.replace("|", "/").replace("\n", " "))
    say(f"{a.scenario:<10} skipped: {a.reason}")


# ---------------------------------------------------------------- main


def recording_options():
    """The options of every command that records results here and in dynos.py."""
    rec = argparse.ArgumentParser(add_help=False)
    rec.add_argument("--results", required=True)
    rec.add_argument("--version", default="")
    rec.add_argument("--deadline", type=float, default=60, help="seconds for each wait")
    rec.add_argument("--keep", action="store_true", help="keep the temp dirs")
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    rec = recording_options()
    tools = argparse.ArgumentParser(add_help=False)
    tools.add_argument("--crew", required=True)
    tools.add_argument("--fakeproc", required=True)
    tools.add_argument("--port", type=int, default=61000, help="look for free ports from here")

    sp = sub.add_parser("scale", parents=[rec, tools])
    sp.add_argument("--processes", type=int, default=500)
    sp.add_argument("--run", type=int, default=1)
    sp.add_argument("dir")
    sp = sub.add_parser("push", parents=[rec, tools])
    sp.add_argument("--pushes", type=int, default=5)
    sp.add_argument("--buildpack", required=True, help="buildpacks/procfile")
    sp.add_argument("--python-buildpack", help="buildpacks/python: adds the Flask pushes")
    sp.add_argument("dir")
    sp = sub.add_parser("router", parents=[rec, tools])
    sp.add_argument("--runs", type=int, default=3)
    sp.add_argument("--duration", default="10s")
    sp.add_argument("--warmup", default="2s")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--connections", type=int, default=50)
    sp.add_argument("dir")
    sp = sub.add_parser("skip", parents=[rec])
    sp.add_argument("--scenario", required=True)
    sp.add_argument("--reason", required=True)
    sp = sub.add_parser("report")
    sp.add_argument("--results", required=True)
    sp.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    if a.what in ("scale", "push", "router"):
        a.scenario = a.what
        a.tool = "crew"

    harness.dispatch(a, globals(), "live")


if __name__ == "__main__":
    main()
