#!/usr/bin/env python3
"""The `dyno` scenario of bench/run (issue 5): how long a dyno takes to start and exit.

  start    the dyno start-to-exit time of `true` under plain fork/exec, crew's plain and
           isolated runtimes, bwrap, runc and crun, all on one slug, timed by
           crates/runtime/examples/dyno_start.rs (which interleaves them in rounds)
  run      `crew server`, a Procfile-only app pushed to it, then `crew run -a APP true`
           end to end through the API, K times
  skip     record a part that could not run
  report   print the Markdown section from the results file

Like live.py (whose Server it reuses), every measurement appends one JSON object to
--results, the process is a child subreaper and every wait has a deadline.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
import harness  # noqa: E402  (same directory)
from harness import Stopped, kill_everything  # noqa: E402
from live import (  # noqa: E402
    OtherWork, Server, busy_note, check, median, recording_options, run, say, verdict,
)

# The slug every runtime starts from, shaped like the one of
# the isolation research note (shared/research/isolation.md): 5,000 files of 10 KiB in 50 directories, and a Procfile.
SLUG_DIRS, SLUG_FILES, SLUG_FILE_BYTES = 50, 100, 10 * 1024
APP_UID = 65534  # crew's default dyno user, who owns a slug as crew extracts it

# The order of the report's rows, and what each is called there.
RUNTIMES = {
    "fork-exec": "plain fork/exec",
    "crew-plain": "crew, plain runtime",
    "crew-isolated": "**crew, isolated runtime**",
    "crew-isolated-net": "**crew, isolated + network**",
    "bwrap-ro": "bwrap, read-only `/app`",
    "bwrap-overlay": "bwrap, overlay `/app`",
    "runc": "runc",
    "crun": "crun",
}
START_TARGET = 3.0  # crew's isolated dyno at most this many times plain fork/exec
NET_TARGET = 4.0  # the same with a network of its own (issue 15), and below bwrap
RUN_TARGET_MS = 50.0  # `crew run -a APP true` end to end, median


def record(a, **fields):
    row = {"scenario": "dyno", "version": a.version}
    row.update(fields)
    with open(a.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def p90(xs):
    """The nearest-rank 90th percentile."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(0.9 * len(xs)) - 1)] if xs else None


def make_slug(path):
    os.makedirs(path)
    with open(f"{path}/Procfile", "w") as f:
        f.write("web: true\n")
    block = os.urandom(SLUG_FILE_BYTES)
    for d in range(SLUG_DIRS):
        os.makedirs(f"{path}/d{d:02}")
        for i in range(SLUG_FILES):
            with open(f"{path}/d{d:02}/f{i:03}", "wb") as f:
                f.write(block)
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(path):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, APP_UID, APP_UID)


# ---------------------------------------------------------------- start to exit


def cmd_start(a):
    work = os.path.join(a.dir, "dyno-start")
    slug = f"{work}/slug"
    other = OtherWork()
    try:
        make_slug(slug)
        cmd = [a.example, slug, str(a.runs)]
        # Its own deadline: every run of every runtime, with room to spare.
        p = run(cmd, 60 + a.runs * 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"dyno_start failed (exit {p.returncode}): "
                               f"{(p.stderr or '').strip()[-300:]}")
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        for r in rows:
            name = r["runtime"]
            if "skipped" in r:
                record(a, part="start", tool=name, skipped=r["skipped"])
                say(f"dyno       {name:<14} skipped: {r['skipped']}")
                continue
            if "parts" in r:
                record(a, part="start", tool=name, parts=r["parts"])
                total = sum(median(ms) for _, ms in r["parts"])
                say(f"dyno       {name:<14} {len(r['parts'])} parts, medians summing to "
                    f"{total:.2f} ms")
                continue
            ms = r["ms"]
            record(a, part="start", tool=name, label=r.get("label", ""),
                   tool_version=r.get("version", ""), ms=ms)
            say(f"dyno       {name:<14} median {median(ms):6.2f} ms, p90 {p90(ms):6.2f} ms "
                f"({len(ms)} runs)")
    except Stopped:
        raise
    except Exception as e:  # noqa: BLE001  (recorded as the part's status)
        record(a, part="start", tool="all", skipped=f"failed: {e}")
        say(f"dyno       start-to-exit failed: {e}")
    finally:
        kill_everything()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    record(a, part="start", summary=True, runs=a.runs, other_cores=other.cores(),
           command=f"dyno_start SLUG {a.runs}")


