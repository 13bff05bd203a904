"""Step timing and its summary over repeats.

Standard library only: ``tools/benchmark_torch.py`` runs in a PyTorch virtual
environment without gluon_face or MXNet and loads this file by its path, so that
both frameworks' figures come from the same code.
"""
import statistics
import time

__all__ = ["timed", "summarize_times"]


def timed(fn, sync=None):
    """Seconds that ``fn()`` takes, ``sync()`` included.

    MXNet returns before its engine has done the work; ``sync`` (e.g.
    ``mx.nd.waitall``) waits for it inside the clock.
    """
    start = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


def summarize_times(times, work=1.0):
    """Median, min and max of ``work / t`` over step times ``times`` (s).

    Returns
    -------
    dict
        ``rate``, ``rate_min``, ``rate_max`` (work per second) and ``step_s``
        (median seconds), ``step_s_min``, ``step_s_max``, ``repeats``.
    """
    if not times or min(times) <= 0:
        raise ValueError(f"need positive step times, got {times!r}")
    med = statistics.median(times)
    return {"rate": work / med, "rate_min": work / max(times), "rate_max": work / min(times),
            "step_s": med, "step_s_min": min(times), "step_s_max": max(times),
            "repeats": len(times)}
