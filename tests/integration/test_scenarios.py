"""A table of differential scenarios: each runs through the stock smtp(8) and
through postfix_smtp on the same kind of private Postfix and peer; the bytes the
peer received, the per-recipient log fields and the queue outcome must agree.
Every scenario also states what a user would check about it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import pytest

from postfix_smtp.testing.peer import PeerScript
from test_delivery import MESSAGE, normalise_line, normalise_wire, run_scenario

NO_8BIT = ["peer.test.invalid", "PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "DSN"]
NO_ESMTP_FEATURES = ["peer.test.invalid"]
EIGHTBIT = ("Subject: 8bit\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\ncaf\u00e9 = tea \n").encode()


@dataclass
class Case:
    name: str
    script: dict = field(default_factory=dict)
    main_cf: dict = field(default_factory=dict)
    recipients: tuple = ("bob@dest.test.invalid",)
    message: bytes = MESSAGE
    sendmail_args: tuple = ()
    via_smtp: bool = False
    mail_params: str = ""
    settled: bool = True          # queue empty afterwards (else: deferred mail stays)
    lines: int = 1
    check: object = None          # extra check on (wire: bytes, lines: list[dict])


def _wire_has(*needles):
    def check(wire, lines):
        for n in needles:
            assert n in wire, (n, wire[:600])
    return check


def _line(status, dsn, reason_re=None):
    def check(wire, lines):
        d = lines[0]
        assert (d["status"], d["dsn"]) == (status, dsn), d
        if reason_re:
            assert re.search(reason_re, d["reason"]), d["reason"]
    return check


def _all(*checks):
    def check(wire, lines):
        for c in checks:
            c(wire, lines)
    return check


CASES = [
    Case("mail_from_550_bounces_all_in_reply_to_mail",
         script=dict(mail_reply=lambda l: "550 5.7.1 sender rejected" if "alice@" in l else "250 Ok"),
         lines=2, check=_line("bounced", "5.7.1", r"in reply to MAIL FROM command\)$")),
    Case("mail_from_451_defers", script=dict(mail_reply="451 4.3.0 try later"), settled=False,
         check=_line("deferred", "4.3.0", r"451 4\.3\.0 try later \(in reply to MAIL FROM")),
    Case("data_451_defers", script=dict(data_reply="451 4.3.0 no data now"), settled=False,
         check=_line("deferred", "4.3.0", r"\(in reply to DATA command\)$")),
    Case("dot_554_bounces", script=dict(dot_reply="554 5.7.1 spam"), lines=2,
         check=_line("bounced", "5.7.1", r"\(in reply to end of DATA command\)$")),
    Case("dot_451_defers", script=dict(dot_reply="451 4.7.1 later"), settled=False,
         check=_line("deferred", "4.7.1", r"end of DATA command")),
    Case("rcpt_452_too_many_recipients_deferred",
         script=dict(rcpt_reply="452 4.5.3 Too many recipients"), settled=False,
         check=_line("deferred", "4.5.3", r"Too many recipients \(in reply to RCPT TO")),
    Case("rcpt_550_without_enhanced_code_gets_5_0_0",
         script=dict(rcpt_reply=lambda l: "550 no such user" if "bob@" in l else "250 Ok"), lines=2,
         check=_line("bounced", "5.0.0", r"said: 550 no such user")),
    Case("multiline_rcpt_reply_joined_with_spaces",
         script=dict(rcpt_reply=lambda l: "550-5.1.1 first line\n550 5.1.1 second line"
                     if "bob@" in l else "250 Ok"), lines=2,
         check=_line("bounced", "5.1.1", r"said: 550-5\.1\.1 first line 550 5\.1\.1 second line")),
    Case("ehlo_502_falls_back_to_helo", script=dict(ehlo_reply="502 5.5.2 no EHLO"),
         check=_wire_has(b"EHLO mx.test.invalid\r\nHELO mx.test.invalid\r\n")),
    Case("ehlo_421_refuses", script=dict(ehlo_reply="421 4.3.2 shutting down"), settled=False,
         check=_line("deferred", "4.3.2", r"refused to talk to me: 421")),
    Case("helo_rejected_after_ehlo_failed_bounces",
         script=dict(ehlo_reply="500 5.5.1 what", helo_reply="550 5.7.1 go away"), lines=2,
         check=_line("bounced", "5.7.1", r"refused to talk to me: 550")),
    Case("greeting_421_defers", script=dict(greeting="421 4.3.2 busy"), settled=False,
         check=_line("deferred", "4.3.2", r"refused to talk to me: 421 4\.3\.2 busy")),
    Case("skip_5xx_greeting_no_bounces", script=dict(greeting="554 5.7.1 not you"),
         main_cf={"smtp_skip_5xx_greeting": "no"}, lines=2,
         check=_line("bounced", "5.7.1", r"refused to talk to me")),
    Case("never_send_ehlo", main_cf={"smtp_never_send_ehlo": "yes"},
         check=_wire_has(b"HELO mx.test.invalid\r\nMAIL FROM:<alice@src.test.invalid>\r\n")),
    Case("always_send_ehlo_no_without_esmtp_greeting",
         script=dict(greeting="220 peer.test.invalid hello"),
         main_cf={"smtp_always_send_ehlo": "no"},
         check=_wire_has(b"HELO mx.test.invalid\r\n")),
    Case("helo_name", main_cf={"smtp_helo_name": "client.$mydomain"},
         check=_wire_has(b"EHLO client.test.invalid\r\n")),
    Case("dsn_parameters_passed_on", sendmail_args=("-N", "success,delay", "-R", "hdrs", "-V", "env+id=1"),
         check=_wire_has(b" RET=HDRS", b" ENVID=env+2Bid+3D1",
                         b"RCPT TO:<bob@dest.test.invalid> ORCPT=rfc822;bob@dest.test.invalid "
                         b"NOTIFY=SUCCESS,DELAY")),
    Case("no_dsn_server_gets_no_dsn_parameters", script=dict(ehlo_lines=NO_8BIT[:3]),
         sendmail_args=("-N", "failure", "-R", "full"),
         check=lambda w, l: (b"NOTIFY" not in w and b"RET=" not in w) or pytest.fail(repr(w[:400]))),
    Case("eight_bit_to_8bitmime_server", message=EIGHTBIT, sendmail_args=("-B", "8BITMIME"),
         check=_wire_has(b" BODY=8BITMIME", "café = tea \r\n".encode())),
    Case("eight_bit_downgraded_without_8bitmime_and_no_size", message=EIGHTBIT,
         sendmail_args=("-B", "8BITMIME"), script=dict(ehlo_lines=NO_8BIT),
         check=_all(_wire_has(b"caf=C3=A9 =3D tea=20\r\n",
                              b"Content-Transfer-Encoding: quoted-printable\r\n"),
                    lambda w, l: b"SIZE=" not in w or pytest.fail("SIZE with downgrade"))),
    Case("disable_mime_output_conversion_sends_8bit_raw", message=EIGHTBIT,
         sendmail_args=("-B", "8BITMIME"), script=dict(ehlo_lines=NO_8BIT),
         main_cf={"disable_mime_output_conversion": "yes"},
         check=_wire_has("café = tea \r\n".encode())),
    Case("seven_bit_body_declared", sendmail_args=("-B", "7BIT"), check=_wire_has(b" BODY=7BIT")),
    Case("line_length_limit_zero_no_folding", main_cf={"smtp_line_length_limit": "0"},
         message=b"Subject: x\n\n" + b"y" * 1500 + b"\n",
         check=_wire_has(b"\r\n" + b"y" * 1500 + b"\r\n")),
    Case("line_length_limit_100", main_cf={"smtp_line_length_limit": "100"},
         message=b"Subject: x\n\n" + b"z" * 250 + b"\n",
         check=_wire_has(b"\r\n" + b"z" * 100 + b"\r\n " + b"z" * 99 + b"\r\n " + b"z" * 51 + b"\r\n")),
    Case("message_without_final_newline", message=b"Subject: x\n\nno newline at end",
         check=_wire_has(b"\r\nno newline at end\r\n.\r\n")),
    Case("null_sender", via_smtp=False, sendmail_args=("-f", ""),
         check=_wire_has(b"MAIL FROM:<>")),
    Case("quoted_local_part_in_envelope", recipients=('"odd user"@dest.test.invalid',),
         check=_wire_has(b'RCPT TO:<"odd user"@dest.test.invalid>')),
    Case("quote_rfc821_envelope_no", recipients=('"odd user"@dest.test.invalid',),
         main_cf={"smtp_quote_rfc821_envelope": "no"},
         check=_wire_has(b"RCPT TO:<odd user@dest.test.invalid>")),
    Case("helo_timeout", script=dict(delay={"greeting": 4}), main_cf={"smtp_helo_timeout": "1s"},
         settled=False,
         check=_line("deferred", "4.4.2",
                     r"^conversation with 127\.0\.0\.1\[127\.0\.0\.1\] timed out while receiving "
                     r"the initial server greeting$")),
    Case("rcpt_timeout", script=dict(delay={"rcpt": 4}), main_cf={"smtp_rcpt_timeout": "1s"},
         settled=False, check=_line("deferred", "4.4.2", r"timed out while sending RCPT TO")),
    Case("data_done_timeout", script=dict(delay={"dot": 4}), main_cf={"smtp_data_done_timeout": "1s"},
         settled=False,
         check=_line("deferred", "4.4.2", r"timed out while sending end of data -- message may "
                                          r"be sent more than once")),
    Case("drop_after_rcpt", script=dict(drop_after="rcpt"), settled=False,
         check=_line("deferred", "4.4.2", r"^lost connection with .* while sending RCPT TO$")),
    Case("drop_after_greeting", script=dict(drop_after="greeting"), settled=False,
         check=_line("deferred", "4.4.2", r"while receiving the initial server greeting$")),
    Case("soft_bounce_turns_550_into_deferral",
         script=dict(rcpt_reply="550 5.1.1 unknown"), main_cf={"soft_bounce": "yes"}, settled=False,
         check=_line("SOFTBOUNCE", "4.1.1", r"said: 550 5\.1\.1 unknown")),
    Case("smtputf8_required_but_not_offered_bounces",
         script=dict(ehlo_lines=NO_8BIT[:3] + ["8BITMIME"]), via_smtp=True, lines=2,
         mail_params="SMTPUTF8",
         recipients=("b\u00f6b@dest.test.invalid",),
         check=_line("bounced", "5.6.7", r"SMTPUTF8 is required, but was not offered by host")),
    Case("smtputf8_passed_on", via_smtp=True, mail_params="SMTPUTF8", recipients=("b\u00f6b@dest.test.invalid",),
         check=_wire_has(b" SMTPUTF8\r\n")),
    Case("discard_ehlo_keywords_by_server_address_map",
         main_cf={"smtp_discard_ehlo_keyword_address_maps":
                  "inline:{ {127.0.0.1 = pipelining dsn} }",
                  "smtp_discard_ehlo_keywords": "size"},
         # the table's answer replaces smtp_discard_ehlo_keywords: SIZE stays
         check=lambda w, l: (b"NOTIFY" not in w and b"ORCPT" not in w and b" SIZE=" in w)
         or pytest.fail(repr(w[:300]))),
    Case("pix_workarounds_by_server_address_map",
         script=dict(greeting="220 ********************"),
         main_cf={"smtp_pix_workaround_maps": "inline:{ {127.0.0.1 = delay_dotcrlf} }"},
         check=_wire_has(b"EHLO mx.test.invalid\r\n")),
    Case("xforward_timeout_is_applied",
         script=dict(ehlo_lines=["peer.test.invalid", "PIPELINING", "XFORWARD NAME ADDR PROTO HELO"],
                     delay={"other": 4}),
         main_cf={"smtp_send_xforward_command": "yes", "smtp_xforward_timeout": "1s"},
         via_smtp=True, settled=False,
         check=_line("deferred", "4.4.2", r"timed out while sending XFORWARD")),
    Case("many_recipients_pipelined_in_4096_byte_batches",
         recipients=tuple("user%03d-with-a-long-local-part@dest.test.invalid" % i for i in range(90)),
         lines=90, check=lambda w, l: len(l) == 90 and all(d["status"] == "sent" for d in l)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scenario_matches_stock(case: Case, tmp_base, agent_wrapper):
    kw = dict(recipients=case.recipients, message=case.message, main_cf=case.main_cf,
              expect_empty=case.settled, wait_lines=case.lines, sendmail_args=case.sendmail_args,
              via_smtp=case.via_smtp)
    if case.via_smtp:
        kw.pop("sendmail_args")
        kw["mail_params"] = case.mail_params
        kw["sender"] = "alice@src.test.invalid"
    if case.sendmail_args[:1] == ("-f",):
        kw["sender"] = case.sendmail_args[1]
        kw["sendmail_args"] = case.sendmail_args[2:]
    ours = run_scenario(os.path.join(tmp_base, "agent"), agent_wrapper, PeerScript(**case.script), **kw)
    stock = run_scenario(os.path.join(tmp_base, "stock"), None, PeerScript(**case.script), **kw)
    wa = normalise_wire(b"".join(s.client_bytes for s in ours.sessions))
    wb = normalise_wire(b"".join(s.client_bytes for s in stock.sessions))
    assert wa == wb
    la = [normalise_line(ln) for ln in ours.lines]
    lb = [normalise_line(ln) for ln in stock.lines]
    assert sorted(la, key=repr) == sorted(lb, key=repr)
    assert {q: len(v) for q, v in ours.queue.items()} == {q: len(v) for q, v in stock.queue.items()}
    if case.check:
        first = [d for d in la if "src.test.invalid" not in d["to"]] or la
        case.check(wa, first)
