"""8BITMIME -> 7BIT downgrade against a real Postfix 3.7 (smtp-client.md §7.4).

The golden cases of tests/data/mime (see regenerate.py there) are delivered
to an SMTP peer that does not offer 8BITMIME:

- through the installed *stock* smtp(8): what it sends must still be what
  postfix_smtp.smtp.mime + TextEncoder make of the same queue-file records
  (guards the committed golden files against a changed Postfix);
- through *this agent*: the same bytes, MAIL FROM without SIZE=, and the same
  status (sent, or 5.6.0 "MIME nesting exceeds safety limit" with the
  connection dropped before the final dot).  Skipped until delivery.py uses
  MimeDowngrade.
"""

from __future__ import annotations

import importlib.util
import json
import os


HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "data", "mime")


def _regen():
    spec = importlib.util.spec_from_file_location("mime_regenerate",
                                                  os.path.join(DATA, "regenerate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _golden():
    with open(os.path.join(DATA, "index.json")) as f:
        return json.load(f)["cases"]


def _deliver_all(regen, tmp_base, agent=None):
    out = os.path.join(tmp_base, "cases")
    os.makedirs(out)
    index = {}
    for profile in regen.PROFILES:
        names = [n for n, c in regen.CASES.items() if c[0] == profile]
        regen.run_profile(profile, names, out, index, agent=agent,
                          base=os.path.join(tmp_base, "inst-" + profile), verbose=False)
    return out, index


def _check(regen, outdir, index):
    golden = _golden()
    assert set(index) == set(golden)
    problems = []
    for name, case in sorted(index.items()):
        g = golden[name]
        for key in ("encoding", "status", "dsn", "reason", "delivered"):
            if case[key] != g[key]:
                problems.append("%s: %s %r != golden %r" % (name, key, case[key], g[key]))
        if ("SIZE=" in case["mail_from"]) != ("SIZE=" in g["mail_from"]):
            problems.append("%s: MAIL FROM %r vs golden %r" % (name, case["mail_from"],
                                                                g["mail_from"]))
        records = regen.read_records(os.path.join(outdir, name + ".in"))
        want, error = regen.model_output(records, case)
        if case["delivered"]:
            with open(os.path.join(outdir, name + ".out"), "rb") as f:
                got = f.read()
            if got != want:
                problems.append("%s: content differs from the model" % name)
        else:
            if error is None or (case["dsn"], case["reason"]) != error:
                problems.append("%s: expected MIME error %r, got %r"
                                % (name, (case["dsn"], case["reason"]), error))
    assert not problems, "\n".join(problems)


def test_stock_smtp_still_matches_the_model(tmp_base):
    regen = _regen()
    outdir, index = _deliver_all(regen, tmp_base)
    _check(regen, outdir, index)


def test_agent_downgrade_matches_stock(tmp_base, agent_wrapper):
    regen = _regen()
    outdir, index = _deliver_all(regen, tmp_base, agent=agent_wrapper)
    _check(regen, outdir, index)
