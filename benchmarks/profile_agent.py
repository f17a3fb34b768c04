#!/usr/bin/env python3
"""Where postfix_smtp spends its time: start-up and per delivery request.

Run as root (private Postfix instances on /dev/shm, loopback only):

    /opt/postfix_smtp/venv/bin/python benchmarks/profile_agent.py --pythonpath git:HEAD

1. Start-up, with the cold-start probe of bench.py (fork+exec with master's
   fds and environment, until the first accept):
   - ``-X importtime`` of ``python -m postfix_smtp``: the slowest imports;
   - cProfile of the whole start-up (``python -m cProfile -m postfix_smtp``).
2. Per request: one agent process (smtp maxproc 1, ``-o max_use=1000000
   -o max_idle=10s``) delivers ``--messages`` held-then-released messages to
   smtp-sink:
   - under cProfile (the process dumps its profile when max_idle ends it);
   - without cProfile, sampled by py-spy (``--py-spy PATH``, or found on
     PATH; ``pip install py-spy`` into any directory will do), non-blocking,
     idle samples dropped: CPU only.

Writes the raw profiles and text reports to ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pstats
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
from bench import (HOLD_RESTRICTION, LogCounter, Watcher, _finish, _flush,  # noqa: E402
                   _release, _smtp_source, _wait, cold_start_once, note, source_snapshot)
from postfix_smtp.install import PERSONALITY_ENV  # noqa: E402
from postfix_smtp.testing.instance import (HarnessError, PostfixInstance,  # noqa: E402
                                           SmtpSink, LOOPBACK)


class Script:
    """A wrapper like install.Wrapper, with extra interpreter options and an
    optional stderr file (the agent's $$ is its pid: exec keeps it)."""

    def __init__(self, python: str, pythonpath: str | None, pre: str = "", stderr: str = ""):
        self.python, self.pythonpath, self.pre, self.stderr = python, pythonpath, pre, stderr

    def write(self, path: str) -> None:
        lines = ["#!/bin/sh", "%s=smtp; export %s" % (PERSONALITY_ENV, PERSONALITY_ENV)]
        if self.pythonpath:
            lines.append("PYTHONPATH=%s; export PYTHONPATH" % shlex.quote(self.pythonpath))
        flags = "" if self.pythonpath else " -I"
        redirect = " 2>>%s.$$" % shlex.quote(self.stderr) if self.stderr else ""
        lines.append('exec %s%s %s -m postfix_smtp "$@"%s'
                     % (shlex.quote(self.python), flags, self.pre, redirect))
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(path, 0o755)


def master_env(inst: PostfixInstance) -> dict:
    return {"MAIL_CONFIG": inst.config_dir, "MAIL_LOGTAG": "postfix", "LANG": "C",
            "POSTLOG_SERVICE": os.path.join(inst.queue_dir, "public", "postlog"),
            "POSTLOG_HOSTNAME": inst.myhostname, "GENERATION": "1"}


def _load(files: list) -> pstats.Stats:
    st = pstats.Stats(files[0], stream=io.StringIO())
    for f in files[1:]:
        st.add(f)
    return st


def _where(filename: str, line: int, func: str) -> str:
    if filename == "~":
        return func                              # a built-in
    parts = filename.split("/")
    if "postfix_smtp" in parts:
        filename = "/".join(parts[parts.index("postfix_smtp"):])
    else:
        filename = parts[-1]
    return "%s:%d(%s)" % (filename, line, func)


def pstats_text(files: list, sort: str, top: int, per: float, unit: str,
                only: str = "") -> str:
    """Top functions by ``sort`` ('tottime' or 'cumtime'), times divided by
    ``per`` (starts or requests) and shown in ms per ``unit``; ``only``: a
    substring of the file name (e.g. "postfix_smtp/")."""
    st = _load(files)
    rows = []
    for (fn, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():
        if only and only not in fn:
            continue
        rows.append((tt if sort == "tottime" else ct, tt, ct, nc, _where(fn, line, func)))
    rows.sort(key=lambda r: -r[0])
    out = ["%12s %12s %10s  %s   (top %d by %s%s)" % (
        "self ms/" + unit, "cum ms/" + unit, "calls/" + unit, "function", top, sort,
        ", %s only" % only.strip("/") if only else "")]
    for _key, tt, ct, nc, where in rows[:top]:
        out.append("%12.3f %12.3f %10.1f  %s" % (1000.0 * tt / per, 1000.0 * ct / per,
                                               nc / per, where))
    return "\n".join(out) + "\n"


def pstats_total(files: list) -> float:
    return _load(files).total_tt


def importtime_report(files: list, top: int) -> str:
    """Mean self/cumulative microseconds per module over several starts."""
    self_us = collections.defaultdict(list)
    cum_us = {}
    runs = 0
    for fn in files:
        with open(fn, errors="replace") as f:
            lines = [l for l in f if l.startswith("import time:") and "|" in l]
        if not lines:
            continue
        runs += 1
        for line in lines[1:] if lines[0].split("|")[0].strip().endswith("[us]") else lines:
            parts = line[len("import time:"):].split("|")
            try:
                s, c = int(parts[0]), int(parts[1])
            except ValueError:
                continue
            name = parts[2].rstrip("\n")
            mod = name.strip()
            self_us[mod].append(s)
            cum_us.setdefault(mod, []).append(c)
    if not runs:
        return "(no -X importtime output)\n"
    mean = {m: sum(v) / runs for m, v in self_us.items()}
    groups = collections.Counter()
    for m, us in mean.items():
        top_pkg = m.split(".")[0]
        groups["postfix_smtp" if top_pkg == "postfix_smtp" else
               "stdlib" if top_pkg in sys.stdlib_module_names else "third-party:" + top_pkg] += us
    out = ["imports, mean over %d starts: %.1f ms in all" % (runs, sum(mean.values()) / 1000.0),
           "by origin (self time): " + ", ".join("%s %.1f ms" % (g, us / 1000.0)
                                                 for g, us in groups.most_common())]
    out.append("%10s %10s  %s" % ("self ms", "cum ms", "module (slowest by self time)"))
    for m, us in sorted(mean.items(), key=lambda kv: -kv[1])[:top]:
        out.append("%10.2f %10.2f  %s" % (us / 1000.0, sum(cum_us[m]) / runs / 1000.0, m))
    return "\n".join(out) + "\n"


def pyspy_report(raw: str, top: int) -> str:
    """Self and inclusive sample shares per function from py-spy's raw output."""
    self_c = collections.Counter()
    incl_c = collections.Counter()
    total = 0
    with open(raw, errors="replace") as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            try:
                n = int(n)
            except ValueError:
                continue
            frames = [x for x in stack.split(";") if x]
            if frames and frames[0].startswith("process "):
                frames = frames[1:]
            if frames and frames[0].startswith("thread "):
                frames = frames[1:]
            if not frames:
                continue
            total += n
            self_c[_short(frames[-1])] += n
            for fr in set(_short(x) for x in frames):
                incl_c[fr] += n
    if not total:
        return "(no py-spy samples)\n"
    out = ["%d samples (CPU only)" % total, "%7s  %s" % ("self %", "function (file)")]
    for fr, n in self_c.most_common(top):
        out.append("%7.1f  %s" % (100.0 * n / total, fr))
    out += ["", "%7s  %s" % ("incl %", "function (file)")]
    for fr, n in incl_c.most_common(top):
        out.append("%7.1f  %s" % (100.0 * n / total, fr))
    return "\n".join(out) + "\n"


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (package/file.py)"
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    path = loc.rsplit(":", 1)[0]
    parts = path.split("/")
    if "postfix_smtp" in parts:
        path = "/".join(parts[parts.index("postfix_smtp"):])
    else:
        path = "/".join(parts[-2:])
    return "%s (%s)" % (name, path)


def strace_counts(path: str) -> dict:
    """syscall -> calls from ``strace -c`` output."""
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                try:
                    out[parts[-1]] = int(parts[3])
                except ValueError:
                    continue
    return out


def syscalls(a, python, pythonpath, top, out) -> str:
    n = a.messages
    counts = {}
    for label, stock in (("stock", True), ("postfix_smtp", False)):
        path = requests(a, python, pythonpath, top, out, "strace", stock=stock)
        counts[label] = strace_counts(path) if path else {}
    names = sorted(set(counts["stock"]) | set(counts["postfix_smtp"]),
                   key=lambda k: -(counts["postfix_smtp"].get(k, 0) + counts["stock"].get(k, 0)))
    lines = ["system calls per request, one process, %d requests (strace -c -p, attached "
             "after the warm-up):" % n,
             "%-16s %8s %14s" % ("syscall", "stock", "postfix_smtp")]
    for k in names:
        lines.append("%-16s %8.2f %14.2f" % (k, counts["stock"].get(k, 0) / n,
                                             counts["postfix_smtp"].get(k, 0) / n))
    lines.append("%-16s %8.2f %14.2f" % ("total", sum(counts["stock"].values()) / n,
                                         sum(counts["postfix_smtp"].values()) / n))
    return "\n".join(lines) + "\n"


def spawn_ms(cmd: list, env: dict, n: int) -> float:
    ts = []
    for _ in range(max(1, n)):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        ts.append(1000.0 * (time.perf_counter() - t0))
    ts.sort()
    return ts[len(ts) // 2]


def find_agent(inst: PostfixInstance, timeout: float = 10) -> int | None:
    end = time.monotonic() + timeout
    while True:
        for k in bench.children(inst.master_pid or 0):
            cmd = bench.cmdline(k)
            if bench.service_of(cmd) == "smtp" and os.path.basename(cmd[0]) != "sh":
                return k
        if time.monotonic() >= end:
            break
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------------------


def startup(a, python, pythonpath, top, out) -> str:
    base = tempfile.mkdtemp(prefix="prof-start-", dir=top)
    os.chmod(base, 0o755)
    probe = os.path.join(base, "probe")
    os.makedirs(probe)
    os.chmod(probe, 0o1777)        # the agent writes its profile after dropping privileges
    inst = PostfixInstance(os.path.join(base, "pf"), relayhost="[%s]:9" % LOOPBACK,
                           quick_start=True, max_lifetime=600)
    report = []
    try:
        inst.start()
        env = master_env(inst)
        plain = os.path.join(probe, "plain")
        Script(python, pythonpath).write(plain)
        itime = os.path.join(probe, "itime")
        Script(python, pythonpath, "-X importtime", os.path.join(probe, "importtime")).write(itime)
        prof = os.path.join(probe, "prof")
        Script(python, pythonpath, "-m cProfile -o %s" % os.path.join(probe, "start.$$.prof")
               ).write(prof)
        res = {"plain": [], "itime": [], "prof": []}
        for _ in range(a.starts):
            for name, path in (("plain", plain), ("itime", itime), ("prof", prof)):
                res[name].append(cold_start_once(path, env, inst.queue_dir, probe))
    finally:
        inst.stop()
    def med(name, key):
        xs = sorted(r[key] for r in res[name] if r[key] is not None)
        return xs[len(xs) // 2] if xs else float("nan")
    report.append("cold start (exec to first accept), median of %d: %.1f ms; start-up CPU "
                  "%.1f ms; peak RSS when ready %.1f MiB"
                  % (a.starts, med("plain", "ms"), med("plain", "cpu_ms"),
                     med("plain", "hwm_mib")))
    report.append("  with -X importtime: %.1f ms; under cProfile: %.1f ms"
                  % (med("itime", "ms"), med("prof", "ms")))
    env = {"LANG": "C"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    flag = [] if pythonpath else ["-I"]
    for label, args in (("interpreter alone: python %s-c pass" % ("" if pythonpath else "-I "),
                         flag + ["-c", "pass"]),
                        ("without site: python -I -S -c pass", ["-I", "-S", "-c", "pass"])):
        report.append("  %s: %.1f ms (spawn to exit, median of %d)"
                      % (label, spawn_ms([python] + args, env, a.starts), a.starts))
    itfiles = sorted(os.path.join(probe, f) for f in os.listdir(probe)
                     if f.startswith("importtime."))
    text = importtime_report(itfiles, a.top)
    report += ["", text]
    proffiles = sorted(os.path.join(probe, f) for f in os.listdir(probe)
                       if f.startswith("start.") and f.endswith(".prof"))
    for f in itfiles + proffiles:
        shutil.copy(f, out)
    if proffiles:
        report.append("cProfile of start-up + one empty request (%d starts merged; total %.1f "
                      "ms per start under the profiler):"
                      % (len(proffiles), 1000.0 * pstats_total(proffiles) / len(proffiles)))
        k = len(proffiles)
        report.append(pstats_text(proffiles, "tottime", a.top, k, "start"))
        report.append(pstats_text(proffiles, "cumtime", a.top, k, "start"))
        report.append(pstats_text(proffiles, "cumtime", a.top, k, "start", "postfix_smtp/"))
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(report)


def requests(a, python, pythonpath, top, out, how: str, stock: bool = False) -> str:
    """One agent process, many requests; how = 'cprofile', 'pyspy' or 'strace'
    (``stock``: the stock smtp(8), for strace only)."""
    base = tempfile.mkdtemp(prefix="prof-%s-" % how, dir=top)
    os.chmod(base, 0o755)
    pdir = os.path.join(base, "prof")
    os.makedirs(pdir)
    os.chmod(pdir, 0o1777)
    pre = "-m cProfile -o %s" % os.path.join(pdir, "req.$$.prof") if how == "cprofile" else ""
    sink = SmtpSink(os.path.join(base, "sink"), max_lifetime=900)
    inst = PostfixInstance(os.path.join(base, "pf"),
                           agent=None if stock else Script(python, pythonpath, pre),
                           smtp_maxproc="1",
                           smtp_args=["-o", "max_use=1000000", "-o", "max_idle=10s"],
                           main_cf={"smtpd_end_of_data_restrictions": HOLD_RESTRICTION},
                           quick_start=True, max_lifetime=900)
    n = a.messages
    report = []
    spy = None
    raw = os.path.join(out, "pyspy-requests.txt")
    trace = os.path.join(out, "strace-%s.txt" % ("stock" if stock else "postfix_smtp"))
    try:
        sink.start()
        inst.relayhost = sink.address
        inst.start()
        w = Watcher(inst.master_pid, 0.05)
        log = LogCounter(inst.log_path)

        def poll():
            w.poll()
            log.poll()
        _finish(_smtp_source(inst, 1, a.size, 1), 60, "smtp-source (warm-up)")
        _release(inst)
        _flush(inst)
        if not _wait(lambda: log.removed >= 1, 60, poll):
            raise HarnessError("warm-up not delivered")
        agent = find_agent(inst)
        _finish(_smtp_source(inst, n, a.size, 8), 300, "smtp-source")
        _release(inst)
        if how == "pyspy" and agent:
            spy = subprocess.Popen([a.py_spy, "record", "--nonblocking", "-r", str(a.rate),
                                    "-f", "raw", "-o", raw, "-p", str(agent)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
            time.sleep(0.5)
        if how == "strace" and agent:
            spy = subprocess.Popen(["strace", "-c", "-S", "calls", "-o", trace, "-p", str(agent)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
            time.sleep(0.5)
        cpu0 = bench.read_schedstat_ns(agent) if agent else None
        t0 = time.monotonic()
        _flush(inst)
        done = _wait(lambda: log.removed >= 1 + n, a.timeout, poll, 0.01)
        wall = time.monotonic() - t0
        cpu1 = bench.read_schedstat_ns(agent) if agent else None
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.communicate()
        if how == "cprofile":         # max_idle ends the process; it dumps the profile
            _wait(lambda: find_agent(inst, 0) is None, 60, lambda: None, 0.2)
            time.sleep(0.5)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        inst.stop()
        sink.stop()
    per = "%d requests in one process: %.2f s wall (%.0f msg/s)" % (n, wall, n / wall)
    if cpu0 is not None and cpu1 is not None:
        per += ", agent CPU %.3f ms/request" % ((cpu1 - cpu0) / 1e6 / n)
    report.append(per + ("" if done else " (NOT all delivered)"))
    if how == "cprofile":
        files = [os.path.join(pdir, f) for f in os.listdir(pdir) if f.endswith(".prof")]
        for f in files:
            shutil.copy(f, out)
        if files:
            total = pstats_total(files)
            waited = sum(tt for (fn, _l, func), (_c, _n, tt, _ct, _x) in _load(files).stats.items()
                         if fn == "~" and "poll" in func)
            report.append("cProfile (wall clock), whole process (start-up + %d requests + "
                          "exit): %.3f ms per request under the profiler, %.3f ms of it "
                          "waiting in poll():" % (n + 1, 1000.0 * total / (n + 1),
                                                  1000.0 * waited / (n + 1)))
            report.append(pstats_text(files, "tottime", a.top, n + 1, "req"))
            report.append(pstats_text(files, "cumtime", a.top, n + 1, "req"))
            report.append(pstats_text(files, "cumtime", a.top, n + 1, "req", "postfix_smtp/"))
        else:
            report.append("(no cProfile output)")
    elif how == "strace":
        return trace if os.path.exists(trace) else ""
    elif os.path.exists(raw):
        report.append("py-spy, %d Hz, non-blocking, during the %d requests:" % (a.rate, n))
        report.append(pyspy_report(raw, a.top))
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    return "\n".join(report)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", help="agent interpreter (as bench.py)")
    ap.add_argument("--pythonpath", help="as bench.py: DIR, repo or git:REV")
    ap.add_argument("--messages", type=int, default=2000, help="requests for one process (2000)")
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--starts", type=int, default=10, help="profiled start-ups (10)")
    ap.add_argument("--top", type=int, default=25, help="rows per table (25)")
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (1000)")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "",
                    help="py-spy binary (default: from PATH); empty to skip")
    ap.add_argument("--what", default="startup,cprofile,pyspy,strace",
                    help="comma-separated: startup, cprofile, pyspy, strace (default all)")
    ap.add_argument("--out", help="directory for the profiles and the report "
                                  "(default: a new /tmp/postfix_smtp-profile-*)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        note("must run as root")
        return 2
    python, pythonpath = (a.python, None) if a.python else bench.default_python()
    python = os.path.abspath(python)
    if a.pythonpath is not None:
        pythonpath = a.pythonpath or None
    out = a.out or tempfile.mkdtemp(prefix="postfix_smtp-profile-", dir="/tmp")
    os.makedirs(out, exist_ok=True)
    top = tempfile.mkdtemp(prefix="postfix_smtp-prof-", dir="/dev/shm")
    os.chmod(top, 0o755)
    what = [x.strip() for x in a.what.split(",")]
    sections = []
    try:
        source = "installed package"
        if pythonpath:
            pythonpath, source = source_snapshot(pythonpath, python, top)
        sections.append("postfix_smtp from %s; %s" % (source, python))
        if "startup" in what:
            note("start-up: %d probes each plain, -X importtime, cProfile" % a.starts)
            sections.append("== start-up ==\n" + startup(a, python, pythonpath, top, out))
        if "cprofile" in what:
            note("requests under cProfile: %d" % a.messages)
            sections.append("== per request: cProfile ==\n"
                            + requests(a, python, pythonpath, top, out, "cprofile"))
        if "strace" in what:
            if shutil.which("strace"):
                note("system calls (strace -c), %d requests per agent" % a.messages)
                sections.append("== per request: system calls ==\n"
                                + syscalls(a, python, pythonpath, top, out))
            else:
                sections.append("== per request: system calls ==\n(strace not installed)")
        if "pyspy" in what:
            if a.py_spy and os.access(a.py_spy, os.X_OK):
                note("requests under py-spy: %d" % a.messages)
                sections.append("== per request: py-spy ==\n"
                                + requests(a, python, pythonpath, top, out, "pyspy"))
            else:
                sections.append("== per request: py-spy ==\n(py-spy not found: pip install "
                                "py-spy, then --py-spy PATH)")
    finally:
        if not a.keep:
            shutil.rmtree(top, ignore_errors=True)
    text = "\n\n".join(sections) + "\n"
    with open(os.path.join(out, "report.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    print("profiles and report: %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
