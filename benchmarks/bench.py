#!/usr/bin/env python3
"""Side-by-side benchmark: the stock smtp(8) and postfix_smtp, same workload.

Every run builds a fresh private Postfix 3.7 instance on tmpfs (``--base``,
default /dev/shm) with Postfix's smtp-sink on 127.0.0.1 as the only
destination, and the two agents take turns (ABBA order over the runs), so slow
drift of the machine hits both alike.  Must run as root (Postfix, acct(2)).

Modes (``--mode``, comma-separated):

- ``release``: delivery only.  smtpd puts every message on hold
  (``smtpd_end_of_data_restrictions = check_client_access static:HOLD``);
  after injection ``postsuper -H ALL``; the clock runs from ``postqueue -f``
  until qmgr has logged ``removed`` for every message.  This is what a
  different delivery agent changes.
- ``e2e``: from the start of injection (smtp-source, 8 sessions) until every
  message is removed.  Injection (smtpd + cleanup) shares the CPUs.
- ``slow``: like ``release`` with a slow peer: smtp-sink ``-w 1`` waits 1 s
  before it answers DATA, so each delivery takes > 1 s and throughput is
  bounded by qmgr's destination concurrency (20), not by the agent.

What is measured (per run; the table shows the median over runs):

- messages/s: messages / wall time, as above.
- agent CPU ms per message: the agent processes are master's children whose
  command is the agent.  Their CPU time is sampled from /proc/PID/schedstat
  (nanoseconds) every ``--sample-ms`` (50) ms while they live; processes that
  exit are completed by BSD process accounting (acct(2), 10 ms ticks): per
  process the larger of the last sample and the exit record counts.  CPU the
  processes already had when the clock started (warm-up) is subtracted.
- peak RSS per agent process: VmHWM from /proc/PID/status (sampled; it only
  grows), max and median over the agent processes.  MiB.
- agent processes: distinct agent pids master ran during the run.
- cold start: a probe plays master(8) for one process: it prepares the fds a
  master child gets (3/4 a pipe, 5 a status socket, 6 a listening socket
  that already has a client waiting), master's environment (MAIL_CONFIG of a
  running instance, GENERATION, ...), cwd = queue_directory, then fork+exec
  of the agent exactly as master does (the postfix_smtp wrapper: /bin/sh
  exec's the interpreter).  Cold start = from fork until the 12-byte "taken"
  status record arrives on fd 5, i.e. the agent has initialised, dropped
  privileges and accepted its first connection.  ``wait4`` gives the
  process' CPU for that start (plus one empty request); VmHWM when ready.  Page
  cache is warm (as for every start but the first one after boot).

Usage (as root; see benchmarks/README.md):

    /opt/postfix_smtp/venv/bin/python benchmarks/bench.py --json bench.json
    python3 benchmarks/bench.py --quick          # tiny workload, a smoke test

Every wait is bounded (``--timeout`` per run); everything is on loopback.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from postfix_smtp.install import Wrapper  # noqa: E402
from postfix_smtp.testing.instance import (  # noqa: E402
    LOOPBACK, HarnessError, PostfixInstance, SmtpSink, copy_package_for_postfix,
    postfix_available, stock_daemon_dir, tool)

try:  # a dependency of the package; the fallback only keeps a bare python3 working
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

VENV_PYTHON = "/opt/postfix_smtp/venv/bin/python"
STOCK = "stock"
PY = "postfix_smtp"
AGENTS = (STOCK, PY)
SENDER = "sender@src.bench.invalid"
RECIPIENT = "rcpt@dest.bench.invalid"
HOLD_RESTRICTION = "check_client_access static:HOLD"
MODES = ("release", "e2e", "slow")

# Targets from issue 8 (ratios are postfix_smtp / stock).
TARGETS = {
    "msgs_per_s": (">=", 1.0, "ratio"),
    "agent_cpu_ms_per_msg": ("<=", 1.5, "ratio"),
    "peak_rss_mib_max": ("<=", 25.0, "abs"),
    "cold_start_ms": ("<=", 60.0, "abs"),
}


def note(msg: str) -> None:
    print("bench: %s" % msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# /proc helpers


def read_schedstat_ns(pid: int):
    try:
        with open("/proc/%d/schedstat" % pid, "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_vmhwm_kb(pid: int):
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def children(pid: int) -> list:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def cmdline(pid: int) -> list:
    if psutil is not None:
        try:
            return psutil.Process(pid).cmdline()
        except (psutil.Error, OSError):
            return []
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def service_of(cmd: list) -> str:
    """The Postfix service a child of master runs ("smtp" for both agents)."""
    if not cmd:
        return ""
    # "-m postfix_smtp", or the installed wrapper's "-c ... postfix_smtp ..."
    if any("postfix_smtp" in word for word in cmd[:6]):
        return "smtp"
    # the wrapper phase: /bin/sh DIR/libexec/smtp -t unix -u
    for word in cmd[:2]:
        if os.path.basename(word) == "smtp":
            return "smtp"
    name = os.path.basename(cmd[0])
    if name == "smtpd" or (len(cmd) > 2 and cmd[1] == "-n" and ":" in cmd[2]):
        return "smtpd"
    return name


# ---------------------------------------------------------------------------
# BSD process accounting: an exit record for every process, CPU in 10 ms ticks

ACCT_V3 = struct.Struct("=BBHIIIIIIf8H16s")   # struct acct_v3, 64 bytes


def _comp_t(v: int) -> int:
    return (v & 0x1FFF) << (3 * ((v >> 13) & 7))


class Acct:
    def __init__(self, path: str) -> None:
        self.path = path
        self.on = False
        self.error = ""
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def start(self) -> None:
        open(self.path, "wb").close()
        if self._libc.acct(self.path.encode()) == 0:
            self.on = True
        else:
            self.error = os.strerror(ctypes.get_errno())
            note("acct(2) unavailable (%s): exited processes count from samples only"
                 % self.error)

    def stop(self) -> None:
        if self.on:
            self._libc.acct(None)
            self.on = False

    def records(self) -> list:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        out = []
        for off in range(0, len(data) - ACCT_V3.size + 1, ACCT_V3.size):
            (_flag, ver, _tty, exitcode, _uid, _gid, pid, ppid, btime, _etime, ut, st,
             _mem, _io, _rw, _minflt, _majflt, _swaps, comm) = ACCT_V3.unpack_from(data, off)
            if ver & 0x7F != 3:
                continue
            out.append({"pid": pid, "ppid": ppid, "btime": btime, "exit": exitcode,
                        "cpu_s": (_comp_t(ut) + _comp_t(st)) / 100.0,
                        "comm": comm.split(b"\0", 1)[0].decode("ascii", "replace")})
        return out


# ---------------------------------------------------------------------------
# following master's children


class Watcher:
    """master's children: service name, CPU (schedstat ns) and VmHWM, sampled."""

    def __init__(self, master_pid: int, sample_s: float) -> None:
        self.master = master_pid
        self.sample_s = sample_s
        self.service = {}       # pid -> service name ("" while not yet known)
        self.cpu_ns = {}        # pid -> last schedstat sample
        self.hwm_kb = {}        # pid -> largest VmHWM seen (agents only)
        self.first_seen = {}
        self._last_cpu = 0.0
        self.samples = 0
        # a child shows master's own command line between fork() and exec()
        self._master_cmd = cmdline(master_pid)

    def agents(self) -> list:
        return [p for p, s in self.service.items() if s == "smtp"]

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        kids = children(self.master)
        for k in kids:
            if not self.service.get(k):
                cmd = cmdline(k)
                self.service[k] = "" if cmd == self._master_cmd else service_of(cmd)
                self.first_seen.setdefault(k, now)
        if not force and now - self._last_cpu < self.sample_s:
            return
        self._last_cpu = now
        self.samples += 1
        for k in kids:
            ns = read_schedstat_ns(k)
            if ns is not None:
                self.cpu_ns[k] = ns
            if self.service.get(k) == "smtp":
                kb = read_vmhwm_kb(k)
                if kb is not None and kb > self.hwm_kb.get(k, 0):
                    self.hwm_kb[k] = kb


