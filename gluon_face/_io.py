"""Atomic file writing shared by the data writers, checkpoints and tools.

Everything gluon_face writes goes to a temporary name in the destination folder
and is renamed into place only once complete, so an interrupted run never leaves
a file that looks valid.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str
        Final destination.
    suffix : str
        Suffix for the temporary name, for writers that insist on an extension
        (e.g. ``'.params'``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix + ".tmp",
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """``open`` whose result appears at ``path`` only when the block completes."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
