"""Signal handlers stay with the process that installed them.

MXNet's DataLoader forks its workers while the trainer's SIGTERM handler is in
place and ends them with SIGTERM; a worker that ran the handler instead of dying
left the pool's join (and the run) waiting forever.
"""
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gluon_face._cli import install_stop_signals
from gluon_face._signals import owned_handler


@contextlib.contextmanager
def _cli_handlers():
    install_stop_signals()
    yield


def _stop_flag():
    from gluon_face.training.callbacks import _StopFlag
    return _StopFlag().installed()


def _sleep():
    time.sleep(60)


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("install", [_cli_handlers, _stop_flag], ids=["tools", "trainer"])
def test_a_forked_child_dies_of_sigterm(install, restore_handlers):
    with install():
        child = multiprocessing.get_context("fork").Process(target=_sleep, daemon=True)
        child.start()
        time.sleep(0.2)  # let the child reach its sleep
        child.terminate()
        child.join(20)
        alive = child.is_alive()
        if alive:
            child.kill()
            child.join()
    assert not alive, "the child ran the parent's SIGTERM handler and lived on"
    assert child.exitcode == -signal.SIGTERM


def test_the_owner_still_runs_its_handler(restore_handlers):
    seen = []
    signal.signal(signal.SIGUSR1, owned_handler(lambda signum, frame: seen.append(signum)))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler runs between bytecodes
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert seen == [signal.SIGUSR1]


def test_a_worker_pool_ends_while_the_trainer_handles_sigterm():
    # Busy workers at the break: the case that hung. In a process of its own, so
    # a hang fails the test by its timeout instead of stopping the suite.
    script = textwrap.dedent("""
        import gc, time
        import numpy as np
        from mxnet import gluon
        from gluon_face.training.callbacks import _StopFlag

        class Slow(gluon.data.Dataset):
            def __len__(self):
                return 400
            def __getitem__(self, i):
                time.sleep(0.01)
                return np.zeros((3, 8, 8), np.float32), i

        with _StopFlag().installed():
            for trial in range(3):
                loader = gluon.data.DataLoader(Slow(), batch_size=8, num_workers=2)
                for k, batch in enumerate(loader):
                    if k == 2:
                        break
                del batch, loader
                gc.collect()
        print("ended")
    """)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the DataLoader's worker pool did not end within 120 s")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ended"
