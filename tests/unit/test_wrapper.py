"""The executable master(8) runs (install.Wrapper): how it starts Python."""

from __future__ import annotations

import os
import subprocess
import sys

from postfix_smtp import install
from postfix_smtp.install import Wrapper

FAKE_SERVER = """
import sys
def main(argv):
    print(repr(argv[1:]), 'site' in sys.modules, sys.flags.isolated, sys.flags.no_site)
    return 3
"""


def _fake_site(tmp_path) -> str:
    site = tmp_path / "site-packages"
    pkg = site / "postfix_smtp" / "master"
    pkg.mkdir(parents=True)
    (site / "postfix_smtp" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "server.py").write_text(FAKE_SERVER)
    return str(site)


def _run(wrapper: Wrapper, tmp_path, *args):
    path = tmp_path / "pysmtp"
    wrapper.write(str(path))
    return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30,
                          env={})


def test_installed_package_starts_without_site(tmp_path, monkeypatch):
    site = _fake_site(tmp_path)
    monkeypatch.setattr(install, "_package_dirs", lambda python: [site])
    w = Wrapper(python=sys.executable)
    assert " -I -S -c " in w.render()
    r = _run(w, tmp_path, "-n", "smtp", "-t", "unix", "a b")
    # the arguments arrive unchanged, site.py was skipped, the exit status is main()'s
    assert r.stdout.split("\n")[0] == "['-n', 'smtp', '-t', 'unix', 'a b'] False 1 1"
    assert r.returncode == 3, r.stderr


def test_without_an_installed_package_falls_back_to_dash_m(tmp_path, monkeypatch):
    monkeypatch.setattr(install, "_package_dirs", lambda python: [])
    assert 'exec %s -I -m postfix_smtp "$@"' % sys.executable in \
        Wrapper(python=sys.executable).render()


def test_package_dirs_probe_finds_only_a_real_installation(tmp_path):
    # this interpreter: the package comes from the source tree or an editable
    # install, never from a site directory -> [] ; a bogus interpreter -> []
    here = os.path.dirname(os.path.dirname(os.path.abspath(install.__file__)))
    dirs = install._package_dirs(sys.executable)
    assert all(os.path.isfile(os.path.join(d, "postfix_smtp", "master", "server.py"))
               for d in dirs[:1]), (dirs, here)
    assert install._package_dirs(str(tmp_path / "no-such-python")) == []


def test_development_tree_uses_pythonpath(tmp_path):
    text = Wrapper(python=sys.executable, pythonpath="/src/tree").render()
    assert "PYTHONPATH=/src/tree; export PYTHONPATH" in text
    assert 'exec %s -m postfix_smtp "$@"' % sys.executable in text
