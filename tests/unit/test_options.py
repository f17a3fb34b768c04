"""postfix_smtp.master.options: the argv master(8) builds (postfix-ipc.md §1.2).

``parse()`` gets argv without argv[0]."""

from __future__ import annotations

import pytest

from postfix_smtp.master.options import Options, UsageError, parse


def test_minimal_smtp_argv():
    o = parse(["-t", "unix", "-u"])
    assert o == Options(transport="unix", unprivileged=True)
    assert o.service_name is None
    assert o.overrides == [] and o.flags == "" and o.chroot is False


def test_captured_argv_with_service_name_override_and_flags():
    # ['…/capsmtp','-n','smtp','-t','unix','-u','-o','smtp_helo_name=foo','flags=DO']
    o = parse(["-n", "smtp", "-t", "unix", "-u", "-o", "smtp_helo_name=foo", "flags=DO"])
    assert o.service_name == "smtp"
    assert o.transport == "unix"
    assert o.unprivileged is True
    assert o.overrides == [("smtp_helo_name", "foo")]
    assert o.flags == "DO"


def test_combined_flags():
    o = parse(["-t", "unix", "-uv"])
    assert o.unprivileged and o.verbose == 1
    o = parse(["-vvu", "-t", "unix", "-v"])
    assert o.verbose == 3 and o.unprivileged


def test_all_boolean_flags():
    o = parse(["-lzdcDSVu", "-t", "unix"])
    assert (o.solitary, o.zero_limit, o.debug_tty, o.chroot, o.debugger, o.stdio,
            o.stderr_log, o.unprivileged) == (True,) * 8


def test_attached_option_argument():
    o = parse(["-tunix", "-nrelay", "-osyslog_name=postfix/relay"])
    assert (o.transport, o.service_name) == ("unix", "relay")
    assert o.overrides == [("syslog_name", "postfix/relay")]


def test_flag_then_argument_option_in_one_word():
    o = parse(["-ut", "unix", "-vo", "a=b"])
    assert o.unprivileged and o.transport == "unix" and o.verbose == 1
    assert o.overrides == [("a", "b")]


def test_override_with_spaces_from_braces():
    # master.cf: -o { name = value with spaces }  ->  one argv word
    o = parse(["-t", "unix", "-o", "name = value with spaces"])
    assert o.overrides == [("name", "value with spaces")]


def test_override_splits_at_first_equals_and_keeps_order():
    o = parse(["-t", "unix", "-o", "smtp_tls_policy_maps=hash:/etc/p=x", "-o", "a=",
               "-o", "a=2", "-o", "syslog_name=postfix/$service_name"])
    assert o.overrides == [("smtp_tls_policy_maps", "hash:/etc/p=x"), ("a", ""), ("a", "2"),
                           ("syslog_name", "postfix/$service_name")]   # no $ expansion


def test_override_without_equals():
    with pytest.raises(UsageError):
        parse(["-t", "unix", "-o", "novalue"])


def test_other_argument_options():
    o = parse(["-t", "unix", "-i", "300", "-m", "50", "-s", "2", "-r", "10"])
    assert (o.max_idle, o.max_use, o.listen_fds) == ("300", "50", 2)


@pytest.mark.parametrize("count", ["0", "x", "-1", ""])
def test_bad_socket_count(count):
    with pytest.raises(UsageError):
        parse(["-t", "unix", "-s", count])


@pytest.mark.parametrize("argv, letter", [
    (["-t", "unix", "-x"], "x"),
    (["-q"], "q"),
    (["-uX", "-t", "unix"], "X"),
    (["-t", "unix", "-e"], "e"),
])
def test_invalid_option(argv, letter):
    with pytest.raises(UsageError, match="invalid option: %s" % letter):
        parse(argv)


@pytest.mark.parametrize("argv", [["-t"], ["-t", "unix", "-o"], ["-n"]])
def test_missing_option_argument(argv):
    with pytest.raises(UsageError, match="requires an argument"):
        parse(argv)


def test_unknown_attribute_word():
    with pytest.raises(UsageError, match="unknown attribute name: foo=bar"):
        parse(["-t", "unix", "foo=bar"])
    with pytest.raises(UsageError, match="unknown attribute name: capsmtp"):
        parse(["capsmtp", "-t", "unix"])       # argv[0] must not be passed


def test_options_stop_at_first_non_option():
    # `-o` after flags=DO is not an option but an (unknown) attribute word
    with pytest.raises(UsageError, match="unknown attribute name: -o"):
        parse(["-t", "unix", "flags=DO", "-o", "a=b"])


def test_double_dash_ends_options():
    o = parse(["-t", "unix", "--", "flags=R"])
    assert o.flags == "R"
    with pytest.raises(UsageError, match="unknown attribute name: -u"):
        parse(["-t", "unix", "--", "-u"])


@pytest.mark.parametrize("word, flags", [
    ("flags=", ""), ("flags=D", "D"), ("flags=DORX", "DORX"), ("flags=XR", "XR"),
    ("FLAGS=O", "O"),                       # the attribute name is case-insensitive
])
def test_flags_words(word, flags):
    assert parse(["-t", "unix", word]).flags == flags


def test_last_flags_word_wins():
    assert parse(["-t", "unix", "flags=D", "flags=R"]).flags == "R"


@pytest.mark.parametrize("word", ["flags=A", "flags=DOZ", "flags=D O"])
def test_bad_flag_letter(word):
    with pytest.raises(UsageError, match="unknown flag"):
        parse(["-t", "unix", word])


def test_empty_argv():
    assert parse([]) == Options()
