"""The demo: a private Postfix on loopback delivers N messages through
postfix_smtp to Postfix's smtp-sink, then shows the log lines and the counts.

Run as root: ``postfix-smtp demo --messages 500``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

from ..install import Wrapper
from .instance import PostfixInstance, SmtpSink

_AGENT_LINE = re.compile(r"postfix/(?:relay/)?smtp\[(\d+)\]: \w+: to=<")


def agent_wrapper() -> Wrapper:
    """A wrapper for this interpreter; adds the source tree to PYTHONPATH when
    the package is not installed where ``python -I`` would find it."""
    python = sys.executable or "/usr/bin/python3"
    probe = subprocess.run([python, "-I", "-c", "import postfix_smtp, os; "
                            "print(os.path.dirname(postfix_smtp.__file__))"],
                           capture_output=True, text=True, cwd="/")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if probe.returncode == 0 and os.path.samefile(probe.stdout.strip(), here):
        return Wrapper(python=python)
    return Wrapper(python=python, pythonpath=os.path.dirname(here))


def _run_one(base: str, messages: int, agent: Wrapper | None, keep: bool) -> dict:
    if os.path.isdir(base):
        shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base, mode=0o755)
    os.chmod(base, 0o755)
    sink = SmtpSink(os.path.join(base, "sink"))
    sink.start()
    inst = PostfixInstance(os.path.join(base, "postfix"), relayhost=sink.address,
                           agent=agent, agent_name="pysmtp" if agent else "smtp")
    result = {}
    try:
        inst.start()
        t0 = time.monotonic()
        inst.inject_many(messages)
        empty = inst.wait_queue_empty(timeout=max(120.0, messages / 5.0))
        elapsed = time.monotonic() - t0
        lines = inst.log_lines()
        sent = [ln for ln in lines if _AGENT_LINE.search(ln) and "status=sent" in ln]
        pids = {m.group(1) for ln in lines for m in [_AGENT_LINE.search(ln)] if m}
        agent_lines = [ln for ln in lines if _AGENT_LINE.search(ln)]
        result = dict(
            agent="postfix_smtp" if agent else "stock smtp(8)",
            messages=messages, seconds=elapsed, queue_empty=empty,
            queue=inst.queue_ids(), sink=len(sink.messages()), sent=len(sent),
            deferred=sum("status=deferred" in ln for ln in agent_lines),
            bounced=sum("status=bounced" in ln for ln in agent_lines),
            processes=len(pids), sample=agent_lines[:3] + agent_lines[-2:],
            log=inst.log_path,
        )
    finally:
        if keep:
            result["kept"] = base
        else:
            inst.stop()
            sink.stop()
    return result


def _show(r: dict) -> None:
    print("== %s: %d messages" % (r["agent"], r["messages"]))
    for ln in r["sample"]:
        print("   " + ln)
    left = sum(len(v) for v in r["queue"].values())
    print("   queue empty: %s (%d left)   at the sink: %d   status=sent: %d   deferred: %d   "
          "bounced: %d" % ("yes" if r["queue_empty"] else "NO", left, r["sink"], r["sent"],
                           r["deferred"], r["bounced"]))
    print("   %.1f s from injection to empty queue (%.0f msg/s), %d agent processes"
          % (r["seconds"], r["messages"] / r["seconds"] if r["seconds"] else 0, r["processes"]))
    if "kept" in r:
        print("   instance left running under %s (log: %s)" % (r["kept"], r["log"]))


def run_demo(directory: str, messages: int, keep: bool = False,
             compare_stock: bool = False) -> int:
    if os.geteuid() != 0:
        print("postfix-smtp demo: run as root (it starts a private Postfix)", file=sys.stderr)
        return 1
    r = _run_one(os.path.join(directory, "agent"), messages, agent_wrapper(), keep)
    _show(r)
    ok = r["queue_empty"] and r["sink"] == messages and r["sent"] == messages
    if compare_stock:
        s = _run_one(os.path.join(directory, "stock"), messages, None, keep)
        _show(s)
    print("DEMO %s" % ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1
