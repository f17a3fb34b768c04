"""Fixtures for tests against a real, private Postfix instance.

These tests run only as root with Postfix installed (/usr/sbin/postfix);
otherwise they are skipped.  Environment:

- POSTFIX_SMTP_PYTHON: an interpreter that can import postfix_smtp (e.g. an
  installed venv's python); the agent then runs it without PYTHONPATH.
  Default: /usr/bin/python3 with PYTHONPATH = this checkout (or a copy
  readable by user postfix, when the checkout is not).
- POSTFIX_SMTP_KEEP_TMP=1: keep the per-test instance directories.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from postfix_smtp.install import Wrapper  # noqa: E402
from postfix_smtp.testing.instance import (  # noqa: E402
    postfix_available, postfix_readable_source_root)

HERE = os.path.dirname(os.path.abspath(__file__))


def _skip_reason():
    if os.geteuid() != 0:
        return "integration tests need root"
    if not postfix_available():
        return "integration tests need Postfix (/usr/sbin/postfix)"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _require_root_and_postfix():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def tmp_base():
    """A fresh directory under /tmp that user postfix can reach (mode 755)."""
    d = tempfile.mkdtemp(prefix="pfsmtp-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    if not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


def agent_python_and_path():
    """(python, pythonpath, cleanup_dir) for the agent wrapper.

    POSTFIX_SMTP_PYTHON (an installed interpreter) runs without PYTHONPATH;
    otherwise /usr/bin/python3 with PYTHONPATH = the repo root, or a copy of
    the package readable by user postfix when the repo root is not (e.g. a
    checkout under /root).  cleanup_dir, when not None, is to be removed.
    """
    python = os.environ.get("POSTFIX_SMTP_PYTHON")
    if python:
        return os.path.abspath(python), None, None
    path, cleanup = postfix_readable_source_root(os.path.join(REPO_ROOT, "postfix_smtp"))
    return "/usr/bin/python3", path, cleanup


@pytest.fixture(scope="session")
def _agent_source():
    python, path, cleanup = agent_python_and_path()
    yield python, path
    if cleanup:
        shutil.rmtree(cleanup, ignore_errors=True)


@pytest.fixture
def agent_wrapper(_agent_source):
    """A postfix_smtp.install.Wrapper that runs this checkout's agent."""
    python, path = _agent_source
    return Wrapper(python=python, pythonpath=path)


# --- TLS: the agent with pyOpenSSL, the test PKI -------------------------------------

def python_with_openssl():
    """An interpreter that can import pyOpenSSL: POSTFIX_SMTP_PYTHON, the
    project venv, or this one; None if none can."""
    import subprocess
    for p in (os.environ.get("POSTFIX_SMTP_PYTHON"), "/opt/postfix_smtp/venv/bin/python",
              sys.executable):
        if p and os.access(p, os.X_OK) and subprocess.run(
                [p, "-c", "import OpenSSL"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode == 0:
            return p
    return None


@pytest.fixture(scope="module")
def tls_agent():
    """The agent from this checkout, run by an interpreter that has pyOpenSSL."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    python = python_with_openssl()
    if python is None:
        pytest.fail("no interpreter with pyOpenSSL for the agent (set POSTFIX_SMTP_PYTHON)")
    path, cleanup = postfix_readable_source_root(os.path.join(REPO_ROOT, "postfix_smtp"))
    yield Wrapper(python=python, pythonpath=path)
    if cleanup:
        shutil.rmtree(cleanup, ignore_errors=True)


@pytest.fixture(scope="module")
def pki():
    """A test CA with good, expired, wrong-name, ... certificates
    (postfix_smtp.testing.tlscerts)."""
    from postfix_smtp.testing.tlscerts import make_pki
    d = tempfile.mkdtemp(prefix="pfsmtp-pki-", dir="/tmp")
    os.chmod(d, 0o755)
    yield make_pki(d)
    shutil.rmtree(d, ignore_errors=True)
