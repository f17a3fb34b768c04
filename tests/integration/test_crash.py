"""Nothing is lost when agent processes die at any moment.

2,000 messages go through postfix_smtp while a killer thread sends SIGKILL
to random agent processes.  Afterwards every message the instance accepted
is at the sink or still queued, and no message left the queue without the
sink having accepted it (a recipient is marked done only after a 2xx).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time

from postfix_smtp.testing.instance import PostfixInstance, SmtpSink

MESSAGES = 2000


def agent_pids(config_dir: str) -> list:
    want = ("MAIL_CONFIG=%s" % config_dir).encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read()
            if b"postfix_smtp" not in cmd:
                continue
            with open("/proc/%s/environ" % name, "rb") as f:
                if want in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def sink_queue_ids(sink: SmtpSink) -> set:
    ids = set()
    rx = re.compile(rb"by mx\.test\.invalid \(Postfix\) with E?SMTP id ([0-9A-F]+)")
    for path in sink.messages():
        with open(path, "rb") as f:
            m = rx.search(f.read(4096))
        if m:
            ids.add(m.group(1).decode())
    return ids


def test_sigkill_during_2000_messages_loses_nothing(tmp_base, agent_wrapper):
    sink = SmtpSink(os.path.join(tmp_base, "sink"), max_lifetime=600)
    sink.start()
    inst = PostfixInstance(
        os.path.join(tmp_base, "pf"), relayhost=sink.address, agent=agent_wrapper,
        main_cf={"service_throttle_time": "1s", "minimal_backoff_time": "1s",
                 "maximal_backoff_time": "2s", "queue_run_delay": "1s"},
        max_lifetime=600)
    kills = []
    stop = threading.Event()

    def killer():
        rng = random.Random(1234)
        end = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < end:
            pids = agent_pids(inst.config_dir)
            if pids:
                pid = rng.choice(pids)
                try:
                    os.kill(pid, 9)
                    kills.append(pid)
                except ProcessLookupError:
                    pass
            stop.wait(rng.uniform(0.005, 0.05))     # agents are short-lived: kill often

    try:
        inst.start()
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        inst.inject_many(MESSAGES, size=500, sessions=8)
        # keep killing while the bulk of the mail moves
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(sink_queue_ids(sink)) < MESSAGES * 0.8
                                                 or len(kills) < 5):
            time.sleep(0.2)
        stop.set()
        t.join(5)
        # then let everything settle: retry deferred mail until the queue is empty
        end = time.monotonic() + 180
        while time.monotonic() < end and not inst.wait_queue_empty(timeout=5):
            inst.flush()
        queued = {q for ids in inst.queue_ids().values() for q in ids}
        accepted = set()
        for line in inst.log_lines():
            m = re.search(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=", line)
            if m:
                accepted.add(m.group(1))
        delivered = sink_queue_ids(sink)
        assert len(accepted) == MESSAGES
        assert len(kills) >= 5, "the killer found too few agent processes to kill"
        lost = accepted - delivered - queued
        assert not lost, "%d messages neither at the sink nor queued: %s" % (len(lost), sorted(lost)[:5])
        assert not queued, "mail left in the queue after the retries: %d" % len(queued)
        # every 'status=sent' is backed by a message the sink accepted
        sent = {m.group(1) for line in inst.log_lines()
                for m in [re.search(r"postfix/smtp\[\d+\]: ([0-9A-F]+): to=<.*status=sent", line)] if m}
        assert sent <= delivered
        print("killed %d agent processes; %d messages delivered (%d sink files)"
              % (len(kills), len(delivered), len(sink.messages())))
    finally:
        stop.set()
        inst.stop()
        sink.stop()
