#!/usr/bin/env python3
"""Measurement helper for bench/run.

bench/run (bash) installs the tools and decides what to run; this file does the
parts that need precise timing and careful process handling:

  procfiles DIR      write DIR/throughput/Procfile and DIR/startup/Procfile
  baseline DIR       the writers straight into files, no manager
  throughput DIR     one manager over the throughput Procfile
  startup DIR        one manager over the startup Procfile
  skip               record a tool that could not be installed
  report             print the Markdown tables from the results file

Every measurement appends one JSON object to --results.

The helper makes itself a child subreaper, so every process a manager starts
stays its descendant even after the manager dies or a child double-forks. That is
how it finds leftovers after a stop and how it counts `sleep` children at startup,
the same way for every tool.
"""

import argparse
import ctypes
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
MARKER = b"crew-bench"
POLL = 0.001  # seconds between polls of the output file
STARTUP_POLL = 0.01  # seconds between scans of /proc
STALL = 3.0  # no new output for this long means the manager is not going to finish
STOP_GRACE = 10.0  # the managers' own stop timeouts are 5 s
TICKS = os.sysconf("SC_CLK_TCK")
# What the Procfiles run; every other descendant is part of the manager.
WORKLOAD = {"sh", "dash", "yes", "head", "sleep"}

# A prefix is whatever comes before `w3.1 |` (a time, colour codes, padding).
PREFIXED = re.compile(rb"^.*?\b(w\d+)\.1\s*\|(.*)$")
ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def writer_line(i):
    """The ~40-byte line writer i repeats; the marker is in the middle on purpose."""
    return f"w{i} {MARKER.decode()} line 0123456789abcdefghij"


class Stopped(Exception):
    """Raised by the signal handler so cleanup runs in `finally`."""


def on_signal(signum, _frame):
    raise Stopped(f"signal {signum}")


# ---------------------------------------------------------------- processes


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("harness: prctl(PR_SET_CHILD_SUBREAPER) failed")