# ---------------------------------------------------------------- crew run end to end


def cmd_run(a):
    app = "runbench"
    work = os.path.join(a.dir, "dyno-run")
    os.makedirs(work)
    server = Server(a, work)
    summary = dict(part="run", summary=True, runs=a.runs)
    other = OtherWork()
    with server.scenario(summary, "dyno       crew run:"):
        server.start()
        summary["command"] = " ".join(["crew"] + server.cmd[1:]).replace(work, "TMP")
        isolation = re.search(r"dyno isolation: (.*)", server.output())
        summary["isolation"] = isolation.group(1).strip() if isolation else "not reported"
        say(f"dyno       crew server: dyno isolation {summary['isolation']}")
        # No web type, so no dyno runs beside the one-offs.
        repo = server.new_app(app, {"Procfile": "worker: sleep 3600\n"})
        check(run(["git", "push", "crew", "main"], a.deadline, cwd=repo, env=server.env),
              "git push crew main")
        argv = [a.crew, "run", "-a", app, "true"]
        ms = []
        for i in range(a.warmup + a.runs):
            start = time.monotonic()
            p = run(argv, a.deadline, env=server.env)
            took = (time.monotonic() - start) * 1000
            check(p, "crew run -a runbench true")
            if i >= a.warmup:
                ms.append(took)
        record(a, part="run", tool="crew-run", ms=ms)
        say(f"dyno       crew run -a {app} true: median {median(ms):.1f} ms, "
            f"p90 {p90(ms):.1f} ms ({len(ms)} runs)")
        server.stopped(summary, "dyno       crew     ")
    summary["other_cores"] = other.cores()
    record(a, **summary)


def cmd_skip(a):
    record(a, part=a.part, tool="all", skipped=a.reason.replace("|", "/").replace("\n", " "))
    say(f"dyno       {a.part} skipped: {a.reason}")


# ---------------------------------------------------------------- report


