"""Deterministic, resumable batches of training images.

The order of an epoch and its random mirrors are a pure function of
``(seed, epoch)``: epoch ``e`` draws a permutation and one flip bit per image
from ``numpy.random.default_rng([seed, e])``.  A run resumed at global step
``k`` therefore sees exactly the batches the uninterrupted run saw from step
``k`` on, however many DataLoader workers decode them, and no random state has
to be saved.

With several workers of a distributed job (``num_parts > 1``), each takes the
positions ``part, part + num_parts, ...`` of the same permutation, and every
part has the same number of batches (extra images are dropped), so that
``dist_sync`` workers step together.  The last incomplete batch of an epoch is
dropped too: every step has the same batch shape (a hybridized graph keeps one
shape) and divides evenly over the devices.
"""
import signal
import sys
import time

import numpy as onp

__all__ = ["EpochBatches", "FlipDataset", "WorkerBatches", "batches_per_epoch"]


def batches_per_epoch(num_images, batch_size, num_parts=1):
    """Steps per epoch: ``(num_images // num_parts) // batch_size``."""
    return (int(num_images) // int(num_parts)) // int(batch_size)


class FlipDataset:
    """``2N`` virtual items over a dataset of ``N``: item ``i + N`` is item ``i`` mirrored.

    Mirroring happens before ``transform`` (``image[:, ::-1]`` on HWC). Picklable
    (for DataLoader workers) as long as ``dataset`` and ``transform`` are.

    Parameters
    ----------
    dataset : sequence
        ``dataset[i] -> (image (H, W, 3) uint8, label int)``.
    transform : callable
        ``image (H, W, 3) uint8 -> (3, H', W') float32``.
    """

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform
        self._n = len(dataset)

    def __len__(self):
        return 2 * self._n

    def __getitem__(self, i):
        flip = i >= self._n
        image, label = self.dataset[i - self._n if flip else i]
        if flip:
            image = onp.ascontiguousarray(image[:, ::-1])
        return self.transform(image), onp.float32(label)


class EpochBatches:
    """Batch sampler over :class:`FlipDataset` indices for one epoch.

    Iterating yields lists of ``batch_size`` indices into a :class:`FlipDataset`
    (``i`` or ``i + N`` for a mirrored image), starting at batch ``start``.

    Parameters
    ----------
    num_images : int
        ``N``, images in the underlying dataset.
    batch_size : int
    epoch : int
        0-based epoch number (selects the permutation).
    seed : int
    flip : bool
        Draw a random mirror bit per image (probability 0.5).
    start : int
        First batch to yield (for resuming inside an epoch).
    part, num_parts : int
        This worker's share of the epoch in a distributed job.
    """

    def __init__(self, num_images, batch_size, epoch, seed=0, flip=True, start=0, part=0,
                 num_parts=1):
        self.num_images = int(num_images)
        self.batch_size = int(batch_size)
        self.epoch = int(epoch)
        self.seed = int(seed)
        self.flip = bool(flip)
        self.start = int(start)
        self.part = int(part)
        self.num_parts = int(num_parts)
        self.num_batches = batches_per_epoch(num_images, batch_size, num_parts)

    def indices(self):
        """All ``(num_batches, batch_size)`` indices of this worker's epoch."""
        rng = onp.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_images)
        flips = rng.random(self.num_images) < 0.5
        if self.flip:
            order = order + self.num_images * flips[order]
        mine = order[self.part::self.num_parts]
        used = self.num_batches * self.batch_size
        return mine[:used].reshape(self.num_batches, self.batch_size)

    def __iter__(self):
        for row in self.indices()[self.start:]:
            yield row.tolist()

    def __len__(self):
        return max(0, self.num_batches - self.start)