def proc_table():
    """pid -> (ppid, state, comm, cpu seconds) for every process on the machine."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        close = data.rindex(b")")
        comm = data[data.index(b"(") + 1 : close].decode(errors="replace")
        fields = data[close + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        table[int(name)] = (int(fields[1]), fields[0].decode(), comm, cpu)
    return table


def descendants(table, root=None):
    root = root or os.getpid()
    children = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive_descendants():
    table = proc_table()
    return [p for p in descendants(table) if table[p][1] != "Z"]


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def manager_cpu():
    """CPU seconds used so far by the manager: every descendant not running the
    workload (honcho, for one, keeps a helper process per child)."""
    table = proc_table()
    return sum(table[p][3] for p in descendants(table) if table[p][2] not in WORKLOAD)


def vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def launch(cmd, cwd, stdout):
    # A new session: the manager's process group is its own, and nothing else of
    # ours is in it.
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_and_count(proc, sig=signal.SIGTERM, group=False, grace=STOP_GRACE):
    """Stop proc with sig (to its pid, or its group), SIGKILL its group after
    `grace` seconds; then name every descendant still alive 2 s later, and kill
    them. Returns (seconds to exit, leftover names)."""
    start = time.monotonic()
    if group:
        signal_group(proc.pid, sig)
    else:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    seconds = time.monotonic() - start
    # Give dying children a moment; a manager may exit just before they do.
    deadline = time.monotonic() + 2.0
    while True:
        reap()
        left = alive_descendants()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    table = proc_table()
    names = sorted(table[p][2] for p in left if p in table)
    kill_everything(proc)
    return seconds, names


def kill_everything(proc=None):
    if proc is not None and proc.poll() is None:
        signal_group(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        left = alive_descendants()
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
        reap()
    if proc is not None:
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            pass
    reap()


# ---------------------------------------------------------------- counting


def count_lines(data, writers, lines):
    """Count intact, lost and torn writer lines in a manager's output.

    - intact: text after `wN.1 |` is exactly writer N's line;
    - torn: any other line carrying the marker (merged, cut, mislabelled), or a
      writer-labelled line whose text is a fragment of the writer's line;
    - lost: expected minus intact, per writer.
    Lines of the managers' own (`started with pid`, `exited with code`) are ignored.
    """
    expected = {f"w{i}".encode(): writer_line(i).encode() for i in range(1, writers + 1)}
    intact = dict.fromkeys(expected, 0)
    torn = 0
    for raw in data.split(b"\n")[:-1]:  # the last piece is never a whole line
        line = ANSI.sub(b"", raw).rstrip(b"\r")
        m = PREFIXED.match(line)
        if m:
            name, text = m.group(1), m.group(2).lstrip(b" ")
            want = expected.get(name)
            if want is not None and text == want:
                intact[name] += 1
            elif MARKER in text or (want and text and text in want + want):
                torn += 1
        elif MARKER in line:
            torn += 1
    received = sum(intact.values())
    lost = sum(max(0, lines - n) for n in intact.values())
    return received, lost, torn


# ---------------------------------------------------------------- scenarios


def cmd_procfiles(a):
    os.makedirs(f"{a.dir}/throughput", exist_ok=True)
    os.makedirs(f"{a.dir}/startup", exist_ok=True)
    with open(f"{a.dir}/throughput/Procfile", "w") as f:
        for i in range(1, a.writers + 1):
            # Stay alive afterwards: foreman-style managers stop all when one exits.
            f.write(f"w{i}: yes '{writer_line(i)}' | head -n {a.lines}; sleep 1000\n")
    with open(f"{a.dir}/startup/Procfile", "w") as f:
        for i in range(1, a.types + 1):
            f.write(f"p{i}: sleep 60\n")


def cmd_baseline(a):
    work = f"{a.dir}/baseline"
    os.makedirs(work, exist_ok=True)
    procs = []
    start = time.monotonic()
    try:
        for i in range(1, a.writers + 1):
            sh = f"yes '{writer_line(i)}' | head -n {a.lines} > w{i}.txt"
            procs.append(subprocess.Popen(["sh", "-c", sh], cwd=work))
        for p in procs:
            p.wait(a.deadline)
        seconds = time.monotonic() - start
        status = "complete"
    except subprocess.TimeoutExpired:
        seconds, status = time.monotonic() - start, "timeout"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    received = torn = 0
    for i in range(1, a.writers + 1):
        # Label each file's lines the way a manager would, and reuse the counter.
        with open(f"{work}/w{i}.txt", "rb") as f:
            lines = f.read().split(b"\n")[:-1]
        labelled = b"".join(b"w%d.1 | %s\n" % (i, line) for line in lines)
        r, _, t = count_lines(labelled, a.writers, a.lines)
        received += r
        torn += t
    lost = a.writers * a.lines - received
    for i in range(1, a.writers + 1):
        os.unlink(f"{work}/w{i}.txt")
    record(a, seconds=seconds, status=status, received=received, lost=lost, torn=torn,
           rss_kb=None, cpu=None, leftover=[])


def cmd_throughput(a):
    expect = a.writers * a.lines
    out = f"{a.dir}/out-{a.tool}-{a.run}.txt"
    proc = None
    try:
        with open(out, "wb") as sink, open(out, "rb") as tail:
            start = time.monotonic()
            proc = launch(a.cmd, f"{a.dir}/throughput", sink)
            last = start  # when output last grew
            seen = 0  # marker count in whole lines so far
            whole = 0  # bytes up to the last newline read so far
            carry = b""
            while True:
                chunk = tail.read()
                now = time.monotonic()
                if chunk:
                    data = carry + chunk
                    cut = data.rfind(b"\n") + 1
                    seen += data.count(MARKER, 0, cut)
                    whole += cut
                    carry = data[cut:]
                    last = now
                    if seen >= expect:
                        status = "complete"
                        break
                elif proc.poll() is not None:
                    status = f"exited early (code {proc.returncode})"
                    break
                elif seen and now - last > STALL:
                    # Only once output has begun: a manager may be slow to start.
                    status = "incomplete"
                    break
                if now - start > a.deadline:
                    status = "timeout" if seen else "hung, no output"
                    break
                time.sleep(POLL)
            seconds = last - start
            rss = vm_hwm_kb(proc.pid)
            cpu = manager_cpu()
            _, leftover = stop_and_count(proc, group=True)
        with open(out, "rb") as f:
            received, lost, torn = count_lines(f.read(whole), a.writers, a.lines)
    finally:
        kill_everything(proc)
    if not a.keep:
        os.unlink(out)
    record(a, seconds=seconds, status=status, received=received, lost=lost, torn=torn,
           rss_kb=rss, cpu=cpu, leftover=leftover)


def cmd_startup(a):
    out = f"{a.dir}/startup-{a.tool}-{a.run}.txt"
    proc = None
    try:
        with open(out, "wb") as sink:
            start = time.monotonic()
            proc = launch(a.cmd, f"{a.dir}/startup", sink)
            while True:
                table = proc_table()
                now = time.monotonic()
                running = sum(1 for p in descendants(table)
                              if table[p][2] == "sleep" and table[p][1] != "Z")
                if running >= a.types:
                    status = "complete"
                    break
                if proc.poll() is not None:
                    status = f"exited early (code {proc.returncode})"
                    break
                if now - start > a.deadline:
                    status = f"timeout ({running} running)"
                    break
                time.sleep(STARTUP_POLL)
            seconds = now - start
            rss = vm_hwm_kb(proc.pid)
            cpu = manager_cpu()
            _, leftover = stop_and_count(proc, group=True)
    finally:
        kill_everything(proc)
    if not a.keep:
        os.unlink(out)
    record(a, seconds=seconds, status=status, rss_kb=rss, cpu=cpu, leftover=leftover)


def cmd_skip(a):
    record(a, skipped=a.reason.replace("|", "/").replace("\n", " "))


def record(a, **fields):
    row = {"scenario": a.scenario, "tool": a.tool, "version": a.version,
           "run": getattr(a, "run", None), "command": " ".join(getattr(a, "cmd", []) or [])}
    row.update(fields)
    with open(a.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    if "skipped" in row:
        print(f"  {a.scenario:<10} {a.tool:<9} skipped: {row['skipped']}")
        return
    extra = ""
    if "received" in row:
        extra = f" received={row['received']} lost={row['lost']} torn={row['torn']}"
    print(f"  {a.scenario:<10} {a.tool:<9} run {row['run']}: {row['seconds']:.3f} s "
          f"[{row['status']}]{extra} rss={row['rss_kb']} kB cpu={fmt_cpu(row['cpu'])} "
          f"leftover={row['leftover'] or 0}",
          flush=True)


# ---------------------------------------------------------------- report


def fmt_rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_rss(kb):
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"


def fmt_left(names):
    """['sleep', 'sleep', 'sh'] -> '3 (sh, sleep ×2)'"""
    if not names:
        return "0"
    kinds = sorted(set(names))
    return f"{len(names)} (" + ", ".join(
        k if names.count(k) == 1 else f"{k} ×{names.count(k)}" for k in kinds) + ")"


def fmt_cpu(seconds):
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def delivered_nothing(r):
    """A run that hung or crashed before any output: it says nothing about speed or
    loss, so it is listed but not counted (when other runs did better)."""
    return r["status"] != "complete" and not r.get("received") and not r.get("torn")


def summarize(rows):
    """Group rows by tool, in first-seen order, with the median time."""
    tools = {}
    for r in rows:
        tools.setdefault(r["tool"], []).append(r)
    out = []
    for tool, runs in tools.items():
        skipped = next((r["skipped"] for r in runs if "skipped" in r), None)
        if skipped:
            out.append({"tool": tool, "version": runs[0]["version"], "skipped": skipped})
            continue
        complete = [r for r in runs if r["status"] == "complete"]
        usable = [r for r in runs if not delivered_nothing(r)] or runs
        timed = complete or usable
        rss = [r["rss_kb"] for r in runs if r.get("rss_kb") is not None]
        cpu = [r["cpu"] for r in timed if r.get("cpu") is not None]
        s = {
            "tool": tool,
            "version": runs[0]["version"],
            "median": statistics.median(r["seconds"] for r in timed),
            # (seconds, None) for a counted run, (None, why) for one that is not
            "runs": [(r["seconds"], None) if r in timed else (None, r["status"])
                     for r in runs],
            "complete": bool(complete),
            "rss_kb": max(rss) if rss else None,
            "cpu": statistics.median(cpu) if cpu else None,
            "leftover": max((r["leftover"] for r in runs), key=len),
        }
        if "received" in runs[0]:
            s["received"] = min(r["received"] for r in usable)
            s["lost"] = max(r["lost"] for r in usable)
            s["torn"] = max(r["torn"] for r in usable)
        out.append(s)
    return out


def fmt_runs(runs, fmt):
    return ", ".join(fmt(t) if why is None else f"*{why}*" for t, why in runs)


COMMON_COLUMNS = """\
- *peak RSS*: VmHWM of the manager's main process just before it is stopped, the
  worst run.
