#!/usr/bin/env python3
"""Re-create the MIME downgrade golden files from the stock Postfix smtp(8).

Run as root on a machine with Postfix 3.7 installed (Debian 12)::

    sudo python3 tests/data/mime/regenerate.py [CASE ...]

For every profile (one private Postfix instance each, stock smtp(8), relayhost
= a scriptable SMTP peer whose EHLO reply lacks 8BITMIME and SMTPUTF8):

1. every message of the profile is submitted (SMTP to smtpd, or sendmail)
   and put on hold by ``header_checks = static:HOLD`` (cleanup);
2. its queue file is read: the content records from data_offset up to the
   X record -> ``cases/NAME.in`` (Postfix record encoding: type byte,
   base-128 length, payload; only N and L records), the encoding attribute
   and the request size -> ``index.json``;
3. the message is released (``postsuper -H``, ``postqueue -i``) and the
   peer records what the stock smtp(8) sent between DATA and the final dot
   -> ``cases/NAME.out`` (dot-stuffed, CR LF, exactly as received), the MAIL
   FROM command and the delivery status -> ``index.json``.  When stock drops
   the connection mid-DATA (MIME nesting error), whatever reached the peer
   after DATA goes to ``cases/NAME.partial``.

``tests/unit/test_mime.py`` feeds ``NAME.in`` through MimeDowngrade and
TextEncoder with the profile's parameters and compares with ``NAME.out``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, REPO)

from postfix_smtp.queue.records import (REC_ATTR, REC_CONT, REC_EOF, REC_END,  # noqa: E402
                                        REC_NORM, REC_SIZE, REC_XTRA, RecordReader,
                                        encode_record)
from postfix_smtp.testing.instance import PostfixInstance, tool  # noqa: E402
from postfix_smtp.testing.peer import PeerScript, SmtpPeer  # noqa: E402

SENDER = "sender@src.test.invalid"
EHLO_NO_8BITMIME = ["peer.test.invalid", "PIPELINING", "SIZE 10240000",
                    "ENHANCEDSTATUSCODES", "DSN"]

# smtp(8) parameters per profile (master.cf -o for the smtp service) and
# main.cf additions (cleanup).  The keys the unit test needs are listed in
# index.json as "params".
PROFILES = {
    "default": {
        "smtp": {},
        "main": {},
    },
    "limits": {
        "smtp": {"mime_nesting_limit": "2", "header_size_limit": "300",
                 "mime_boundary_length_limit": "10", "smtp_line_length_limit": "70"},
        # cleanup leaves MIME part headers alone (no "Name :" normalisation there)
        "main": {"disable_mime_input_processing": "yes"},
    },
    "noconv": {
        "smtp": {"disable_mime_output_conversion": "yes"},
        "main": {},
    },
}

DEFAULTS = {"mime_nesting_limit": 100, "header_size_limit": 102400,
            "mime_boundary_length_limit": 2048, "smtp_line_length_limit": 998,
            "disable_mime_output_conversion": False}


VERSION: dict = {}


def params_of(profile: str) -> dict:
    p = dict(DEFAULTS)
    for k, v in PROFILES[profile]["smtp"].items():
        p[k] = (v == "yes") if isinstance(DEFAULTS[k], bool) else int(v)
    return p


def hdrs(*lines: str) -> bytes:
    return "".join(l + "\n" for l in lines).encode("utf-8")


def b(s: str) -> bytes:
    return s.encode("utf-8")


LONG_8BIT = "Grüße aus Köln, naïve café = résumé; " * 60            # > 2048 bytes: L + N records
QP_EDGES = "".join(
    [("x" * n) + "é\n" for n in (70, 71, 72, 73, 74)]
    + [("y" * n) + " \n" for n in (71, 72, 73, 74, 75)]
    + [("z" * n) + "\t\n" for n in (72, 73)]
    + [("w" * n) + "=\n" for n in (71, 72, 73)]
    + ["=" * 40 + "\n", " leading space and trailing two spaces  \n",
       "tab\tinside and control \x01 and del \x7f\n", "x" * 76 + "\n", "x" * 77 + "\n",
       "." + "é" * 30 + "\n", ".\n", "..\n", "-- \n", "From the start\n"])

MIXED = (hdrs("From: Sender <sender@src.test.invalid>", "To: {rcpt}", "Subject: multipart mixed",
              "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="=-b1-="')
         + b("\nPréambule with 8-bit bytes (not converted)\n"
             "--=-b1-=\n"
             "Content-Type: text/plain; charset=utf-8\n"
             "Content-Transfer-Encoding: 8bit\n"
             "\n"
             "Première partie: 8bit → quoted-printable.\n"
             "Trailing space \n"
             "\n"
             "--=-b1-=\n"
             "Content-Type: text/plain; charset=utf-8\n"
             "Content-Transfer-Encoding: 7bit\n"
             "\n"
             "Deuxième partie claims 7bit: sent as is.\n"
             "--=-b1-=\n"
             "Content-Type: application/octet-stream\n"
             "Content-Transfer-Encoding: binary\n"
             "Content-Disposition: attachment; filename=x.bin\n"
             "\n"
             "bin\xe9ary \xff\xfe = data\n"
             "--=-b1-=\n"
             "Content-Type: text/plain\n"
             "Content-Transfer-Encoding: quoted-printable\n"
             "\n"
             "already =C3=A9ncoded =3D\n"
             "--=-b1-=\n"
             "Content-Type: text/html; charset=utf-8\n"
             "\n"
             "<p>no CTE, 8-bit: ünchanged</p>\n"
             "--=-b1-=--\n"
             "épilogue 8-bit\n"))

NESTED = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: nested",
               "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=outer",
               "Content-Transfer-Encoding: 8bit")
          + b("\n--outer\n"
              "Content-Type: multipart/alternative;\n"
              "\tboundary=\"inner\"\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "inner préamble\n"
              "--inner\n"
              "Content-Type: text/plain; charset=utf-8\n"
              "Content-Transfer-Encoding: 8BIT\n"
              "\n"
              "texte brut é\n"
              "--inner\n"
              "Content-Type: text/html; charset=utf-8\n"
              "Content-Transfer-Encoding: 8bit (with a comment)\n"
              "\n"
              "<b>é</b>\n"
              "--inner--\n"
              "inner épilogue\n"
              "--outer\n"
              "Content-Type: text/plain\n"
              "Content-Transfer-Encoding: \"8bit\"\n"
              "\n"
              "quoted CTE value is not recognised: é stays\n"
              "--outer--\n"))

RFC822 = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: forwarded",
               "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=fw")
          + b("\n--fw\n"
              "Content-Type: text/plain; charset=utf-8\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "See the attached message, Jürgen.\n"
              "--fw\n"
              "Content-Type: message/rfc822\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "From: Jürgen <j@example.org>\n"
              "Subject: Grüße\n"
              "MIME-Version: 1.0\n"
              "Content-Type: text/plain; charset=utf-8\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "Inner body, 8-bit: ÄÖÜ = äöü\n"
              "--fw\n"
              "Content-Type: message/global\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "From: globål <g@example.org>\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "message/global is a leaf for the downgrade\n"
              "--fw--\n"))

TOP_RFC822 = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: top rfc822",
                   "MIME-Version: 1.0", "Content-Type: message/rfc822",
                   "Content-Transfer-Encoding: binary")
              + b("\nFrom: inner@example.org\n"
                  "Subject: inner\n"
                  "Content-Type: multipart/mixed; boundary=\"in ner\"\n"
                  "\n"
                  "--in ner\n"
                  "Content-Transfer-Encoding: 8bit\n"
                  "\n"
                  "default type text/plain, 8bit: ñ\n"
                  "--in ner--\n"))

DIGEST = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: digest",
               "MIME-Version: 1.0", "Content-Type: multipart/digest; boundary=dg")
          + b("\n--dg\n"
              "\n"
              "From: a@example.org\n"
              "Subject: one\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "digest part one: é\n"
              "--dg\n"
              "Content-Type: text/plain\n"
              "Content-Transfer-Encoding: 8bit\n"
              "\n"
              "explicit text part: é\n"
              "--dg--\n"))

HEADERS = (hdrs("From: Jörg <sender@src.test.invalid>", "To: {rcpt}",
                "Subject: folded 8-bit header ü",
                "\tcontinued with tab é",
                "  and spaces",
                "X-Long: " + "ä" * 700,
                "X-Very-Long: " + "o" * 2500,
                "Content-Transfer-Encoding:",
                " 8bit",
                "MIME-Version: 1.0",
                "Content-Type: text/plain;",
                "  charset=utf-8",
                "X-After-CTE: still here")
           + b("\nBody ö\n" + LONG_8BIT + "\n"))

BOUNDARY_EDGES = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: boundaries",
                       "MIME-Version: 1.0",
                       "Content-Type: multipart/mixed; boundary=\"b\"; boundary=second")
                  + b("\n--b   trailing cruft is ignored\n"
                      "Content-Type: text/plain\n"
                      "Content-Transfer-Encoding: 8bit\n"
                      "\n"
                      "part one é\n"
                      "--bX prefix match counts as a boundary\n"
                      "Content-Transfer-Encoding: 8bit\n"
                      "\n"
                      "part two é\n"
                      "-- b is not a boundary é\n"
                      "--second\n"
                      "Content-Transfer-Encoding: binary\n"
                      "\n"
                      "part three é\n"
                      "--b--\n"
                      "after close é\n"))

QP_MSG = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: qp edges",
               "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit")
          + b("\n" + QP_EDGES + LONG_8BIT + "\n" + "é" * 1024 + "\n" + " " * 10 + "\n"))

NO_CTE = (hdrs("From: Jörg <sender@src.test.invalid>", "To: {rcpt}", "Subject: no MIME ä")
          + b("\nNon-MIME mail with 8-bit bytes: ä ö ü = pass unchanged\n" + "ß" * 600 + "\n"))


def deep(levels: int) -> bytes:
    out = hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: %d levels" % levels,
               "MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=L0")
    body = "\n"
    for i in range(1, levels):
        body += "--L%d\nContent-Type: multipart/mixed; boundary=L%d\n\n" % (i - 1, i)
    body += ("--L%d\nContent-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\n"
             "deepest é\n" % (levels - 1))
    for i in range(levels - 1, -1, -1):
        body += "--L%d--\n" % i
    return out + b(body)


LIMITS_PARTS = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: limits",
                     "X-Folded: " + "a" * 40, *[" continuation %02d %s" % (i, "b" * 30)
                                               for i in range(12)],
                     "X-One-Line: " + "c" * 400,
                     "MIME-Version: 1.0",
                     "Content-Type: multipart/mixed; boundary=0123456789abcdefXYZ")
                + b("\n--0123456789abcdefXYZ\n"
                    "Content-Type : text/plain;\n"
                    "\tcharset=utf-8\n"
                    "Content-Transfer-Encoding\t: 8bit\n"
                    "X-Part-Long: " + "d" * 350 + "\n"
                    "\n"
                    "part with obsolete 'Name :' headers: é and a long line to fold "
                    + "é" * 60 + "\n"
                    "--0123456789other boundary, same first 10 bytes\n"
                    "Content-Type: text/plain\n"
                    "Content-Transfer-Encoding: 8bit\n"
                    "garbage line in a part header block\n"
                    "é after garbage\n"
                    "--0123456789abcdefXYZ--\n"))

SEVEN = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: BODY=7BIT",
              "MIME-Version: 1.0", "Content-Type: text/plain")
         + b("\nclaims 7bit but has é (no CTE header)\n"))

NO_FINAL_NL = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: no final newline",
                    "MIME-Version: 1.0", "Content-Transfer-Encoding: 8bit")
               + b("\nlast line é without newline "))

HEADERS_ONLY = hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: headers only",
                    "MIME-Version: 1.0", "Content-Transfer-Encoding: 8bit")

NUL_BYTES = (hdrs("From: sender@src.test.invalid", "To: {rcpt}", "Subject: nul",
                  "X-Nul: before\0after", "MIME-Version: 1.0",
                  "Content-Transfer-Encoding: 8bit")
             + b"\nbody \0 nul \xe9\n")

# name: (profile, message, how, params)   how: "smtp" (mail params) or "sendmail" (args)
CASES = {
    "qp_edges": ("default", QP_MSG, "smtp", "BODY=8BITMIME"),
    "multipart_mixed": ("default", MIXED, "smtp", "BODY=8BITMIME"),
    "nested_multipart": ("default", NESTED, "smtp", "BODY=8BITMIME"),
    "rfc822_and_global": ("default", RFC822, "smtp", "BODY=8BITMIME"),
    "top_rfc822_binary": ("default", TOP_RFC822, "smtp", "BODY=8BITMIME"),
    "digest": ("default", DIGEST, "smtp", "BODY=8BITMIME"),
    "headers_folded_8bit": ("default", HEADERS, "smtp", "BODY=8BITMIME"),
    "boundary_edges": ("default", BOUNDARY_EDGES, "smtp", "BODY=8BITMIME"),
    "no_cte_8bit": ("default", NO_CTE, "smtp", "BODY=8BITMIME"),
    "no_body_param": ("default", NO_CTE, "smtp", ""),
    "body_7bit": ("default", SEVEN, "smtp", "BODY=7BIT"),
    "no_final_newline": ("default", NO_FINAL_NL, "sendmail", ""),
    "headers_only": ("default", HEADERS_ONLY, "sendmail", ""),
    "nul_bytes": ("default", NUL_BYTES, "sendmail", ""),
    "nesting_at_limit": ("limits", deep(4), "smtp", "BODY=8BITMIME"),
    "nesting_exceeded": ("limits", deep(5), "smtp", "BODY=8BITMIME"),
    "limits_parts": ("limits", LIMITS_PARTS, "smtp", "BODY=8BITMIME"),
    "limits_qp_fold": ("limits", QP_MSG, "smtp", "BODY=8BITMIME"),
    "noconv_8bit": ("noconv", MIXED, "smtp", "BODY=8BITMIME"),
}


# --------------------------------------------------------------------------


def read_records(path: str) -> list:
    """The (text, complete) records of a NAME.in file."""
    with open(path, "rb") as f:
        r = RecordReader(f, path, 0)
        out = []
        while True:
            rtype, payload = r.read()
            if rtype == REC_EOF:
                return out
            out.append((payload, rtype == REC_NORM))


def model_output(records: list, case: dict):
    """What postfix_smtp (MimeDowngrade + TextEncoder) sends for these records
    under the case's parameters: (bytes up to the final dot, MIME error or None)."""
    from postfix_smtp.smtp.content import TextEncoder
    from postfix_smtp.smtp.mime import MimeDowngrade, downgrade_wanted
    p = case["params"]
    enc = TextEncoder(p["smtp_line_length_limit"])
    if not downgrade_wanted(server_8bitmime=False,
                            disable_mime_output_conversion=p["disable_mime_output_conversion"],
                            encoding=case["encoding"]):
        for rec in records:
            enc.record(*rec)
        enc.finish()
        return enc.take(), None
    m = MimeDowngrade(downgrade=True, nesting_limit=p["mime_nesting_limit"],
                      boundary_limit=p["mime_boundary_length_limit"],
                      header_size_limit=p["header_size_limit"])
    for rec in records:
        for out in m.record(*rec):
            enc.record(*out)
        if m.errors:
            return enc.take(), m.error
    for out in m.finish():
        enc.record(*out)
    enc.finish()
    return enc.take(), None


