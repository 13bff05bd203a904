"""Worker processes: one configuration per fresh process, its result read back as JSON.

A process's peak resident set only grows, and MXNet keeps memory pools per
graph, so the memory figures of one configuration are only its own in a
process of its own.  The benchmark commands run themselves again as workers
(``python -m <command module> ... --worker-out OUT``); the worker writes its
rows to ``OUT`` and the parent collects them.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from .memory import GIB, rss_bytes

__all__ = ["worker_env", "run_worker", "out_of_memory"]

#: Signs of a worker that ran out of memory in its captured stderr (lower case):
#: MXNet's failed allocations, C++'s ``std::bad_alloc``, Python's ``MemoryError``.
OOM_SIGNS = ("bad_alloc", "out of memory", "memoryerror", "cannot allocate memory",
             "failed to allocate")
#: Characters of a captured stderr kept in the result (its end).
STDERR_TAIL = 4000


def worker_env():
    """The environment of a worker: this one, with this gluon_face first on ``PYTHONPATH``.

    The worker must import the same gluon_face as the parent, also when the
    parent's comes from a source tree that is not the installed one.
    """
    import gluon_face

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(gluon_face.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_worker(module, argv, max_rss_gib=None, timeout=None, capture_stderr=False,
               poll_s=0.2):
    """Run ``python -m module *argv --worker-out OUT`` and read the JSON it writes to OUT.

    Parameters
    ----------
    module : str
        The command module, e.g. ``'gluon_face.commands.benchmark_head'``.
    argv : list of str
        Its arguments, ``--worker-out`` excluded.
    max_rss_gib, timeout : float, optional
        Stop the worker when its resident set passes ``max_rss_gib`` GiB, or
        after ``timeout`` seconds; it is watched every ``poll_s`` seconds.
    capture_stderr : bool
        Keep the worker's stderr for the failure message; by default it goes
        to this process's stderr (the worker's progress lines).  Its stdout is
        dropped.  A captured stderr is read while the worker runs, so a
        talkative worker cannot fill the pipe and stall.

    Returns
    -------
    dict
        ``result`` (the JSON; None when the worker failed or was stopped),
        ``status`` ('ok', 'stopped: ...' or 'failed (exit N): <last stderr
        line>'), ``returncode``, ``rss_seen_gib`` (largest resident set seen
        while watching; 0 when not watched), ``wall_s`` and ``stderr`` (the end
        of the captured stderr; '' when not captured).
    """
    watch = max_rss_gib is not None or timeout is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", module, *argv, "--worker-out", out]
        start = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE if capture_stderr else None,
                                text=True, env=worker_env())
        chunks = []
        reader = None
        if capture_stderr:  # drained by a thread: a full pipe would block the worker
            reader = threading.Thread(target=lambda: chunks.extend(proc.stderr), daemon=True)
            reader.start()
        status, seen = None, 0.0
        while watch and proc.poll() is None:
            seen = max(seen, rss_bytes(proc.pid) / GIB)
            if max_rss_gib is not None and seen > max_rss_gib:
                status = f"stopped: RSS > {max_rss_gib:g} GiB"
            elif timeout is not None and time.time() - start > timeout:
                status = f"stopped: > {timeout:g} s"
            if status:
                proc.kill()
                break
            time.sleep(poll_s)
        proc.wait()
        if reader is not None:
            reader.join()
            proc.stderr.close()
        err = "".join(chunks)
        result = None
        if status is None and proc.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                result = json.load(f)
            status = "ok"
        elif status is None:
            last = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
            status = f"failed (exit {proc.returncode}): " + (last[-1] if last else "no message")
        return {"result": result, "status": status, "returncode": proc.returncode,
                "rss_seen_gib": seen, "wall_s": time.time() - start,
                "stderr": err[-STDERR_TAIL:]}


def out_of_memory(run):
    """Whether the worker of ``run`` (a :func:`run_worker` result) failed for lack of memory.

    True when the watch stopped it past ``max_rss_gib``, when it was killed
    by SIGKILL without being stopped (the kernel's OOM killer), or when its
    captured stderr shows a failed allocation (:data:`OOM_SIGNS`; an
    allocation failing in one of MXNet's engine threads aborts the process
    with ``std::bad_alloc``).
    """
    if run["status"].startswith("stopped"):  # by our watch: past max_rss_gib, or the timeout
        return run["status"].startswith("stopped: RSS")
    if run["result"] is not None:
        return False
    if run["returncode"] == -9:
        return True
    text = (run.get("stderr") or "").lower()
    return any(sign in text for sign in OOM_SIGNS)
