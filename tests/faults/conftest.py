"""Fault cases run as a user would: each tool in its own process, then the aftermath checked.

Every case asserts the exit code, exactly one line on stderr (no traceback), that the
inputs and earlier outputs are byte-identical afterwards and that no temporary file
of ours (``.*.tmp``) was left behind.
"""
import hashlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tool, *args, cwd=None, timeout=300, env=None, preexec_fn=None, stdin=None):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    full_env.update(env or {})
    cmd = [sys.executable, os.path.join(ROOT, "tools", tool + ".py"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn,
                          stdin=subprocess.DEVNULL if stdin is None else stdin)


@pytest.fixture
def run_tool():
    """``run_tool(name, *args, cwd=, timeout=, env=, preexec_fn=)``: ``tools/<name>.py`` in
    a fresh Python process; returns the ``CompletedProcess`` (text stdout/stderr)."""
    return _run


def _snapshot(*paths):
    out = {}
    for path in map(str, paths):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[path] = hashlib.sha256(f.read()).hexdigest()
            continue
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(folder, name)
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def snapshot():
    """``snapshot(*paths)``: {file: sha256} of every file at or under ``paths``."""
    return _snapshot


def _stray_temps(root):
    found = []
    for folder, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            if name.startswith(".") and name.endswith(".tmp"):
                found.append(os.path.join(folder, name))
    return found


@pytest.fixture
def stray_temps():
    """``stray_temps(root)``: our temporary names (``.*.tmp``) anywhere under ``root``."""
    return _stray_temps


def _one_line(proc, code, *fragments, prog=None):
    err = proc.stderr.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err
    if prog is not None:
        assert lines[0].startswith(prog + ": error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def one_line_error():
    """``one_line_error(proc, code, *fragments, prog=None)``: exit ``code`` and a single
    stderr line holding every fragment (no traceback); returns the line."""
    return _one_line