# log warnings that say nothing about the agents
BENIGN = (b"symlink leaves directory",            # postfix check: per-instance daemon_directory
          b"file system clock is",                # cleanup(8) on tmpfs, a second off
          b"resetting file time stamps")


class LogCounter:
    """Counts qmgr's "removed" and the status=... lines in the instance's maillog."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        self.removed = 0
        self.status = {"sent": 0, "deferred": 0, "bounced": 0}
        self.problems = 0
        self.problem_lines = []     # the first few warning/fatal/panic lines
        self.reused = 0             # delivery lines with conn_use=N: a cached connection

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        self.offset += len(data)
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        data, self.rest = data[:cut], data[cut:]
        self.removed += data.count(b": removed\n")
        self.reused += data.count(b", conn_use=")
        for k in self.status:
            self.status[k] += data.count(b" status=%s " % k.encode())
        if b"warning: " in data or b"fatal: " in data or b"panic: " in data:
            for line in data.split(b"\n"):
                if b"warning: " in line or b"fatal: " in line or b"panic: " in line:
                    if any(x in line for x in BENIGN):
                        continue
                    self.problems += 1
                    if len(self.problem_lines) < 10:
                        self.problem_lines.append(line.decode("utf-8", "replace")[:300])


# ---------------------------------------------------------------------------
# one run


class Agents:
    """How each agent is put into master.cf."""

    def __init__(self, python: str, pythonpath: str | None) -> None:
        self.python = python
        self.pythonpath = pythonpath

    def wrapper(self, name: str):
        if name == STOCK:
            return None
        return Wrapper(python=self.python, pythonpath=self.pythonpath)


def _smtp_source(inst: PostfixInstance, n: int, size: int, sessions: int) -> subprocess.Popen:
    cmd = [tool("smtp-source"), "-s", str(max(1, min(sessions, n))), "-m", str(n),
           "-l", str(size), "-r", "1", "-f", SENDER, "-t", RECIPIENT,
           "-M", "client.bench.invalid", "%s:%d" % (LOOPBACK, inst.smtpd_port)]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _finish(p: subprocess.Popen, timeout: float, what: str) -> None:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise HarnessError("%s timed out after %.0f s" % (what, timeout))
    if p.returncode != 0:
        raise HarnessError("%s failed (rc=%d): %s" % (what, p.returncode,
                                                         err.decode("utf-8", "replace").strip()))


def _count_files(d: str) -> int:
    n = 0
    for _root, _dirs, files in os.walk(d):
        n += len(files)
    return n


def _release(inst: PostfixInstance) -> None:
    subprocess.run([tool("postsuper"), "-c", inst.config_dir, "-H", "ALL"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=True)


def _flush(inst: PostfixInstance) -> None:
    subprocess.run([tool("postqueue"), "-c", inst.config_dir, "-f"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=True)


def _wait(cond, timeout: float, poll, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while True:
        poll()
        if cond():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(interval)


def one_run(a, agents: Agents, agent: str, mode: str, n: int, run_no: int, top: str) -> dict:
    base = tempfile.mkdtemp(prefix="%s-%s-%d-" % (mode, agent, run_no), dir=top)
    os.chmod(base, 0o755)
    hold = mode in ("release", "slow")
    sink_args = a.slow_sink_args.split() if mode == "slow" else []
    life = a.timeout + 180
    sink = SmtpSink(os.path.join(base, "sink"), args=sink_args, max_lifetime=life)
    main_cf = {"smtpd_end_of_data_restrictions": HOLD_RESTRICTION} if hold else {}
    inst = PostfixInstance(os.path.join(base, "pf"), agent=agents.wrapper(agent),
                           main_cf=main_cf, quick_start=True, max_lifetime=life)
    acct = Acct(os.path.join(base, "acct"))
    res = {"agent": agent, "mode": mode, "run": run_no, "messages": n, "size": a.size,
           "ok": False}
    t_start = int(time.time()) - 1
    try:
        sink.start()
        inst.relayhost = sink.address
        inst.start()
        mpid = inst.master_pid
        acct.start()
        w = Watcher(mpid, a.sample_ms / 1000.0)
        log = LogCounter(inst.log_path)

        def poll():
            w.poll()
            log.poll()

        # warm-up: one message, so qmgr, trivial-rewrite and an agent are running
        _finish(_smtp_source(inst, 1, a.size, 1), 60, "smtp-source (warm-up)")
        if hold:
            _release(inst)
            _flush(inst)
        if not _wait(lambda: log.removed >= 1, 60, poll):
            raise HarnessError("warm-up message not delivered; log tail:\n%s"
                               % "\n".join(inst.log_lines()[-20:]))
        sink_base = sink.count
        sent_base = log.status["sent"]
        reused_base = log.reused
        ru0 = resource.getrusage(resource.RUSAGE_SELF)

        if hold:
            t_inj = time.monotonic()
            _finish(_smtp_source(inst, n, a.size, a.sessions), a.timeout, "smtp-source")
            res["inject_s"] = round(time.monotonic() - t_inj, 3)
            held = _count_files(os.path.join(inst.queue_dir, "hold"))
            if held != n:
                raise HarnessError("expected %d held messages, found %d" % (n, held))
            _release(inst)
            w.poll(force=True)
            cpu_base = dict(w.cpu_ns)
            procs_base = set(w.agents())
            t0 = time.monotonic()
            _flush(inst)
            inj = None
        else:
            w.poll(force=True)
            cpu_base = dict(w.cpu_ns)
            procs_base = set(w.agents())
            t0 = time.monotonic()
            inj = _smtp_source(inst, n, a.size, a.sessions)
        target = 1 + n
        end = t0 + a.timeout
        done = False
        while time.monotonic() < end:
            poll()
            if inj is not None and inj.poll() is not None:
                res["inject_s"] = round(time.monotonic() - t0, 3)
                _finish(inj, 5, "smtp-source")
                inj = None
            if log.removed >= target:
                done = True
                break
            time.sleep(0.005)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        if inj is not None:
            inj.kill()
            inj.communicate()
        time.sleep(0.3)               # postlogd, the sink's last files
        w.poll(force=True)
        log.poll()
        res.update({
            "ok": done,
            "wall_s": round(wall, 3),
            "msgs_per_s": round(n / wall, 1) if done else 0.0,
            "delivered_to_sink": sink.count - sink_base,
            "log_sent": log.status["sent"] - sent_base,
            "reused_conn_pct": round(100.0 * (log.reused - reused_base) / n, 1),
            "log_deferred": log.status["deferred"],
            "log_bounced": log.status["bounced"],
            "log_problems": log.problems,
            "log_problem_lines": log.problem_lines,
            "bench_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
            "samples": w.samples,
        })
        if not done:
            note("%s %s run %d: only %d of %d messages done within %.0f s"
                 % (mode, agent, run_no, log.removed - 1, n, a.timeout))
        inst.stop()       # agents' exits land in the accounting file
        time.sleep(0.1)
    finally:
        acct.stop()
        try:
            inst.stop()
        finally:
            sink.stop()
    recs = [r for r in acct.records() if r["btime"] >= t_start]
    _account(res, w, recs, mpid, cpu_base, procs_base, n)
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        res["dir"] = base
    return res


def _account(res, w: Watcher, recs, mpid, cpu_base, procs_base, n) -> None:
    exit_cpu = {}
    for r in recs:
        exit_cpu[r["pid"]] = (r["cpu_s"], r["ppid"], r["comm"])
    agents = set(w.agents())
    # agents that lived and died between two looks at master's children
    for pid, (_cpu, ppid, comm) in exit_cpu.items():
        if ppid == mpid and pid not in w.service and (
                comm in ("smtp", "sh") or comm.startswith("python")):
            agents.add(pid)
    cpu = 0.0
    services = {}
    for pid in set(w.service) | {p for p, (_c, pp, _m) in exit_cpu.items() if pp == mpid}:
        sampled = w.cpu_ns.get(pid, 0) / 1e9
        total = max(sampled, exit_cpu.get(pid, (0.0,))[0])
        used = max(0.0, total - cpu_base.get(pid, 0) / 1e9)
        svc = "smtp" if pid in agents else (w.service.get(pid) or exit_cpu[pid][2])
        services[svc] = round(services.get(svc, 0.0) + used, 4)
        if pid in agents:
            cpu += used
    hwm = [w.hwm_kb[p] / 1024.0 for p in agents if p in w.hwm_kb]
    res.update({
        "agent_procs": len(agents),
        "agent_procs_new": len(agents - procs_base),
        "agent_cpu_s": round(cpu, 4),
        "agent_cpu_ms_per_msg": round(1000.0 * cpu / n, 4),
        "peak_rss_mib_max": round(max(hwm), 2) if hwm else None,
        "peak_rss_mib_median": round(statistics.median(hwm), 2) if hwm else None,
        "cpu_s_by_service": services,
        "acct_records": len(recs),
    })


# ---------------------------------------------------------------------------
# cold start: play master(8) for one process


def _spawn_like_master(path: str, argv: list, env: dict, cwd: str, lsock: socket.socket,
                       status_child: socket.socket, pipe: tuple) -> int:
    srcs = [pipe[0], pipe[1], status_child.fileno(), lsock.fileno()]
    pid = os.fork()
    if pid == 0:  # child: fds 3..6 as master sets them, then exec
        try:
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in srcs]
            for target, fd in zip((3, 4, 5, 6), high):
                os.dup2(fd, target, inheritable=True)
            for fd in (3, 4, 6):
                fl = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
            os.closerange(7, 4096)
            nul = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(nul, fd)
            os.chdir(cwd)
            os.umask(0o077)
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            os.execve(path, argv, env)
        finally:
            os._exit(127)
    return pid


def cold_start_once(path: str, env: dict, cwd: str, sockdir: str) -> dict:
    sock_path = os.path.join(sockdir, "listen.%d" % os.getpid())
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(sock_path)
    os.chmod(sock_path, 0o666)
    lsock.listen(16)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(sock_path)           # waits in the backlog, like qmgr's connection
    st_parent, st_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pipe = os.pipe()
    t0 = time.perf_counter()
    pid = _spawn_like_master(path, ["smtp", "-t", "unix", "-u"], env, cwd, lsock, st_child, pipe)
    st_child.close()
    os.close(pipe[0])
    os.close(pipe[1])
    lsock.close()
    out = {"ms": None, "cpu_ms": None, "hwm_mib": None}
    try:
        st_parent.settimeout(10)
        rec = b""
        while len(rec) < 12:
            chunk = st_parent.recv(12 - len(rec))
            if not chunk:
                break
            rec += chunk
        t1 = time.perf_counter()
        if len(rec) == 12 and struct.unpack("=iIi", rec)[2] == 0:
            out["ms"] = round(1000.0 * (t1 - t0), 2)
            kb = read_vmhwm_kb(pid)   # wait4's ru_maxrss would include our pre-exec image
            out["hwm_mib"] = round(kb / 1024.0, 2) if kb else None
        client.close()
        try:                          # "available" after the (empty) request
            st_parent.settimeout(5)
            st_parent.recv(12)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        client.close()
        st_parent.close()             # master went away: the agent exits
        ru = None
        end = time.monotonic() + 5
        while time.monotonic() < end:
            wpid, _status, ru = os.wait4(pid, os.WNOHANG)
            if wpid:
                break
            time.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
            _, _, ru = os.wait4(pid, 0)
        try:
            os.unlink(sock_path)
        except OSError:
            pass
    if ru is not None:
        out["cpu_ms"] = round(1000.0 * (ru.ru_utime + ru.ru_stime), 2)
    return out


def cold_start(a, agents: Agents, top: str) -> dict:
    base = tempfile.mkdtemp(prefix="coldstart-", dir=top)
    os.chmod(base, 0o755)
    inst = PostfixInstance(os.path.join(base, "pf"), relayhost="[%s]:9" % LOOPBACK,
                           quick_start=True, max_lifetime=a.timeout + 120)
    probe_dir = os.path.join(base, "probe")
    os.makedirs(probe_dir)
    os.chmod(probe_dir, 0o755)
    wrapper_path = os.path.join(probe_dir, "smtp")
    agents.wrapper(PY).write(wrapper_path)
    paths = {STOCK: os.path.join(stock_daemon_dir(), "smtp"), PY: wrapper_path}
    res = {STOCK: [], PY: []}
    try:
        inst.start()
        env = {"MAIL_CONFIG": inst.config_dir, "MAIL_LOGTAG": "postfix", "LANG": "C",
               "POSTLOG_SERVICE": os.path.join(inst.queue_dir, "public", "postlog"),
               "POSTLOG_HOSTNAME": inst.myhostname, "GENERATION": "1"}
        for i in range(a.cold_starts):
            order = a.agents if i % 2 == 0 else a.agents[::-1]
            for agent in order:
                res[agent].append(cold_start_once(paths[agent], env, inst.queue_dir, probe_dir))
    finally:
        inst.stop()
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    out = {}
    for agent, runs in res.items():
        ms = [r["ms"] for r in runs if r["ms"] is not None]
        cpu = [r["cpu_ms"] for r in runs if r["cpu_ms"] is not None]
        rss = [r["hwm_mib"] for r in runs if r["hwm_mib"] is not None]
        out[agent] = {
            "cold_start_ms": round(statistics.median(ms), 2) if ms else None,
            "cold_start_ms_p90": round(_pct(ms, 0.9), 2) if ms else None,
            "cold_start_ms_min": round(min(ms), 2) if ms else None,
            "start_cpu_ms": round(statistics.median(cpu), 2) if cpu else None,
            "ready_rss_mib": round(statistics.median(rss), 2) if rss else None,
            "failed": len(runs) - len(ms),
            "samples": runs,
        }
    return out


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ---------------------------------------------------------------------------
# summary and table


SUMMARY_KEYS = ("msgs_per_s", "agent_cpu_ms_per_msg", "peak_rss_mib_max", "peak_rss_mib_median",
                "agent_procs", "reused_conn_pct", "wall_s")


def summarize(runs: list) -> dict:
    out = {}
    for k in SUMMARY_KEYS:
        vals = [r[k] for r in runs if r.get("ok") and r.get(k) is not None]
        out[k] = round(statistics.median(vals), 3) if vals else None
    out["runs_ok"] = sum(1 for r in runs if r.get("ok"))
    out["runs"] = len(runs)
    return out


def _ratio(py, stock):
    if py is None or stock in (None, 0):
        return None
    return round(py / stock, 2)


def _verdict(key, py, ratio):
    t = TARGETS.get(key)
    if not t:
        return ""
    op, bound, kind = t
    v = ratio if kind == "ratio" else py
    if v is None:
        return "?"
    ok = v >= bound if op == ">=" else v <= bound
    label = "%s %s%s" % (op, bound, "x" if kind == "ratio" else "")
    return "%s %s" % ("ok  " if ok else "MISS", label)


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.*f" % (digits, v)
    return str(v)


def table(result: dict) -> str:
    rows = []   # (label, stock, py, ratio, verdict, digits)
    for mode, m in result["modes"].items():
        s, p = m["summary"][STOCK], m["summary"][PY]
        n = m["messages"]
        label = {"release": "delivery-only", "e2e": "end to end",
                 "slow": "slow peer (%s)" % result["config"]["slow_sink_args"]}[mode]
        head = "%s, %d msgs" % (label, n)
        for key, name, digits in (("msgs_per_s", "messages/s", 1),
                                  ("agent_cpu_ms_per_msg", "agent CPU ms/msg", 3),
                                  ("peak_rss_mib_max", "peak RSS/agent MiB (max)", 1),
                                  ("peak_rss_mib_median", "peak RSS/agent MiB (median)", 1),
                                  ("agent_procs", "agent processes", 0),
                                  ("reused_conn_pct", "% sent over a reused connection", 0)):
            r = _ratio(p[key], s[key])
            verdict = _verdict(key, p[key], r)
            if mode == "slow" and key == "msgs_per_s":
                verdict = "%s same as stock" % ("ok  " if r is not None and r >= 0.95 else "MISS")
            rows.append(("%s: %s" % (head, name), s[key], p[key], r, verdict, digits))
    cs = result.get("cold_start")
    if cs:
        for key, name, digits in (("cold_start_ms", "cold start ms (median)", 1),
                                  ("cold_start_ms_p90", "cold start ms (p90)", 1),
                                  ("start_cpu_ms", "start-up CPU ms", 1),
                                  ("ready_rss_mib", "peak RSS when ready MiB", 1)):
            sv, pv = cs[STOCK][key], cs[PY][key]
            r = _ratio(pv, sv)
            rows.append(("cold start, %d spawns: %s" % (result["config"]["cold_starts"], name),
                         sv, pv, r, _verdict(key, pv, r), digits))
    w0 = max(len(r[0]) for r in rows) if rows else 10
    lines = ["%-*s %14s %14s %7s  %s" % (w0, "metric (median of runs)", "stock smtp(8)",
                                          "postfix_smtp", "ratio", "target"),
             "-" * (w0 + 56)]
    for label, sv, pv, r, verdict, digits in rows:
        lines.append("%-*s %14s %14s %7s  %s" % (w0, label, _fmt(sv, digits), _fmt(pv, digits),
                                                 _fmt(r, 2), verdict))
    return "\n".join(lines)


# ---------------------------------------------------------------------------


def default_python() -> tuple:
    """(python, pythonpath): the venv's interpreter if there is one, else
    /usr/bin/python3 with (a copy of) this checkout on PYTHONPATH."""
    if os.access(VENV_PYTHON, os.X_OK):
        return VENV_PYTHON, None
    return "/usr/bin/python3", "repo"


def installed_location(python: str) -> str:
    """Where ``python -I`` imports postfix_smtp from ("" if it cannot)."""
    try:
        r = subprocess.run([python, "-I", "-c", "import postfix_smtp,os;"
                            "print(os.path.dirname(postfix_smtp.__file__))"],
                           cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def installed_differs(python: str) -> str | None:
    """When the interpreter imports an installed copy of postfix_smtp that
    differs from this checkout, say so (the benchmark would measure old code)."""
    try:
        r = subprocess.run([python, "-I", "-c", "import postfix_smtp,os;"
                            "print(os.path.dirname(postfix_smtp.__file__))"],
                           cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    where = r.stdout.strip()
    here = os.path.join(REPO_ROOT, "postfix_smtp")
    if r.returncode != 0 or not where or os.path.realpath(where) == os.path.realpath(here):
        return None
    r = subprocess.run(["diff", "-rq", "-x", "__pycache__", "-x", "*.pyc", here, where],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return where if r.returncode != 0 else None


def source_snapshot(spec: str, python: str, top: str) -> tuple:
    """(pythonpath, description) for --pythonpath.  'repo' and 'git:REV' are
    copied under ``top`` first, so edits made while the benchmark runs do not
    change the code under test, and byte-compiled with the agent's
    interpreter (the agent imports some modules after dropping privileges,
    when it could not write __pycache__ any more)."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO_ROOT] + list(args), capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL).stdout.strip()
    if spec == "repo":
        path = copy_package_for_postfix(os.path.join(REPO_ROOT, "postfix_smtp"), top)
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "postfix_smtp")
        desc = "the working tree at %s%s (copied)" % (
            head or "?", " with uncommitted changes" if dirty else "")
    elif spec.startswith("git:"):
        rev = spec[4:]
        sha = git("rev-parse", "--short", rev + "^{commit}")
        if not sha:
            raise HarnessError("unknown git revision %r" % rev)
        path = tempfile.mkdtemp(prefix="src-", dir=top)
        arch = subprocess.run(["git", "-C", REPO_ROOT, "archive", "--format=tar", sha,
                               "postfix_smtp"], capture_output=True, timeout=120, check=True)
        subprocess.run(["tar", "-x", "-C", path], input=arch.stdout, check=True, timeout=120)
        desc = "git %s (%s)" % (rev, sha)
    else:
        path = os.path.abspath(spec)
        if not os.path.isdir(os.path.join(path, "postfix_smtp")):
            raise HarnessError("%s has no postfix_smtp package" % path)
        return path, path
    subprocess.run([python, "-m", "compileall", "-q", path], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, timeout=300, check=True)
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return path, desc


