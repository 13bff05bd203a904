"""Signal handlers stay with the process that installed them.

MXNet's DataLoader forks its workers while the trainer's SIGTERM handler is in
place and ends them with SIGTERM; a worker that ran the handler instead of dying
left the pool's join (and the run) waiting forever.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gluon_face._signals import owned_handler


def _run_script(script, what):
    # In a process of its own: forking this one after MXNet work could wait on
    # MXNet's engine, and a hang fails the test by its timeout instead.
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not end within 120 s")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


INSTALL = {
    "tools": "from gluon_face._cli import install_stop_signals as install\n",
    "trainer": ("from gluon_face.training.callbacks import _StopFlag\n"
                "installed = _StopFlag().installed()  # kept: its exit restores\n"
                "install = installed.__enter__\n"),
}


@pytest.mark.parametrize("kind", sorted(INSTALL))
def test_a_forked_child_dies_of_sigterm(kind):
    script = INSTALL[kind] + textwrap.dedent("""
        import multiprocessing, time
        install()
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,),
                                                            daemon=True)
        child.start()
        time.sleep(0.2)  # let the child reach its sleep
        child.terminate()
        child.join(20)
        if child.is_alive():
            child.kill()
            child.join()
            print("survived")
        else:
            print(child.exitcode)
    """)
    assert _run_script(script, "the forked child") == str(-signal.SIGTERM), \
        "the child ran the parent's SIGTERM handler and lived on"


def test_the_owner_still_runs_its_handler():
    seen = []
    previous = signal.signal(signal.SIGUSR1,
                             owned_handler(lambda signum, frame: seen.append(signum)))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler runs between bytecodes
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == [signal.SIGUSR1]


def test_a_worker_pool_ends_while_the_trainer_handles_sigterm():
    # Busy workers at the break: the case that hung.
    script = """
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
    """
    assert _run_script(script, "the DataLoader's worker pool") == "ended"
