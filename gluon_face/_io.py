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
import re
import secrets
import tempfile

TMP_SUFFIX = ".tmp"

# tempfile's random part of a name: 8 characters of this alphabet.
_RANDOM_PART = "[a-z0-9_]{8}"


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

    On an exception the temporary file is removed and ``path`` is untouched;
    so are the folders made for it, when nothing else was put there meanwhile.

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
    created = _make_folders(folder)
    tmp = None
    try:
        # the name is ours before the file exists: a signal at any point leaves
        # either no file or one this handler removes
        while True:
            tmp = os.path.join(folder, "." + os.path.basename(path) + "."
                               + secrets.token_hex(4) + suffix + TMP_SUFFIX)
            if _create_new_file(tmp):
                break
            tmp = None
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        for made in reversed(created):
            try:
                os.rmdir(made)
            except OSError:  # not empty (another writer's file), or gone
                break
        raise


def _create_new_file(path):
    """Create ``path`` empty with a plain ``open``'s permissions; False if it exists.

    ``tempfile.mkstemp`` would do, but it names the file only once it exists, so
    a Ctrl-C or SIGTERM landing in between leaves a file nobody knows to remove.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _make_folders(folder):
    """``os.makedirs(folder, exist_ok=True)``; the folders it made, outermost first."""
    missing = []
    current = folder
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    os.makedirs(folder, exist_ok=True)
    return missing[::-1]


def stale_temps(path, suffix=""):
    """Temporary files :func:`atomic_path` made for ``path`` and left behind.

    A run killed before it could clean up (``SIGKILL``, a power cut) leaves
    ``.<name>.<random><suffix>.tmp`` beside ``path``.  Only names of exactly
    that form are listed, so other files (and other destinations' temporary
    files) never are.  Nothing is removed here.

    Parameters
    ----------
    path : str
        The destination.
    suffix : str
        As given to :func:`atomic_path`.

    Returns
    -------
    list of str
        Paths of the temporary files, sorted.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(r"\.%s\.%s%s%s\Z" % (re.escape(os.path.basename(path)), _RANDOM_PART,
                                             re.escape(suffix), re.escape(TMP_SUFFIX)))
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.join(folder, n) for n in names
                  if pattern.match(n) and os.path.isfile(os.path.join(folder, n)))


def remove_stale_temps(paths, suffix=""):
    """Remove the :func:`stale_temps` of every destination in ``paths``.

    Call it only when no other process is writing the same destinations: a
    writer that is still running would lose its temporary file.

    Returns
    -------
    list of str
        The files removed.
    """
    removed = []
    for path in paths:
        for tmp in stale_temps(path, suffix):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """``open`` whose result appears at ``path`` only when the block completes."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