def read_queue_file(path: str) -> dict:
    with open(path, "rb") as f:
        r = RecordReader(f, path, 0)
        rtype, payload = r.read()
        assert rtype == REC_SIZE, rtype
        fields = payload.split()
        data_offset, size = int(fields[1]), int(fields[4])
        r = RecordReader(f, path, data_offset)
        records = []
        while True:
            rtype, payload = r.read()
            if rtype in (REC_NORM, REC_CONT):
                records.append((rtype, payload))
            elif rtype == REC_XTRA:
                break
            else:
                raise RuntimeError("%s: unexpected record %r in content" % (path, rtype))
        encoding = ""
        while True:
            rtype, payload = r.read()
            if rtype in (REC_END, REC_EOF):
                break
            if rtype == REC_ATTR and payload.startswith(b"encoding="):
                encoding = payload[len(b"encoding="):].decode()
    return {"records": records, "size": size, "encoding": encoding}


def run(cmd, inst=None):
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


def run_profile(profile: str, names: list, outdir: str, index: dict, agent=None,
                base: str = None, verbose: bool = True) -> None:
    """Deliver ``names`` (cases of ``profile``) through a fresh instance running
    the stock smtp(8) (``agent`` None) or ``agent`` (an install.Wrapper); writes
    NAME.in / NAME.out / NAME.partial into ``outdir`` and index entries into
    ``index``.  ``base``: the instance directory (default: a temporary one)."""
    conf = PROFILES[profile]
    own_base = base is None
    if own_base:
        base = tempfile.mkdtemp(prefix="pfsmtp-mime-", dir="/tmp")
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    peer = SmtpPeer(PeerScript(ehlo_lines=list(EHLO_NO_8BITMIME)), max_lifetime=600)
    peer.start()
    smtp_args = []
    for k, v in conf["smtp"].items():
        smtp_args += ["-o", "%s=%s" % (k, v)]
    main = {"header_checks": "static:HOLD", "minimal_backoff_time": "300s",
            "maximal_backoff_time": "300s", "bounce_queue_lifetime": "0"}
    main.update(conf["main"])
    inst = PostfixInstance(base, relayhost=peer.address, agent=agent, main_cf=main,
                           smtp_args=smtp_args, max_lifetime=600, quick_start=True)
    try:
        inst.start()
        VERSION["mail_version"] = inst.postconf_get("mail_version")
        for name in names:
            _prof, message, how, extra = CASES[name]
            rcpt = "%s@dest.test.invalid" % name.replace("_", "-")
            msg = message.replace(b"{rcpt}", rcpt.encode())
            before = set(inst.queue_ids(["hold"])["hold"])
            if how == "smtp":
                inst.smtp_submit(msg, SENDER, [rcpt], mail_params=extra)
            else:
                inst.sendmail(msg, SENDER, [rcpt], extra.split())
            end = time.monotonic() + 30
            while True:
                new = set(inst.queue_ids(["hold"])["hold"]) - before
                if new:
                    break
                if time.monotonic() > end:
                    raise RuntimeError("%s: message not on hold\n%s"
                                       % (name, "\n".join(inst.log_lines()[-20:])))
                time.sleep(0.05)
            (qid,) = new
            time.sleep(0.2)         # cleanup has finished the file (it is renamed into hold when done)
            q = read_queue_file(inst.queue_file(qid))
            nsess = len(peer.sessions)
            run([tool("postsuper"), "-c", inst.config_dir, "-H", qid], inst)
            run([tool("postqueue"), "-c", inst.config_dir, "-i", qid], inst)
            lines = inst.expect_log(r"postfix/smtp\[\d+\]: %s: to=<%s>" % (qid, re.escape(rcpt)),
                                    timeout=60)
            m = re.search(r"dsn=(\S+), status=(\w+) \((.*)\)$", lines[0])
            dsn, status, reason = m.group(1), m.group(2), m.group(3)
            peer.wait_sessions(nsess + 1, timeout=30)
            session = [s for s in peer.sessions[nsess:]
                       if any(c.startswith("RCPT TO:<%s>" % rcpt) for c in s.commands)][0]
            session.closed.wait(30)
            mail_from = [c for c in session.commands if c.startswith("MAIL FROM:")][0]
            with open(os.path.join(outdir, name + ".in"), "wb") as f:
                for rtype, payload in q["records"]:
                    f.write(encode_record(rtype, payload))
            for ext in (".out", ".partial"):
                p = os.path.join(outdir, name + ext)
                if os.path.exists(p):
                    os.unlink(p)
            if session.messages:
                with open(os.path.join(outdir, name + ".out"), "wb") as f:
                    f.write(session.messages[0])
            else:
                raw = session.client_bytes
                i = raw.find(b"DATA\r\n")
                with open(os.path.join(outdir, name + ".partial"), "wb") as f:
                    f.write(raw[i + 6:] if i >= 0 else b"")
            index[name] = {
                "profile": profile,
                "params": params_of(profile),
                "submitted": how + ((" " + extra) if extra else ""),
                "encoding": q["encoding"],
                "size": q["size"],
                "mail_from": mail_from.replace(rcpt, "RCPT"),
                "status": status,
                "dsn": dsn,
                "reason": re.sub(r"queued as \S+", "queued as PEER", reason),
                "delivered": bool(session.messages),
            }
            if verbose:
                print("%-22s %-8s enc=%-5s %s %s %s" % (name, profile, q["encoding"] or "-",
                                                          status, dsn, mail_from))
    finally:
        inst.stop()
        peer.stop()
        if own_base and not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
            shutil.rmtree(base, ignore_errors=True)


def main(argv) -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    outdir = os.path.join(HERE, "cases")
    os.makedirs(outdir, exist_ok=True)
    index_path = os.path.join(HERE, "index.json")
    index = {}
    if os.path.exists(index_path) and argv:
        with open(index_path) as f:
            index = json.load(f)["cases"]
    wanted = argv or list(CASES)
    for profile in PROFILES:
        names = [n for n in wanted if CASES[n][0] == profile]
        if names:
            run_profile(profile, names, outdir, index)
    cases = {k: index[k] for k in CASES if k in index}
    with open(index_path, "w") as f:
        json.dump({"postfix": VERSION.get("mail_version", ""), "cases": cases}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
