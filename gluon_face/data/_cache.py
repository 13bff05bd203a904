"""Built-in data sets built once into a cache folder, checked by a stamp, rebuilt when bad.

Both built-in sets (the digits demo and the glyph identities) follow the same
rules:

* the set lives in ``<cache root>/<version>``; the cache root is the caller's
  ``cache_dir``, else ``$GLUON_FACE_CACHE``, else ``~/.cache/gluon_face``;
* it is built in a temporary sibling folder that is renamed into place when
  complete, so an interrupted build or a concurrent reader never sees half a set;
* ``stamp.json`` lists the size and SHA-256 of every file; a folder whose files
  do not match it (missing, truncated, changed, built by another version) is
  rebuilt on the next use.
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile

from .._io import make_temp_dir

STAMP = "stamp.json"


def cache_root(cache_dir=None):
    """``cache_dir``, else ``$GLUON_FACE_CACHE``, else ``~/.cache/gluon_face`` (absolute)."""
    if cache_dir is None:
        cache_dir = os.environ.get("GLUON_FACE_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "gluon_face")
    return os.path.abspath(os.fspath(cache_dir))


def sha256(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_stamp(folder, version, files, **extra):
    """Write ``stamp.json``: ``version``, every file's size and SHA-256, and ``extra``.

    ``files`` are paths relative to ``folder`` with ``/`` separators.
    """
    table = {}
    for name in files:
        path = os.path.join(folder, *name.split("/"))
        table[name] = {"size": os.path.getsize(path), "sha256": sha256(path)}
    stamp = dict(extra, version=version, files=table)
    with open(os.path.join(folder, STAMP), "w", encoding="utf-8") as f:
        json.dump(stamp, f, indent=1, sort_keys=True)


def verify_stamp(folder, version, files):
    """Why ``folder`` is not a complete copy of ``version``, or None when it is.

    Checks that the stamp names exactly ``files`` and that every file has the
    stamped size and SHA-256 (sizes first: cheap, and they catch truncation).
    """
    stamp_path = os.path.join(folder, STAMP)
    try:
        with open(stamp_path, encoding="utf-8") as f:
            stamp = json.load(f)
        table = stamp["files"]
        if not isinstance(table, dict):
            raise TypeError
    except FileNotFoundError:
        return "%s: missing" % stamp_path
    except (ValueError, KeyError, TypeError):
        return "%s: unreadable" % stamp_path
    if stamp.get("version") != version or set(table) != set(files):
        return "%s: built by another version" % stamp_path
    paths = {name: os.path.join(folder, *name.split("/")) for name in files}
    for name in files:
        want = table[name]
        if not os.path.isfile(paths[name]):
            return "%s: missing" % paths[name]
        if not isinstance(want, dict) or os.path.getsize(paths[name]) != want.get("size"):
            return "%s: size differs from the stamp" % paths[name]
    for name in files:
        if sha256(paths[name]) != table[name].get("sha256"):
            return "%s: checksum differs from the stamp" % paths[name]
    return None


def cached_build(version, build, verify, cache_dir=None, rebuild=False):
    """The folder ``<cache root>/<version>``, built with ``build(tmp_folder)`` when needed.

    Parameters
    ----------
    version : str
        Sub-folder name; bump it whenever the content changes.
    build : callable
        ``build(folder)`` writes the complete set, stamp included, into the empty
        ``folder``.
    verify : callable
        ``verify(folder)`` -> None when the folder is a complete set, else why not.
    cache_dir : str, optional
        Cache root (see :func:`cache_root`).
    rebuild : bool
        Build afresh even if a valid copy exists.
    """
    root = cache_root(cache_dir)
    target = os.path.join(root, version)
    if not rebuild and os.path.isdir(target) and verify(target) is None:
        return target
    os.makedirs(root, exist_ok=True)
    tmp = make_temp_dir(root, "." + version + ".build.")
    try:
        build(tmp)
        if os.path.lexists(target):
            # Move the bad copy aside first: rename cannot replace a non-empty folder.
            trash = tempfile.mkdtemp(prefix="." + version + ".old.", dir=root)
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, os.path.join(trash, "old"))
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; keep its copy if it is good.
            if verify(target) is not None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