def host_info(python: str) -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    info = {"cpus": os.cpu_count(), "kernel": platform.release(),
            "postfix": out([tool("postconf"), "-d", "-h", "mail_version"]),
            "agent_python": out([python, "-c", "import sys; print(sys.version.split()[0])"]),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "git_head": out(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"]),
            "git_dirty_package": bool(out(["git", "-C", REPO_ROOT, "status", "--porcelain",
                                           "--", "postfix_smtp"]))}
    if psutil is not None:
        info["mem_total_mib"] = round(psutil.virtual_memory().total / 2 ** 20)
        try:
            f = psutil.cpu_freq()
            info["cpu_mhz"] = round(f.current) if f else None
        except (OSError, AttributeError, NotImplementedError):
            pass
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="stock smtp(8) vs postfix_smtp on fresh private Postfix instances "
                    "(root; loopback only)",
        epilog="See benchmarks/README.md for what each figure means.")
    ap.add_argument("--messages", type=int,
                    help="messages per run in release and e2e mode (default 2000)")
    ap.add_argument("--slow-messages", type=int,
                    help="messages per run in slow mode (default 500)")
    ap.add_argument("--size", type=int, default=2000, help="body bytes per message (2000)")
    ap.add_argument("--runs", type=int, help="runs per agent and mode (3)")
    ap.add_argument("--mode", default="release,e2e,slow",
                    help="comma-separated: release (delivery only), e2e, slow "
                         "(default: all three)")
    ap.add_argument("--cold-starts", type=int,
                    help="cold-start probes per agent (default 20; 0: skip)")
    ap.add_argument("--agents", default="stock,postfix_smtp",
                    help="which agents to run (default both; one alone gives no ratios)")
    ap.add_argument("--sessions", type=int, default=8, help="smtp-source sessions (8)")
    ap.add_argument("--slow-sink-args", default="-w 1",
                    help="smtp-sink options of the slow peer (default '-w 1')")
    ap.add_argument("--python", help="interpreter for postfix_smtp (default: %s if it exists, "
                    "else /usr/bin/python3 with this checkout on PYTHONPATH)" % VENV_PYTHON)
    ap.add_argument("--pythonpath",
                    help="where the agent imports postfix_smtp from: a directory (used as "
                         "is), 'repo' (a copy of this checkout's working tree, taken at the "
                         "start) or 'git:REV' (that commit, via git archive); default: the "
                         "interpreter's installed package with the venv, 'repo' with "
                         "/usr/bin/python3")
    ap.add_argument("--base", default="/dev/shm",
                    help="where the instances are built (tmpfs; default /dev/shm)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds a run may take before it is abandoned (300)")
    ap.add_argument("--sample-ms", type=float, default=50,
                    help="CPU/RSS sampling interval in ms (50)")
    ap.add_argument("--pause", type=float, help="seconds between runs (1)")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the instance directories")
    ap.add_argument("--quick", action="store_true",
                    help="tiny workload to check that the benchmark works (a smoke test, "
                         "not a measurement): by default 20 messages, 10 in slow mode, 1 run, "
                         "3 cold starts, no pause")
    a = ap.parse_args(argv)
    defaults = ({"messages": 20, "slow_messages": 10, "runs": 1, "cold_starts": 3, "pause": 0.0}
                if a.quick else
                {"messages": 2000, "slow_messages": 500, "runs": 3, "cold_starts": 20,
                 "pause": 1.0})
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.agents = tuple(x for x in AGENTS if x in [y.strip() for y in a.agents.split(",")])
    if not a.agents:
        ap.error("--agents: stock and/or postfix_smtp")
    a.modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    for m in a.modes:
        if m not in MODES:
            ap.error("unknown mode %r (release, e2e, slow)" % m)
    if a.messages < 1 or a.slow_messages < 1 or a.runs < 1:
        ap.error("--messages, --slow-messages and --runs must be >= 1")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if os.geteuid() != 0:
        note("must run as root (private Postfix instances, acct(2))")
        return 2
    if not postfix_available():
        note("Postfix is not installed: run scripts/setup.sh first")
        return 2
    python, pythonpath = (a.python, None) if a.python else default_python()
    python = os.path.abspath(python)
    if a.pythonpath is not None:
        pythonpath = a.pythonpath or None
    top = tempfile.mkdtemp(prefix="postfix_smtp-bench-", dir=a.base)
    os.chmod(top, 0o755)
    source = "the installed package (%s)" % (installed_location(python) or "not importable!")
    try:
        if pythonpath:
            pythonpath, source = source_snapshot(pythonpath, python, top)
        else:
            stale = installed_differs(python)
            if stale:
                note("warning: %s imports %s, which differs from this checkout; this "
                     "measures the installed copy (re-run scripts/setup.sh, or use "
                     "--pythonpath repo)" % (python, stale))
                source = "the installed package at %s (differs from the checkout)" % stale
    except (OSError, subprocess.SubprocessError, HarnessError) as exc:
        shutil.rmtree(top, ignore_errors=True)
        note("cannot prepare the agent's source: %s" % exc)
        return 2
    agents = Agents(python, pythonpath)
    result = {
        "config": {"messages": a.messages, "slow_messages": a.slow_messages, "size": a.size,
                   "runs": a.runs, "modes": a.modes, "sessions": a.sessions,
                   "slow_sink_args": a.slow_sink_args, "cold_starts": a.cold_starts,
                   "python": python, "pythonpath": pythonpath, "source": source,
                   "base": a.base,
                   "sample_ms": a.sample_ms, "quick": a.quick,
                   "command": " ".join([sys.executable or "python3"] + sys.argv)},
        "host": host_info(python),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "modes": {},
    }
    t_all = time.monotonic()
    interrupted = False
    try:
        if a.cold_starts > 0:
            note("cold start: %d spawns per agent" % a.cold_starts)
            result["cold_start"] = cold_start(a, agents, top)
            for agent in AGENTS:
                c = result["cold_start"][agent]
                if not c["samples"]:
                    continue
                note("  %-12s cold start %s ms (p90 %s), start-up CPU %s ms, max RSS %s MiB%s"
                     % (agent, c["cold_start_ms"], c["cold_start_ms_p90"], c["start_cpu_ms"],
                        c["ready_rss_mib"],
                        ", %d failed" % c["failed"] if c["failed"] else ""))
        for mode in a.modes:
            n = a.slow_messages if mode == "slow" else a.messages
            runs = {STOCK: [], PY: []}
            for i in range(1, a.runs + 1):
                order = a.agents if i % 2 == 1 else a.agents[::-1]
                for agent in order:
                    if runs[STOCK] or runs[PY]:
                        time.sleep(a.pause)
                    try:
                        r = one_run(a, agents, agent, mode, n, i, top)
                    except HarnessError as exc:
                        note("%s %s run %d failed: %s" % (mode, agent, i, exc))
                        r = {"agent": agent, "mode": mode, "run": i, "ok": False,
                             "error": str(exc)}
                    runs[agent].append(r)
                    if r.get("ok"):
                        note("%-7s run %d %-12s %7.1f msg/s  wall %6.2f s  agent CPU "
                             "%.3f ms/msg  procs %d  peak RSS %s MiB  reused %s%%  delivered %d/%d"
                             % (mode, i, agent, r["msgs_per_s"], r["wall_s"],
                                r["agent_cpu_ms_per_msg"], r["agent_procs"],
                                r["peak_rss_mib_max"], r["reused_conn_pct"], r["delivered_to_sink"], n))
                    for line in r.get("log_problem_lines", [])[:3]:
                        note("  log: %s" % line)
            result["modes"][mode] = {
                "messages": n, "runs": runs,
                "summary": {ag: summarize(runs[ag]) for ag in AGENTS}}
    except KeyboardInterrupt:
        interrupted = True
        note("interrupted; printing what was measured")
    finally:
        if not a.keep:
            shutil.rmtree(top, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - t_all, 1)
    print()
    print("postfix_smtp vs stock smtp(8): %d-byte bodies, 1 recipient, one destination, "
          "%d run(s) per agent, alternating; fresh instance per run on %s"
          % (a.size, a.runs, a.base))
    h = result["host"]
    print("host: %s CPUs, kernel %s, Postfix %s; load at start %s"
          % (h["cpus"], h["kernel"], h["postfix"], h["loadavg_at_start"]))
    print("agent: Python %s (%s), postfix_smtp from %s"
          % (h["agent_python"], python, source))
    print()
    print(table(result))
    print()
    print("ratio = postfix_smtp / stock.  %.0f s in all." % result["elapsed_s"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print("JSON: %s" % a.json)
    bad = [r for m in result["modes"].values() for rs in m["runs"].values() for r in rs
           if not r.get("ok") or r.get("delivered_to_sink") != m["messages"]]
    if interrupted:
        return 130
    if bad:
        note("%d run(s) failed or did not deliver every message" % len(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
