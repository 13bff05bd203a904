"""Atomic file writing shared by the data writers, checkpoints and tools.

Everything gluon_face writes goes to a temporary name in the destination folder
and is renamed into place only once complete, so an interrupted run never leaves
a file that looks valid.  Temporary names start with ``.`` and end in ``.tmp``
(:data:`TMP_SUFFIX`); the finished files get the permissions of a plain ``open``
under the process umask (``0644`` / ``0755`` under umask ``022``), not the private
``0600`` / ``0700`` that :mod:`tempfile` creates.
"""
import contextlib
import os
import tempfile

TMP_SUFFIX = ".tmp"


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(folder, prefix):
    """A new empty folder ``<folder>/<prefix>XXXX.tmp`` with umask permissions."""
    tmp = tempfile.mkdtemp(prefix=prefix, suffix=TMP_SUFFIX, dir=folder)
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


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
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=suffix + TMP_SUFFIX, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
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
