"""The command line master(8) gives a Postfix daemon (single_server getopt).

``command [-l] [-z] [-n NAME] -t TYPE [-d] [-v] [-u] [-c] [-o name=value]...
[-s N] [-i max_idle] [-m max_use] [-D] [-S] [-V] [flags=...]``.  Parsing
stops at the first non-option word, like glibc getopt with a leading ``+``.
"""

from __future__ import annotations

from ..valueclass import dataclass, field

_WITH_ARG = set("ionmrst")
_FLAGS = set("cdDlSuvVz")


class UsageError(Exception):
    pass


@dataclass
class Options:
    service_name: str | None = None
    transport: str | None = None
    overrides: list = field(default_factory=list)     # (name, value) in order
    unprivileged: bool = False                         # -u: drop to mail_owner
    chroot: bool = False                               # -c
    verbose: int = 0
    debug_tty: bool = False                            # -d
    debugger: bool = False                             # -D
    solitary: bool = False                             # -l
    zero_limit: bool = False                           # -z
    stdio: bool = False                                # -S: one request on stdin/stdout
    stderr_log: bool = False                           # -V
    max_idle: str | None = None                        # -i
    max_use: str | None = None                         # -m
    listen_fds: int = 1                                # -s
    flags: str = ""                                    # letters from flags=...
    flags_word: str = "flags="                         # the last flags=... as given
    extra: list = field(default_factory=list)


def parse(argv: list) -> Options:
    o = Options()
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-") or word == "-":
            break
        if word == "--":
            i += 1
            break
        j = 1
        while j < len(word):
            ch = word[j]
            if ch in _WITH_ARG:
                if j + 1 < len(word):
                    arg = word[j + 1:]
                else:
                    i += 1
                    if i >= len(argv):
                        raise UsageError("option requires an argument -- '%s'" % ch)
                    arg = argv[i]
                _apply_arg(o, ch, arg)
                break
            if ch not in _FLAGS:
                raise UsageError("invalid option: %s" % ch)
            _apply_flag(o, ch)
            j += 1
        i += 1
    for word in argv[i:]:
        if word.lower().startswith("flags="):
            letters = word[6:]
            bad = [c for c in letters if c not in "DORXdorx"]
            if bad:
                raise UsageError("unknown flag: %s in %s" % (bad[0], word))
            o.flags = letters.upper()
            o.flags_word = word
        else:
            raise UsageError("unknown attribute name: %s" % word)
    return o


def _apply_flag(o: Options, ch: str) -> None:
    if ch == "c":
        o.chroot = True
    elif ch == "d":
        o.debug_tty = True
    elif ch == "D":
        o.debugger = True
    elif ch == "l":
        o.solitary = True
    elif ch == "S":
        o.stdio = True
    elif ch == "u":
        o.unprivileged = True
    elif ch == "v":
        o.verbose += 1
    elif ch == "V":
        o.stderr_log = True
    elif ch == "z":
        o.zero_limit = True


def _apply_arg(o: Options, ch: str, arg: str) -> None:
    if ch == "o":
        name, sep, value = arg.partition("=")
        if not sep:
            raise UsageError("missing '=' after attribute name: %s" % arg)
        o.overrides.append((name.strip(), value.strip()))
    elif ch == "n":
        o.service_name = arg
    elif ch == "t":
        o.transport = arg
    elif ch == "i":
        o.max_idle = arg
    elif ch == "m":
        o.max_use = arg
    elif ch == "s":
        if not arg.isdigit() or int(arg) <= 0:
            raise UsageError("invalid socket_count: %s" % arg)
        o.listen_fds = int(arg)
    elif ch == "r":
        pass  # retirement time: not used by delivery agents
