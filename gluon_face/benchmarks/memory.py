"""Resident memory of a process.

Standard library only, like :mod:`.timing`: ``tools/benchmark_torch.py`` loads
this file by its path, so the PyTorch peer's memory is read the same way as ours.
"""
import resource
import sys

__all__ = ["MIB", "GIB", "peak_rss_bytes", "rss_bytes", "available_bytes"]

MIB = float(1 << 20)
GIB = float(1 << 30)


def _status_kib(field, pid="self"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes():
    """Peak resident set size of this process so far, in bytes.

    ``VmHWM`` of ``/proc/self/status``: the peak of this program alone.
    ``ru_maxrss`` is the fallback where there is no ``/proc``; it also counts the
    program this process replaced at ``exec`` (the parent that started it).
    """
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB


def rss_bytes(pid="self"):
    """Current resident set size of process ``pid`` (default: this one) in bytes; 0 if unknown."""
    kib = _status_kib("VmRSS", pid)
    return 0 if kib is None else kib * 1024


def available_bytes(meminfo="/proc/meminfo"):
    """``MemAvailable`` of ``meminfo`` in bytes: what new processes can take without swapping.

    None where it is unknown (no ``/proc``, or a kernel older than 3.14).
    """
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