class WorkerBatches:
    """Batches made by ``num_workers`` forked processes, in the order given.

    Takes the place of ``gluon.data.DataLoader(num_workers > 0)`` in training,
    because that loader's ``multiprocessing.Pool`` cannot always be shut down: a
    worker killed while it holds the pool's shared queue lock (a scheduler's
    SIGTERM to the whole job reaches the workers too) leaves ``Pool.terminate``
    waiting for that lock forever.  Here every worker has pipes of its own, so
    nothing is shared; workers ignore SIGINT and SIGTERM (the training process
    decides when to stop, and keeps getting batches until it does), and
    :meth:`close` ends them with SIGKILL.  A worker that raises passes its error
    on; one that dies ends the iteration with an error naming it.

    Parameters
    ----------
    dataset : sequence
        Indexable by the entries of ``batches``; picklable is not required (workers
        are forked), but each worker must be able to read it on its own (e.g.
        :class:`~gluon_face.data.FaceRecordDataset` reopens its file per process).
    batches : iterable of list of int
        The indices of each batch (e.g. :class:`EpochBatches`).
    batchify : callable
        ``batchify([dataset[i] for i in batch])`` runs in the worker; its result is
        pickled back.
    num_workers : int
        Worker processes, at least 1; batch ``k`` is made by worker ``k % num_workers``.
    prefetch : int, default 2
        Batches each worker may have in hand ahead of the one being read.
    timeout : float, default 600
        Seconds to wait for one batch before :class:`TimeoutError`.
    """

    def __init__(self, dataset, batches, batchify, num_workers, prefetch=2, timeout=600.0):
        import multiprocessing

        if int(num_workers) < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self._batches = [list(b) for b in batches]
        self._ahead = max(1, int(prefetch)) * int(num_workers)
        self._timeout = float(timeout)
        self._workers = []
        context = multiprocessing.get_context("fork")
        # MXNet stops its engine before a fork and waits for it; an operator still
        # queued that runs Python (a custom operator) would wait for the interpreter
        # lock the forking thread holds, and the fork would never return
        mx = sys.modules.get("mxnet")
        if mx is not None:
            mx.nd.waitall()
        # Signals that arrive while a worker is being forked wait until it ignores
        # them (the child) or the parent is done forking (the parent handles them).
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            for _ in range(int(num_workers)):
                tasks_out, tasks_in = context.Pipe(duplex=False)
                results_out, results_in = context.Pipe(duplex=False)
                proc = context.Process(target=_make_batches, daemon=True,
                                       args=(dataset, batchify, tasks_out, results_in, mask))
                proc.start()
                tasks_out.close()
                results_in.close()
                self._workers.append((proc, tasks_in, results_out))
        except BaseException:
            self.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def __len__(self):
        return len(self._batches)

    def __iter__(self):
        n, sent = len(self._workers), 0
        for k in range(len(self._batches)):
            while sent < len(self._batches) and sent < k + self._ahead:
                self._workers[sent % n][1].send(self._batches[sent])
                sent += 1
            yield self._receive(k % n)

    def _receive(self, w):
        proc, _, results = self._workers[w]
        deadline = time.monotonic() + self._timeout
        def ended():
            return RuntimeError(f"data worker {w} (pid {proc.pid}) ended with exit code "
                                f"{proc.exitcode} before its batch was ready")

        while not results.poll(0.5):
            if not proc.is_alive():
                raise ended()
            if time.monotonic() > deadline:
                raise TimeoutError(f"data worker {w} (pid {proc.pid}) made no batch in "
                                   f"{self._timeout:g} s")
        try:
            ok, value = results.recv()
        except EOFError:
            raise ended() from None
        if not ok:
            raise value
        return value

    def close(self):
        """End every worker (SIGKILL) and wait for it; harmless when called again."""
        workers, self._workers = self._workers, []
        for proc, _, _ in workers:
            if proc.is_alive():
                proc.kill()
        for proc, tasks, results in workers:
            proc.join()
            tasks.close()
            results.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _make_batches(dataset, batchify, tasks, results, mask):
    """A :class:`WorkerBatches` worker: index lists in, ``(ok, batch or error)`` out."""
    import pickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    while True:
        try:
            indices = tasks.recv()
        except (EOFError, OSError):  # the training process is gone
            return
        try:
            out = (True, batchify([dataset[i] for i in indices]))
        except Exception as err:  # passed on, raised where the batch is read
            out = (False, err)
        try:
            try:
                results.send(out)
            except (pickle.PicklingError, TypeError, AttributeError):  # an unpicklable error
                results.send((False, RuntimeError(f"{type(out[1]).__name__}: {out[1]}")))
        except (BrokenPipeError, OSError):
            return
