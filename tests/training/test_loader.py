"""Deterministic, resumable epoch batches, and the worker processes that make them."""
import os
import signal
import threading
import time

import numpy as onp
import pytest

from gluon_face.training.loader import (
    EpochBatches,
    FlipDataset,
    WorkerBatches,
    batches_per_epoch,
)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = EpochBatches(50, 8, epoch=3, seed=1).indices()
    b = EpochBatches(50, 8, epoch=3, seed=1).indices()
    c = EpochBatches(50, 8, epoch=4, seed=1).indices()
    onp.testing.assert_array_equal(a, b)
    assert not onp.array_equal(a, c)
    assert a.shape == (6, 8)
    # each image at most once (flipped index i + N stands for image i)
    assert len(set((a % 50).ravel().tolist())) == 48


def test_start_skips_batches():
    full = list(EpochBatches(50, 8, epoch=1, seed=0))
    tail = list(EpochBatches(50, 8, epoch=1, seed=0, start=4))
    assert tail == full[4:]
    assert len(EpochBatches(50, 8, epoch=1, start=4)) == 2


def test_no_flip_gives_plain_indices():
    idx = EpochBatches(30, 5, epoch=0, flip=False).indices()
    assert idx.max() < 30
    assert sorted(idx.ravel().tolist()) == list(range(30))


def test_parts_are_disjoint_and_equal_length():
    parts = [EpochBatches(50, 4, epoch=0, part=p, num_parts=3).indices() for p in range(3)]
    assert all(p.shape == (4, 4) for p in parts)
    seen = onp.concatenate([p.ravel() for p in parts]) % 50
    assert len(set(seen.tolist())) == seen.size
    assert batches_per_epoch(50, 4, 3) == 4


def test_flip_dataset_mirrors_second_half():
    images = [onp.arange(12, dtype=onp.uint8).reshape(2, 2, 3) + 10 * i for i in range(3)]
    ds = FlipDataset([(im, i) for i, im in enumerate(images)], transform=lambda x: x)
    assert len(ds) == 6
    img, label = ds[4]
    assert label == 1
    onp.testing.assert_array_equal(img, images[1][:, ::-1])
    onp.testing.assert_array_equal(ds[1][0], images[1])


# ----------------------------------------------------------------------------- WorkerBatches
class _Items:
    """``items[i] = (i, pid of the process that made it)``, optionally slow or failing."""

    def __init__(self, n, delay=0.0, fail_at=None, error=ValueError):
        self.n, self.delay, self.fail_at, self.error = n, delay, fail_at, error

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.delay)
        if i == self.fail_at:
            raise self.error(f"item {i} is broken")
        return i, os.getpid()


def _stack(samples):
    return onp.array([s[0] for s in samples]), {s[1] for s in samples}


class _Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


@pytest.mark.parametrize("workers,prefetch", [(1, 1), (3, 2)])
def test_worker_batches_come_in_order_from_other_processes(workers, prefetch):
    batches = [list(range(k, 40, 7)) for k in range(7)]
    with WorkerBatches(_Items(40), batches, _stack, workers, prefetch=prefetch) as loader:
        got = list(loader)
    assert len(loader) == 7
    assert [g[0].tolist() for g in got] == batches
    pids = set().union(*(g[1] for g in got))
    assert os.getpid() not in pids and len(pids) == workers


def test_a_worker_error_is_raised_where_the_batch_is_read():
    batches = [[0, 1], [2, 3], [4, 5]]
    with WorkerBatches(_Items(6, fail_at=3), batches, _stack, 2) as loader:
        it = iter(loader)
        assert next(it)[0].tolist() == [0, 1]
        with pytest.raises(ValueError, match="item 3 is broken"):
            next(it)
    with WorkerBatches(_Items(6, fail_at=0, error=_Unpicklable), batches, _stack, 1) as loader:
        with pytest.raises(RuntimeError, match="_Unpicklable: item 0 is broken"):
            list(loader)


def test_workers_ignore_sigterm_and_close_ends_them():
    # a scheduler's SIGTERM to the whole job reaches the workers too: they keep
    # making batches until the training process, which got it as well, closes them
    batches = [[i] for i in range(12)]
    loader = WorkerBatches(_Items(12, delay=0.05), batches, _stack, 2)
    procs = [w[0] for w in loader._workers]
    it = iter(loader)
    next(it)
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
    assert [next(it)[0].tolist() for _ in range(11)] == [[i] for i in range(1, 12)]
    tic = time.monotonic()
    loader.close()
    assert time.monotonic() - tic < 10
    assert all(p.exitcode == -signal.SIGKILL for p in procs)
    loader.close()  # again: nothing left to do


def test_a_dead_worker_is_an_error_not_a_hang():
    batches = [[i] for i in range(6)]
    with WorkerBatches(_Items(6, delay=0.2), batches, _stack, 2) as loader:
        it = iter(loader)
        next(it)
        os.kill(loader._workers[1][0].pid, signal.SIGKILL)
        died = r"data worker 1 \(pid \d+\) ended with exit code -9"
        with pytest.raises(RuntimeError, match=died):
            list(it)  # batches it finished before it died may still come first


def test_worker_batches_refuse_zero_workers():
    with pytest.raises(ValueError, match="at least 1"):
        WorkerBatches(_Items(2), [[0]], _stack, 0)
