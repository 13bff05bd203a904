"""The PyTorch peer: ``tools/benchmark_torch.py --serve`` driven in lock-step with our repeats.

The peer runs under another interpreter (a virtual environment with torch; torch
is no dependency of gluon_face).  It sets up and warms up its variants, prints
``@@bench ready``, then runs one repeat per ``step`` line on its stdin
(``@@bench done``) and prints ``@@bench result <json>`` on ``finish``.  After
each of our repeats the peer runs one of its own, so both see the same machine
load, and the ratios between them are as steady as those within one framework.
"""
import importlib.util
import json
import os
import subprocess
import time

__all__ = ["TORCH_SCRIPT", "load_torch_tool", "check_torch_python", "TorchPeer",
           "add_torch_ratios"]

#: The peer script; it ships with the source tree, not with the installed package.
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools", "benchmark_torch.py")
#: Start of the peer's protocol lines (``PREFIX`` of tools/benchmark_torch.py).
PREFIX = "@@bench"
#: Seconds between our step and the peer's, both ways: the OpenMP threads of each side
#: stop spin-waiting (MXNet's runtime spins for KMP_BLOCKTIME, 200 ms) before the other
#: one is timed.
HANDOFF_PAUSE_S = 0.5


def load_torch_tool():
    """tools/benchmark_torch.py as a module (importable without torch: it imports torch late)."""
    if not os.path.isfile(TORCH_SCRIPT):
        raise OSError(f"{TORCH_SCRIPT} not found: the PyTorch peer needs gluon_face's "
                      f"source tree")
    spec = importlib.util.spec_from_file_location("benchmark_torch", TORCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_torch_python(path):
    """One-line reason why the interpreter ``path`` cannot run the peer, or None."""
    if not os.path.isfile(TORCH_SCRIPT):
        return f"--torch-python: {TORCH_SCRIPT} not found (it ships with the source tree)"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"--torch-python {path}: not an executable file"
    try:
        proc = subprocess.run([path, "-c", "import torch; print(torch.__version__)"],
                              capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"--torch-python {path}: cannot run it ({type(err).__name__})"
    if proc.returncode != 0:
        return f"--torch-python {path}: cannot import torch"
    return None


class TorchPeer:
    """tools/benchmark_torch.py ``--serve`` in a subprocess, driven in lock-step.

    The constructor returns once the peer has set up and warmed up its
    variants; :meth:`step` runs one repeat of them and waits for it.

    Parameters
    ----------
    python : str
        Interpreter of the venv with torch.
    argv : list of str
        The peer's arguments (its ``--networks``, ``--head-classes``, ...).
    """

    def __init__(self, python, argv):
        self.proc = subprocess.Popen([python, TORCH_SCRIPT, "--serve", *argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, word):
        for line in self.proc.stdout:
            parts = line.split(None, 2)
            if parts[:2] == [PREFIX, word]:
                return parts[2] if len(parts) > 2 else ""
        code = self.proc.wait()
        raise RuntimeError(f"the torch peer stopped before '{word}' (exit {code})")

    def _send(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise RuntimeError(f"the torch peer stopped (exit {self.proc.wait()})") from None

    def step(self, *words):
        """One timed repeat of every torch variant (of class count ``words`` for the head)."""
        self._send(" ".join(["step", *map(str, words)]))
        self._expect("done")

    def after(self, progress, *words):
        """A ``progress`` callable for our measurement that runs one peer repeat after ours.

        ``progress(text)`` is called first (our repeat's log line), then the
        peer's :meth:`step` between two pauses of :data:`HANDOFF_PAUSE_S`.
        """
        def then_peer(text):
            progress(text)
            time.sleep(HANDOFF_PAUSE_S)
            self.step(*words)
            time.sleep(HANDOFF_PAUSE_S)
        return then_peer

    def finish(self):
        """The peer's ``{'info', 'rows'}``; it exits."""
        self._send("finish")
        result = json.loads(self._expect("result"))
        self.close()
        return result

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def add_torch_ratios(rows, torch_rows):
    """Ratio columns of our ``rows`` against ``torch_rows`` (speed, ours / torch).

    Backbone rows: ``vs_torch`` is our images/s over torch's fp32 ``eager``
    variant of the same network and task, ``vs_torch_best`` over its fastest
    variant (``torch_best_mode``).  Head rows: torch's step time over ours, at
    the same class count, among torch's variants of the same protocol: with
    the cross-entropy for our ``fused+ce`` row, backward from a given logits
    gradient (``logits``, ``compile-logits``) for the others.
    ``vs_torch_peak`` / ``vs_torch_best_peak`` are the same ratios from each
    side's fastest repeat (on a shared machine the closest to the unloaded speed).
    A ``floor`` row (the head's products alone) is no head and gets no ratio.
    """
    for r in rows:
        if r.get("floor"):
            continue
        if r.get("workload") == "head":
            peers = [t for t in torch_rows
                     if t.get("workload") == "head" and t["num_classes"] == r["num_classes"]
                     and t.get("cross_entropy", True) == r.get("cross_entropy", False)]
            speed = {t["mode"]: 1.0 / t["step_s"] for t in peers}
            peak = {t["mode"]: 1.0 / t["step_s_min"] for t in peers}
            ours, ours_peak = 1.0 / r["step_s"], 1.0 / r["step_s_min"]
        else:
            peers = [t for t in torch_rows
                     if t.get("workload") != "head" and t["network"] == r["network"]
                     and t["task"] == r["task"]]
            speed = {t["mode"]: t["images_s"] for t in peers}
            peak = {t["mode"]: t["images_s_max"] for t in peers}
            ours, ours_peak = r["images_s"], r["images_s_max"]
        if not speed:
            continue
        best = max(speed, key=speed.get)
        eager = "eager" if "eager" in speed else "logits"  # the eager variant of the protocol
        r["vs_torch"] = ours / speed[eager] if eager in speed else None
        r["vs_torch_best"], r["torch_best_mode"] = ours / speed[best], best
        # the same from each side's fastest repeat: other load only slows a step down
        best = max(peak, key=peak.get)
        r["vs_torch_peak"] = ours_peak / peak[eager] if eager in peak else None
        r["vs_torch_best_peak"], r["torch_best_peak_mode"] = ours_peak / peak[best], best
    return rows