def cmd_report(a):
    rows = [json.loads(line) for line in open(a.results)]
    rows = [r for r in rows if r.get("scenario") == "dyno"]
    if not rows:
        return
    start = [r for r in rows if r.get("part") == "start" and not r.get("summary")]
    start_sum = next((r for r in rows if r.get("part") == "start" and r.get("summary")), {})
    runs = [r for r in rows if r.get("part") == "run" and not r.get("summary")]
    run_sum = next((r for r in rows if r.get("part") == "run" and r.get("summary")), {})
    root = os.geteuid() == 0

    print("## Dyno start and `crew run` (issue 5)\n")
    version = next((r.get("version") for r in rows if r.get("version")), "")
    print(f"crew {version or '(version unknown)'}: `cargo build --release -p crew` and "
          "`-p crew-runtime --example dyno_start`; the peers are Debian's packages.\n")
    ratio = best = None
    isolated = None
    networked = bwrap = None
    print("### Start to exit of `true`, side by side\n")
    whole = next((r for r in start if r.get("tool") == "all"), None)
    if whole:
        print(f"Not measured: {whole.get('skipped')}\n")
    elif start:
        print("Every runtime runs `/bin/sh -c true` (the app's user, uid 65534, in `/app`, "
              "where it isolates) over one slug of 5,001 files (50 directories of 100 "
              "files of 10 KiB, and a Procfile), timed from one program, "
              "`crates/runtime/examples/dyno_start.rs`, from the start call until the "
              "exit is seen: crew's runtimes through their `Runtime::spawn` and "
              "`DynoProcess::wait` (output read to its end, as the server does), the others "
              "with `std::process::Command::status()`. The runtimes take turns, one run "
              f"each per round, {start_sum.get('runs', '?')} rounds after 2 untimed runs "
              "each. After every run, whichever the runtime, comes an untimed pause of "
              "50 ms (and for crew's networked row a wait until its pool of namespaces is "
              "full again), so that what a run leaves to the background (the kernel "
              "releasing its namespaces, crew's pool replacing the namespace taken) is not "
              "timed in the next run, which may be another runtime's; each start begins "
              "on a quiet machine, as a one-off on an idle server does. As root the program runs in a mount namespace of its own (`unshare "
              "-m`), where the peers' host-side mounts and directories live.\n")
        by_name = {r["tool"]: r for r in start}
        base = by_name.get("fork-exec", {}).get("ms")
        base_med = median(base) if base else None
        print("| runtime | median | p90 | min | × plain fork/exec (medians) | what it does |")
        print("|---|---:|---:|---:|---:|---|")
        names = list(RUNTIMES) + [n for n, r in by_name.items()
                                  if n not in RUNTIMES and "parts" not in r
                                  and not n.endswith("-steps")]
        for name in names:
            r = by_name.get(name)
            if r is None:
                continue
            title = RUNTIMES.get(name, name)
            if "skipped" in r:
                print(f"| {title} | | | | | skipped: {r['skipped']} |")
                continue
            med = median(r["ms"])
            x = f"{med / base_med:.1f}×" if base_med else ""
            version = f" ({r['tool_version']})" if r.get("tool_version") else ""
            print(f"| {title} | {med:.2f} ms | {p90(r['ms']):.2f} ms | {min(r['ms']):.2f} ms | {x} | "
                  f"{r.get('label', '')}{version} |")
            if name == "crew-isolated-net" and base_med:
                networked = med
            if name == "bwrap-ro":
                bwrap = med
            if name == "crew-isolated":
                isolated = med
                ratio = med / base_med if base_med else None
                best = min(r["ms"]) / min(base) if base else None
        print()
        if any(n.startswith("bwrap") and "skipped" not in r for n, r in by_name.items()):
            print("The bwrap rows run in a user namespace besides the others, since bwrap "
                  "needs one to switch to uid 65534; crew's isolated runtime, runc and "
                  "crun use none.\n")
        if "hybrid" in by_name.get("crun", {}).get("skipped", ""):
            print("crun was not given a host tweak to get past its refusal (the research "
                  "note mounted a v1 `hugetlb` hierarchy for the length of its run); the "
                  "bench changes nothing on the host.\n")
        steps = by_name.get("crew-isolated-net-steps")
        if steps and "parts" in steps:
            parts = [(kind, median(ms)) for kind, ms in steps["parts"]]
            total = sum(m for _, m in parts)
            runs_n = len(steps["parts"][0][1]) if steps["parts"] else 0
            print("#### What each part of crew's isolated, networked start takes\n")
            print(f"After the rounds, {runs_n} more starts of `true` by crew's isolated runtime "
                  "with a network, each with its init timing its own steps "
                  "(`IsolatedRuntime::time_start`: one write to the setup pipe per step, "
                  "so these starts are a little slower than the row above and are not in "
                  "it). *clone* runs from the start of the launch (the cgroup's files, the "
                  "hand-over to the thread that clones, entering the dyno's network, the "
                  "`clone` of new mount, pid, uts and ipc namespaces) to the init's first "
                  "instruction; each kind of step is the time all its steps took together; "
                  "*app exec* runs from the last step to the parent's seeing the app's "
                  "exec. The kernel-surface walls of issue 15 are *seccomp filter*, *empty "
                  "bounding set*, *clear capabilities*, *no_new_privs* and */proc walls* "
                  "(the hidden and read-only entries); *switch user* is the app's own "
                  "uid.\n")
            print("| part | median | share of the sum |")
            print("|---|---:|---:|")
            for kind, m in parts:
                share = f"{100 * m / total:.0f}%" if total else ""
                print(f"| {kind} | {m * 1000:.0f} µs | {share} |")
            print(f"| sum of the medians | {total * 1000:.0f} µs | |")
            walls = {"seccomp filter", "empty bounding set", "clear capabilities",
                     "no_new_privs", "/proc walls"}
            wall_sum = sum(m for kind, m in parts if kind in walls)
            print(f"\nThe kernel-surface walls together: {wall_sum * 1000:.0f} µs "
                  f"({100 * wall_sum / total:.0f}% of the sum).\n" if total else "")
        elif steps:
            print(f"The step-by-step timing was not measured: {steps.get('skipped')}\n")
        busy_note([start_sum.get("other_cores")])

    med_run = None
    print("### `crew run -a APP true` end to end\n")
    if runs and "ms" in runs[0]:
        ms = runs[0]["ms"]
        med_run = median(ms)
        print(f"`{run_sum.get('command', 'crew server …')}` (TMP a fresh temp dir; "
              f"dyno isolation: {run_sum.get('isolation', '?')}), a fresh git repo holding "
              "only a Procfile (`worker: sleep 3600`, so no dyno runs beside the "
              "one-offs) pushed with `git push crew main`; then `crew run -a runbench true` "
              "with stdin from /dev/null (so no terminal: pipes), as a subprocess of the "
              "bench, from its launch to its exit, "
              f"{len(ms)} times after 2 untimed runs. Each is a new one-off dyno "
              "(`run.N`) made through the API: the CLI's request, the server's dyno, its "
              "output and exit code back over the connection.\n")
        print("| | median | p90 | min | max | runs |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| `crew run -a runbench true` | **{med_run:.1f} ms** | {p90(ms):.1f} ms | "
              f"{min(ms):.1f} ms | {max(ms):.1f} ms | {len(ms)} |")
        print()
        left = run_sum.get("leftover") or []
        print(f"The server stopped {(run_sum.get('stop_s') or 0) * 1000:.0f} ms after "
              f"SIGTERM; left behind: {harness.fmt_left(left)}.\n")
    else:
        why = next((r.get("skipped") for r in runs if "skipped" in r), None)
        print(f"Not measured: {why or run_sum.get('status', 'not run')}\n")
    if run_sum.get("status") not in (None, "complete"):
        print(f"The part did not finish: {run_sum.get('status')}\n")
    busy_note([run_sum.get("other_cores")])

    isolated_run = (run_sum.get("isolation") or "").startswith("on")
    print("### crew against the targets of issue 5\n")
    print("| target | measured | |")
    print("|---|---|---|")
    if ratio is not None:
        print(f"| an isolated dyno starts and exits in at most {START_TARGET:.0f}× plain "
              f"fork/exec | {isolated:.2f} ms = {ratio:.1f}× (medians; the fastest runs: "
              f"{best:.1f}×) | "
              f"{verdict(ratio <= START_TARGET)} |")
    else:
        why = "not root" if not root else "no isolated or fork/exec number"
        print(f"| an isolated dyno starts and exits in at most {START_TARGET:.0f}× plain "
              f"fork/exec | not measured ({why}) | |")
    def run_row(target):
        if med_run is None:
            print(f"| {target} | not measured | |")
            return
        note = "" if isolated_run else " (dynos not isolated in this run)"
        print(f"| {target} | {med_run:.1f} ms{note} | {verdict(med_run < RUN_TARGET_MS)} |")

    run_row(f"`crew run -a APP true` end to end under {RUN_TARGET_MS:.0f} ms median")
    print()

    print("### crew against the targets of issue 15\n")
    print("| target | measured | |")
    print("|---|---|---|")
    if networked is not None:
        net_ratio = networked / base_med
        print(f"| an isolated dyno with a network of its own starts and exits in at most "
              f"{NET_TARGET:.0f}× plain fork/exec | {networked:.2f} ms = {net_ratio:.1f}× "
              f"(medians) | {verdict(net_ratio <= NET_TARGET)} |")
        if bwrap is not None:
            print(f"| … and faster than bwrap (read-only `/app`) | {networked:.2f} ms against "
                  f"{bwrap:.2f} ms | {verdict(networked < bwrap)} |")
        else:
            print("| … and faster than bwrap (read-only `/app`) | bwrap not measured | |")
    else:
        print(f"| an isolated dyno with a network of its own starts and exits in at most "
              f"{NET_TARGET:.0f}× plain fork/exec | not measured | |")
    run_row(f"`crew run -a APP true` end to end still under {RUN_TARGET_MS:.0f} ms median")
    print()


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    rec = recording_options()

    sp = sub.add_parser("start", parents=[rec])
    sp.add_argument("--example", required=True, help="target/release/examples/dyno_start")
    sp.add_argument("--runs", type=int, default=60)
    sp.add_argument("dir")
    sp = sub.add_parser("run", parents=[rec])
    sp.add_argument("--crew", required=True)
    sp.add_argument("--port", type=int, default=61000, help="look for free ports from here")
    sp.add_argument("--runs", type=int, default=60)
    sp.add_argument("--warmup", type=int, default=2)
    sp.add_argument("dir")
    sp = sub.add_parser("skip", parents=[rec])
    sp.add_argument("--part", required=True, choices=["start", "run"])
    sp.add_argument("--reason", required=True)
    sp = sub.add_parser("report")
    sp.add_argument("--results", required=True)
    a = p.parse_args()

    harness.dispatch(a, globals(), "dynos")


if __name__ == "__main__":
    main()
