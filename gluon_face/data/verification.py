"""Verification pair sets in insightface's ``.bin`` format.

A ``.bin`` is ``pickle.dump((bins, issame_list))``: ``bins`` holds ``2P`` encoded
images (pair ``i`` is ``bins[2i], bins[2i+1]``), ``issame_list`` ``P`` booleans.
insightface's public files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``) were
written by Python 2, whose ``str`` Python 3 reads as ``bytes`` with
``pickle.load(f, encoding='bytes')``.

insightface's own packer (``recognition/arcface_mxnet/common/build_eval_pack.py``)
stores each image as the result of ``cv2.imencode('.jpg', image)``, a uint8
numpy array of shape ``(N, 1)``, and pickles with ``pickle.HIGHEST_PROTOCOL``:
protocol 5 on Python >= 3.8.  There numpy reduces a contiguous array to
``_frombuffer(buffer, dtype, shape, order)`` (``numpy.core.numeric`` before
numpy 2, ``numpy._core.numeric`` from numpy 2 on) instead of protocol 2's
``_reconstruct`` + state.  Both forms load here, and an encoded image may be
``bytes``, a flat uint8 array or an ``(N, 1)`` / ``(1, N)`` one.

Loading uses a restricted unpickler: only builtins containers and the numpy
pieces needed for arrays and numpy booleans may be reconstructed, so a
hostile ``.bin`` cannot run code.  ``_frombuffer`` is not numpy's function but
:func:`_checked_frombuffer`, which accepts only a ``bytes`` / ``bytearray`` /
``PickleBuffer`` buffer, a plain numeric dtype (no objects, fields or
sub-arrays), a shape tuple of non-negative ints that fits the buffer and order
``'C'`` or ``'F'``.

We write protocol 4 pickles of ``(list of bytes, list of bool)``, which
insightface's Python 3 ``load_bin`` reads unchanged.
"""
import io
import os
import pickle

import numpy as np

from .._io import atomic_open
from ._image import decode_image, encode_image, encoded_format, resize_image

__all__ = ["PairsFormatError", "load_bin", "write_bin", "read_pairs", "make_bin",
           "balanced_pairs", "degenerate_pairs"]


class PairsFormatError(ValueError):
    """A ``.bin`` or a pairs list is malformed; the message names the file."""


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "bool_"),
    ("_codecs", "encode"),  # Python 3 bytes in protocol 2 pickles
    ("__builtin__", "bool"),
    ("builtins", "bool"),
    ("__builtin__", "bytearray"),
    ("builtins", "bytearray"),
}


#: numpy's protocol-5 array constructor, by the module path of numpy < 2 and >= 2.
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


def _checked_frombuffer(buf, dtype, shape, order):
    """numpy's ``_frombuffer(buf, dtype, shape, order)`` with every argument checked.

    Only plain data comes out: a buffer of bytes, a numeric dtype without
    objects, a shape that uses exactly the buffer's bytes.  Anything else is an
    :class:`pickle.UnpicklingError` (a malformed or hostile file).
    """
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw()
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise pickle.UnpicklingError("refusing _frombuffer of a %s, not bytes"
                                     % type(buf).__name__)
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.hasobject \
            or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError("refusing _frombuffer with dtype %r" % (dtype,))
    if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise pickle.UnpicklingError("refusing _frombuffer with shape %r" % (shape,))
    if order not in ("C", "F"):
        raise pickle.UnpicklingError("refusing _frombuffer with order %r" % (order,))
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != len(memoryview(buf).cast("B")):
        raise pickle.UnpicklingError("_frombuffer: shape %r of %s does not fit %d bytes"
                                     % (shape, dtype, len(memoryview(buf).cast("B"))))
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _FROMBUFFER:
            return _checked_frombuffer
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError("refusing to load global %s.%s" % (module, name))