- *manager CPU*: user + system CPU seconds, by then, of every descendant that is not
  the workload (`sh`, `yes`, `head`, `sleep`), so helper processes count; the median.
- *left behind*: descendants still alive 2 s after the manager exited (then killed).
"""


def cmd_report(a):
    rows = [json.loads(l) for l in open(a.results)]
    expect = a.writers * a.lines
    tp = summarize([r for r in rows if r["scenario"] == "throughput"])
    st = summarize([r for r in rows if r["scenario"] == "startup"])
    base = next((s for s in tp if s["tool"] == "baseline" and "skipped" not in s), None)

    def rate(s):
        # An incomplete run delivered fewer lines than expected in its time.
        lines = expect if s["complete"] else s["received"]
        return lines / s["median"] if lines and s["median"] > 0 else 0.0

    if tp:
        report_throughput(a, tp, base, rate, expect)
    if st:
        report_startup(a, st)
    if tp:
        report_target(a, tp, st, base, rate)


def report_throughput(a, tp, base, rate, expect):
    print("## Log throughput\n")
    print(f"{a.writers} writers, each `yes '<40-byte line>' | head -n {a.lines}`, "
          f"{expect:,} lines in all, with the manager's stdout redirected to a file.\n")
    print(f"- *time*: from launching the manager until the file holds every writer line "
          f"(polled every {POLL * 1000:.0f} ms); the median of {a.runs} runs, each listed. "
          "A run that delivered nothing (a hung manager) is listed by its status and left "
          "out of the median and the counts.")
    print(f"- *incomplete*: the output stopped growing for {STALL:.0f} s before every line "
          "was in. Such a run is timed to its last byte, and its lines/s counts only the "
          "intact lines.")
    print("- *baseline*: the same writers into one file each with no manager, timed "
          "until all have exited. *× baseline*: lines/s against it.")
    print("- *received*: intact lines, the fewest of the runs. *lost*: expected minus "
          "intact. *torn*: output lines that carry part of a writer line but are not "
          "exactly one line under its own name. Lost and torn are the worst of the runs.")
    print(COMMON_COLUMNS)
    print("| tool | version | time (median) | runs | lines/s | × baseline | received | "
          "lost | torn | peak RSS | manager CPU | left behind |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in tp:
        if "skipped" in s:
            print(f"| {s['tool']} | {s['version']} | skipped: {s['skipped']} "
                  "| | | | | | | | | |")
            continue
        r = rate(s)
        vs = f"{rate(base) / r:.1f}× slower" if base and r and s is not base else "—"
        runs = fmt_runs(s["runs"], lambda t: f"{t:.3f}")
        t = f"{s['median']:.3f} s" + ("" if s["complete"] else " (incomplete)")
        rss = "n/a" if s["tool"] == "baseline" else fmt_rss(s["rss_kb"])
        print(f"| {s['tool']} | {s['version']} | {t} | {runs} | {fmt_rate(r)} | {vs} | "
              f"{s['received']:,} | {s['lost']:,} | {s['torn']:,} | {rss} | "
              f"{fmt_cpu(s['cpu'])} | {fmt_left(s['leftover'])} |")
    print()


def report_startup(a, st):
    print("## Startup\n")
    print(f"A Procfile of {a.types} types, `p1: sleep 60` … `p{a.types}: sleep 60`.\n")
    print(f"- *time*: from launching the manager until {a.types} `sleep` processes run "
          f"among its descendants (a scan of /proc every {STARTUP_POLL * 1000:.0f} ms); "
          f"the median of {a.runs} runs. One method for every tool: the managers print "
          "different start messages, and nf prints none.")
    print(COMMON_COLUMNS)
    print("| tool | version | time to all running (median) | runs | peak RSS | manager CPU "
          "| left behind |")
    print("|---|---|---:|---|---:|---:|---:|")
    for s in st:
        if "skipped" in s:
            print(f"| {s['tool']} | {s['version']} | skipped: {s['skipped']} | | | | |")
            continue
        t = f"{s['median'] * 1000:.0f} ms" + ("" if s["complete"] else " (incomplete)")
        runs = fmt_runs(s["runs"], lambda t: f"{t * 1000:.0f}")
        print(f"| {s['tool']} | {s['version']} | {t} | {runs} ms | {fmt_rss(s['rss_kb'])} "
              f"| {fmt_cpu(s['cpu'])} | {fmt_left(s['leftover'])} |")
    print()


def report_target(a, tp, st, base, rate):
    print("## crew against the target of issue 2\n")
    crew = next((s for s in tp if s["tool"] == "crew"), None)
    if crew is None or "skipped" in crew:
        why = crew["skipped"] if crew else "not run"
        print(f"crew was not measured ({why}).")
        return
    lossless = [s for s in tp if s["tool"] not in ("crew", "baseline") and "skipped" not in s
                and s["complete"] and s["lost"] == 0 and s["torn"] == 0]
    verdict = lambda ok: "**met**" if ok else "**not met**"
    print("| target | measured | |")
    print("|---|---|---|")
    if lossless:
        best = max(lossless, key=rate)
        x = rate(crew) / rate(best)
        print(f"| ≥ 30× the fastest peer that loses no line ({best['tool']}, "
              f"{fmt_rate(rate(best))} lines/s) | {x:.1f}× | {verdict(x >= 30)} |")
    else:
        print("| ≥ 30× the fastest peer that loses no line | no peer was lossless | — |")
    if base:
        x = rate(base) / rate(crew) if rate(crew) else float("inf")
        print(f"| within 4× of the writers straight to files ({fmt_rate(rate(base))} "
              f"lines/s) | {x:.1f}× slower | {verdict(x <= 4)} |")
    ok = crew["complete"] and crew["lost"] == 0 and crew["torn"] == 0
    print(f"| zero lost or torn lines | {crew['lost']} lost, {crew['torn']} torn | "
          f"{verdict(ok)} |")
    print(f"| nothing left behind after a stop | {fmt_left(crew['leftover'])} left | "
          f"{verdict(not crew['leftover'])} |")
    print(f"\nPeak RSS of `crew` itself: {fmt_rss(crew['rss_kb'])} during the throughput "
          "runs", end="")
    cs = next((s for s in st if s["tool"] == "crew" and "skipped" not in s), None)
    print(f", {fmt_rss(cs['rss_kb'])} with {a.types} processes." if cs else ".")


# ---------------------------------------------------------------- main


def dispatch(a, commands, name):
    """Runs `cmd_<a.what>` from `commands` (a module's globals) as the subreaper
    of everything it starts; a signal ends it through Stopped, with all of that
    killed, and exits with `name: stopped by SIGNAL`."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    become_subreaper()
    try:
        commands["cmd_" + a.what](a)
    except Stopped as e:
        kill_everything()
        sys.exit(f"{name}: stopped by {e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    shape = argparse.ArgumentParser(add_help=False)
    shape.add_argument("--writers", type=int, default=4)
    shape.add_argument("--lines", type=int, default=100000)
    shape.add_argument("--types", type=int, default=50)
    shape.add_argument("--runs", type=int, default=3)
    rec = argparse.ArgumentParser(add_help=False)
    rec.add_argument("--results", required=True)
    rec.add_argument("--tool", required=True)
    rec.add_argument("--version", default="")
    rec.add_argument("--run", type=int, default=1)
    rec.add_argument("--deadline", type=float, default=120)
    rec.add_argument("--keep", action="store_true", help="keep the output files")

    sub.add_parser("procfiles", parents=[shape]).add_argument("dir")
    sub.add_parser("baseline", parents=[shape, rec]).add_argument("dir")
    for name in ("throughput", "startup"):
        sp = sub.add_parser(name, parents=[shape, rec])
        sp.add_argument("dir")
        sp.add_argument("cmd", nargs=argparse.REMAINDER)
    sp = sub.add_parser("skip", parents=[rec])
    sp.add_argument("--scenario", required=True)
    sp.add_argument("--reason", required=True)
    sub.add_parser("report", parents=[shape]).add_argument("--results", required=True)
    a = p.parse_args()
    if getattr(a, "cmd", None) and a.cmd[0] == "--":
        a.cmd = a.cmd[1:]
    if a.what in ("baseline", "throughput", "startup"):
        a.scenario = "startup" if a.what == "startup" else "throughput"

    dispatch(a, globals(), "harness")


if __name__ == "__main__":
    main()