def degenerate_pairs(issame):
    """Why a pair set cannot measure verification, as one line; None when it can.

    With only same-identity pairs (or only different ones) every threshold
    classifies all pairs alike: the accuracy is that of a constant answer, the
    ROC has one axis and its AUC is 0, VAL (or FAR) is undefined.

    Parameters
    ----------
    issame : array_like of bool, shape (P,)
    """
    issame = np.asarray(issame, dtype=bool).ravel()
    if issame.size == 0:
        return "no pairs"
    if issame.all() or not issame.any():
        return ("all %d pairs are %s pairs, so accuracy, VAL and AUC are meaningless on it "
                "(a verification set needs both kinds)"
                % (issame.size, "same-identity" if issame.all() else "different-identity"))
    return None


def _as_bytes(item):
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and (
            item.ndim == 1 or (item.ndim == 2 and 1 in item.shape)):
        return item.tobytes()  # (N,), or cv2.imencode's (N, 1)
    if isinstance(item, str):  # a Python 2 pickle loaded with encoding='latin1'
        return item.encode("latin1")
    return None


def load_bin(path, image_size=None, decode=True):
    """Read an insightface verification ``.bin``.

    Parameters
    ----------
    path : str
    image_size : int or (int, int), optional
        Resize every image to this (H, W).
    decode : bool
        False returns the encoded bytes instead of arrays.

    Returns
    -------
    images : numpy.ndarray
        (2P, H, W, 3) uint8 RGB; pair ``i`` = ``images[2i], images[2i+1]``
        (a list of ``2P`` encoded ``bytes`` when ``decode=False``).
    issame : numpy.ndarray
        (P,) bool.

    Raises
    ------
    FileNotFoundError
    PairsFormatError
        Not a pairs pickle, mismatched lengths, an undecodable image, or
        images of different sizes without ``image_size``.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise PairsFormatError("%s: not a verification-pairs pickle (%s: %s)"
                               % (path, type(err).__name__, str(err)[:80])) from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise PairsFormatError("%s: not a verification-pairs pickle (expected a (bins, "
                               "issame_list) pair, got %s)" % (path, type(obj).__name__))
    bins, issame = obj
    try:
        issame = np.asarray(issame)
    except Exception:  # pragma: no cover - asarray accepts nearly anything
        issame = np.asarray([None])
    if issame.ndim != 1 or issame.dtype.kind not in "bui":
        raise PairsFormatError("%s: issame_list must be a flat list of booleans" % path)
    if issame.dtype.kind != "b" and not np.isin(issame, (0, 1)).all():
        raise PairsFormatError("%s: issame_list holds values other than 0/1" % path)
    issame = issame.astype(bool)
    if not isinstance(bins, (list, tuple)) or len(bins) != 2 * len(issame):
        n = len(bins) if isinstance(bins, (list, tuple)) else type(bins).__name__
        raise PairsFormatError("%s: expected %d images for %d pairs, got %s"
                               % (path, 2 * len(issame), len(issame), n))
    images = []
    for i, item in enumerate(bins):
        if isinstance(item, np.ndarray) and item.ndim == 3 and item.dtype == np.uint8:
            image = item  # some converters store decoded HWC arrays
            if not decode:
                image = encode_image(image, "png")
        else:
            buf = _as_bytes(item)
            if buf is None:
                raise PairsFormatError("%s: image %d is a %s, not encoded image bytes"
                                       % (path, i, type(item).__name__))
            if not decode:
                images.append(buf)
                continue
            try:
                image = decode_image(buf)
            except ValueError as err:
                raise PairsFormatError("%s: image %d: %s" % (path, i, err)) from None
        if image_size is not None and decode:
            size = (image_size, image_size) if isinstance(image_size, int) else image_size
            image = resize_image(image, size)
        images.append(image)
    if not decode:
        return images, issame
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise PairsFormatError("%s: images have different sizes (%s); pass image_size to "
                               "resize them" % (path, ", ".join(
                                   "%dx%d" % s[:2] for s in sorted(shapes)[:3])))
    if not images:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8), issame
    return np.stack(images), issame


def write_bin(path, images, issame, fmt="jpg", quality=95):
    """Write a verification ``.bin`` (atomically).

    Parameters
    ----------
    path : str
    images : sequence
        ``2P`` items, each encoded JPEG/PNG bytes (stored unchanged) or an
        (H, W, 3) uint8 RGB array (encoded with ``fmt``).
    issame : sequence of bool
        ``P`` flags.
    fmt : {'jpg', 'png'}
        Encoding of array images.
    quality : int
        JPEG quality.
    """
    issame = [bool(x) for x in issame]
    images = list(images)
    if len(images) != 2 * len(issame):
        raise ValueError("%s: %d images for %d pairs; need exactly 2 per pair"
                         % (path, len(images), len(issame)))
    bins = []
    for i, item in enumerate(images):
        if isinstance(item, (bytes, bytearray)):
            if encoded_format(item) is None:
                decode_image(item)  # anything else must at least decode
            bins.append(bytes(item))
        else:
            try:
                bins.append(encode_image(np.asarray(item), fmt, quality))
            except ValueError as err:
                raise ValueError("%s: image %d: %s" % (path, i, err)) from None
    with atomic_open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)
    return path


# --------------------------------------------------------------------------- pairs lists

_TRUE = {"1", "true", "same", "yes", "y", "t"}
_FALSE = {"0", "false", "diff", "different", "no", "n", "f", "-1"}


def _is_int(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


def _lfw_path(image_dir, name, number, ext):
    base = os.path.join(image_dir, name, "%s_%04d" % (name, int(number)))
    for e in (ext,) + tuple(x for x in (".jpg", ".png", ".jpeg") if x != ext):
        if os.path.isfile(base + e):
            return base + e
    return base + ext


def read_pairs(pairs_path, image_dir, fmt="auto", ext=".jpg"):
    """Parse a pairs list into ``[(path_a, path_b, issame), ...]``.

    Two formats:

    ``lfw``
        LFW's ``pairs.txt``: an optional header line of one or two integers
        (folds, pairs per fold), then ``name n`` ``m`` lines (same person,
        images ``name/name_000n.jpg`` and ``name/name_000m.jpg``) and
        ``name1 n name2 m`` lines (different people).
    ``plain``
        ``path_a path_b label`` per line, paths relative to ``image_dir``,
        label ``1/0``, ``true/false`` or ``same/diff``.

    ``auto`` picks per line by its shape.  Blank lines and ``#`` comments are
    skipped.  Every named file must exist.

    Raises
    ------
    PairsFormatError
        Unparseable line or a missing image (names the list, the line and the path).
    """
    if fmt not in ("auto", "lfw", "plain"):
        raise ValueError("pairs format must be 'auto', 'lfw' or 'plain', not %r" % fmt)
    pairs_path = os.fspath(pairs_path)
    image_dir = os.fspath(image_dir)
    ext = ext if ext.startswith(".") else "." + ext
    pairs = []
    with open(pairs_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    first = True
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        is_first, first = first, False
        fields = text.split("\t") if "\t" in text else text.split()
        fields = [x.strip() for x in fields]
        n = len(fields)
        where = "%s: line %d" % (pairs_path, lineno)
        if fmt != "plain" and is_first and n <= 2 and all(_is_int(x) for x in fields):
            continue  # LFW header: folds [pairs per fold]
        if fmt != "plain" and n == 3 and _is_int(fields[1]) and _is_int(fields[2]):
            a = _lfw_path(image_dir, fields[0], fields[1], ext)
            b = _lfw_path(image_dir, fields[0], fields[2], ext)
            same = True
        elif fmt != "plain" and n == 4 and _is_int(fields[1]) and _is_int(fields[3]):
            a = _lfw_path(image_dir, fields[0], fields[1], ext)
            b = _lfw_path(image_dir, fields[2], fields[3], ext)
            same = False
        elif fmt != "lfw" and n == 3 and fields[2].lower() in (_TRUE | _FALSE):
            a = os.path.join(image_dir, fields[0])
            b = os.path.join(image_dir, fields[1])
            same = fields[2].lower() in _TRUE
        else:
            raise PairsFormatError("%s: cannot parse %r as a %s pair" % (
                where, text[:60], {"auto": "LFW or plain", "lfw": "LFW", "plain": "plain"}[fmt]))
        for p in (a, b):
            if not os.path.isfile(p):
                raise PairsFormatError("%s: image not found: %s" % (where, p))
        pairs.append((a, b, same))
    if not pairs:
        raise PairsFormatError("%s: no pairs found" % pairs_path)
    return pairs


def make_bin(image_dir, pairs_path, out_path, fmt="auto", ext=".jpg", image_size=None,
             progress=None):
    """Build a verification ``.bin`` from an image folder and a pairs list.

    JPEG/PNG files are stored byte for byte unless ``image_size`` asks for a
    resize (then they are re-encoded as JPEG, quality 95); every image is
    decoded once to check it.

    Parameters
    ----------
    image_dir : str
    pairs_path : str
        See :func:`read_pairs`.
    out_path : str
    fmt : {'auto', 'lfw', 'plain'}
    ext : str
        Extension of LFW-style image names.
    image_size : int or (int, int), optional
        Resize to this (H, W).
    progress : callable, optional
        ``progress(iterable, total)`` -> iterable.

    Returns
    -------
    dict
        ``path``, ``pairs``, ``same`` (count of same-identity pairs).
    """
    if not os.path.isdir(image_dir):
        raise FileNotFoundError("%s: image folder not found" % os.fspath(image_dir))
    if not os.path.isfile(pairs_path):
        raise FileNotFoundError("%s: pairs list not found" % os.fspath(pairs_path))
    pairs = read_pairs(pairs_path, image_dir, fmt, ext)
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    paths = [p for a, b, _ in pairs for p in (a, b)]
    cache = {}
    bins = []
    it = paths if progress is None else progress(paths, len(paths))
    for p in it:
        if p not in cache:
            with open(p, "rb") as f:
                raw = f.read()
            try:
                image = decode_image(raw)
            except ValueError as err:
                raise PairsFormatError("%s: unreadable image: %s" % (p, err)) from None
            if encoded_format(raw) is None or (size is not None and image.shape[:2] != size):
                if size is not None:
                    image = resize_image(image, size)
                raw = encode_image(image, "jpg", 95)
            cache[p] = raw
        bins.append(cache[p])
    issame = [s for _, _, s in pairs]
    write_bin(out_path, bins, issame)
    return {"path": os.fspath(out_path), "pairs": len(pairs), "same": int(sum(issame))}


def balanced_pairs(groups, num_pairs, rng, nfolds=10):
    """Distinct verification pairs, half same-identity, balanced per fold.

    Parameters
    ----------
    groups : list of numpy.ndarray
        Image indices of each identity (identities with one image only give
        different-identity pairs).
    num_pairs : int
        Multiple of ``2 * nfolds``.
    rng : numpy.random.Generator

    Returns
    -------
    pairs : numpy.ndarray
        (num_pairs, 2) image indices.
    issame : numpy.ndarray
        (num_pairs,) bool; each of the ``nfolds`` contiguous blocks holds as many
        same as different pairs, shuffled within the block.
    """
    if num_pairs % (2 * nfolds):
        raise ValueError("num_pairs must be a multiple of %d" % (2 * nfolds))
    half = num_pairs // 2
    multi = [g for g in groups if len(g) >= 2]
    available = sum(len(g) * (len(g) - 1) // 2 for g in multi)
    if available < half:
        raise ValueError("only %d distinct same-identity pairs for %d asked" % (available, half))
    seen = set()
    same, diff = [], []
    while len(same) < half:
        g = multi[int(rng.integers(len(multi)))]
        a, b = (int(v) for v in rng.choice(g, size=2, replace=False))
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            same.append(key)
    while len(diff) < half:
        ga, gb = rng.choice(len(groups), size=2, replace=False)
        a, b = int(rng.choice(groups[ga])), int(rng.choice(groups[gb]))
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            diff.append(key)
    per_fold = half // nfolds
    pairs, issame = [], []
    for fold in range(nfolds):
        block = [(p, True) for p in same[fold * per_fold:(fold + 1) * per_fold]]
        block += [(p, False) for p in diff[fold * per_fold:(fold + 1) * per_fold]]
        for i in rng.permutation(len(block)):
            pairs.append(block[i][0])
            issame.append(block[i][1])
    return np.array(pairs, dtype=np.int64), np.array(issame, dtype=bool)
