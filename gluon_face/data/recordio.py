"""MXNet RecordIO face datasets: reader, writer and folder packer.

Two layouts are read:

**insightface** (``train.rec`` + ``train.idx`` + ``property``)::

    record 0          header, flag 2, label [N + 1, N + C + 1], empty image
    records 1..N      encoded images, label = identity (float32)
    records N+1..N+C  one per identity c: label [start, end) of its image records,
                      empty image
    property          one line "C,H,W"
    labels.txt        optional: C lines "label<TAB>name", labels 0..C-1 in order, UTF-8

``property`` and ``labels.txt`` sit in the folder of the ``.rec`` (insightface
reads one ``property`` per folder; ``labels.txt`` follows it).  ``labels.txt``
is ours, not insightface's: it keeps the name of each identity, which the
record file itself does not hold.  :func:`pack_folder` writes the identity
folder names there; without the file labels are just numbers, as before.  Its
line count must equal the class count, so a name may not be empty or hold a
tab or any character that ``str.splitlines`` breaks lines at.

**plain im2rec** (``tools/im2rec.py`` of MXNet): every key in the ``.idx`` is an
image whose label is a float or a vector (the first entry is the class).  No
``property`` is needed; without one ``num_classes`` is ``max label + 1``, found by
scanning every record header once.

Labels travel as float32 in the record header: integers are exact only up to
:math:`2^{24} = 16\\,777\\,216`, which bounds both the number of identities and
(because the identity ranges are float32 too) the number of records of an
insightface-layout file.  The writer refuses files beyond that.

The reader parses the RecordIO container itself (the dmlc format: a 4-byte
magic ``0xced7230a``, a 4-byte length word whose top 3 bits say whether the
record continues, the payload padded to 4 bytes), so it can name the broken
record in its errors, read only the 32-byte header when scanning labels, and
reopen itself in every DataLoader worker.  The writer uses MXNet's own
``mx.recordio.MXIndexedRecordIO``, so what we write is by construction what MXNet
reads.
"""
import contextlib
import os
import struct
import sys

import numpy as np

from .._io import atomic_path
from ._image import (
    IMAGE_EXTENSIONS,
    decode_image,
    encode_image,
    encoded_format,
    encoded_image_size,
    resize_image,
)

__all__ = ["RecordFormatError", "IndexedRecordReader", "FaceRecordDataset", "FaceRecordWriter",
           "write_face_rec", "pack_folder", "read_property", "read_labels", "unpack_header",
           "set_files", "existing_set", "MAX_FLOAT_LABEL", "LABELS_FILE", "MAX_PIXELS"]

_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", _MAGIC)
_LEN_MASK = (1 << 29) - 1
_IR_FORMAT = "<IfQQ"  # flag, label, id, id2 -- mx.recordio.IRHeader
_IR_SIZE = struct.calcsize(_IR_FORMAT)

MAX_FLOAT_LABEL = 1 << 24
"""Largest integer range that float32 labels hold exactly (2**24)."""

LABELS_FILE = "labels.txt"
"""Name of the label -> identity name file, in the folder of ``property``."""

MAX_PIXELS = 40_000_000
"""Default pixel limit of :func:`pack_folder` (an 8000 x 5000 photo; a face crop is ~12 544)."""


class RecordFormatError(ValueError):
    """A record file, its index, its property file or its labels.txt is malformed.

    The message starts with the offending file (and record key when known).
    """


def _fail(path, what, key=None):
    where = os.fspath(path) if key is None else "%s: record %s" % (os.fspath(path), key)
    return RecordFormatError("%s: %s" % (where, what))


# --------------------------------------------------------------------------- low level


def read_index(idx_path):
    """Parse an MXNet ``.idx`` file (``key<TAB>offset`` lines).

    Returns
    -------
    keys : list of int
        In file order.
    offsets : dict
        key -> byte offset of the record in the ``.rec``.
    """
    keys, offsets = [], {}
    with open(idx_path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError
                key, off = int(parts[0]), int(parts[1])
                if off < 0:
                    raise ValueError
            except ValueError:
                raise _fail(idx_path, "line %d: expected 'key<TAB>offset', got %r"
                            % (lineno, line.strip()[:60])) from None
            if key in offsets:
                raise _fail(idx_path, "line %d: key %d appears twice" % (lineno, key))
            keys.append(key)
            offsets[key] = off
    return keys, offsets


def unpack_header(payload, path="<record>", key=None):
    """Split a record payload into ``(flag, label, id, id2)`` and the image bytes.

    Mirrors ``mx.recordio.unpack``: when ``flag > 0`` the label is a float32
    vector of ``flag`` entries stored in front of the image.

    Returns
    -------
    header : tuple
        ``(flag, label, id, id2)``; ``label`` is a float, or a float32 numpy
        vector when ``flag > 0``.
    image : bytes
        The (possibly empty) encoded image.
    """
    if len(payload) < _IR_SIZE:
        raise _fail(path, "%d bytes is too short for an image record header" % len(payload), key)
    flag, label, rid, rid2 = struct.unpack(_IR_FORMAT, payload[:_IR_SIZE])
    body = payload[_IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise _fail(path, "header announces %d labels but the record has %d bytes left"
                        % (flag, len(body)), key)
        label = np.frombuffer(body[:4 * flag], dtype="<f4").astype(np.float32)
        body = body[4 * flag:]
    return (flag, label, rid, rid2), body


class IndexedRecordReader:
    """Random access to a RecordIO file through its ``.idx``.

    A pure-Python reader of the dmlc RecordIO container, compatible with
    ``mx.recordio.MXIndexedRecordIO``.  It can be pickled and used from several
    processes: the file is (re)opened lazily in each process.

    Parameters
    ----------
    rec_path : str
        The ``.rec`` file.
    idx_path : str, optional
        Its index; default: ``rec_path`` with ``.idx`` for ``.rec``.
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = os.fspath(rec_path)
        if idx_path is None:
            idx_path = os.path.splitext(self.rec_path)[0] + ".idx"
        self.idx_path = os.fspath(idx_path)
        if not os.path.isfile(self.rec_path):
            raise FileNotFoundError("%s: record file not found" % self.rec_path)
        if not os.path.isfile(self.idx_path):
            raise FileNotFoundError("%s: index file not found (needed beside %s)"
                                    % (self.idx_path, os.path.basename(self.rec_path)))
        self.keys, self.offsets = read_index(self.idx_path)
        if not self.keys:
            raise _fail(self.idx_path, "index is empty")
        self.size = os.path.getsize(self.rec_path)
        bad = [k for k in self.keys if self.offsets[k] + 8 > self.size]
        if bad:
            raise _fail(self.rec_path, "file is truncated: %d bytes, but the index places "
                        "record %d at byte %d" % (self.size, bad[0], self.offsets[bad[0]]))
        self._fd = None
        self._pid = None

    # Pickling drops the OS handle; each process opens its own.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = None
        state["_pid"] = None
        return state

    def _handle(self):
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            self._fd = open(self.rec_path, "rb")  # noqa: SIM115 - kept open for random access
            self._pid = pid
        return self._fd

    def close(self):
        """Close the file handle (reopened on the next read)."""
        if self._fd is not None and self._pid == os.getpid():
            self._fd.close()
        self._fd = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def _pread(self, pos, n):
        f = self._handle()
        if hasattr(os, "pread"):
            return os.pread(f.fileno(), n, pos)
        f.seek(pos)  # pragma: no cover - Windows
        return f.read(n)  # pragma: no cover

    def _offset(self, key):
        try:
            return self.offsets[key]
        except KeyError:
            raise _fail(self.idx_path, "no record with key %r" % (key,)) from None

    def read(self, key, max_bytes=None):
        """The payload of record ``key`` (bytes).

        Parameters
        ----------
        key : int
        max_bytes : int, optional
            Stop after this many bytes of the first chunk (used to read only the
            header); the result may then be shorter than the record.
        """
        pos = self._offset(key)
        chunks = []
        first = True
        while True:
            head = self._pread(pos, 8)
            if len(head) < 8:
                raise _fail(self.rec_path, "file is truncated at byte %d" % pos, key)
            magic, lrec = struct.unpack("<II", head)
            if magic != _MAGIC:
                raise _fail(self.rec_path, "bad magic number at byte %d (corrupted file, or an "
                            ".idx that belongs to another .rec)" % pos, key)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                raise _fail(self.rec_path, "bad continuation flag %d at byte %d" % (cflag, pos),
                            key)
            want = length if max_bytes is None else min(length, max_bytes)
            data = self._pread(pos + 8, want)
            if len(data) < want:
                raise _fail(self.rec_path, "file is truncated: record needs %d bytes at byte %d, "
                            "%d left" % (length, pos + 8, len(data)), key)
            chunks.append(data)
            if cflag in (0, 3) or max_bytes is not None and want < length:
                break
            # dmlc splits a record where its payload contains the magic word, and
            # drops that word; put it back.
            chunks.append(_MAGIC_BYTES)
            pos += 8 + ((length + 3) & ~3)
            first = False
        return b"".join(chunks)

    def read_header(self, key):
        """``(flag, label, id, id2)`` of record ``key`` without reading its image."""
        payload = self.read(key, max_bytes=_IR_SIZE + 4 * 8)
        flag = struct.unpack("<I", payload[:4])[0] if len(payload) >= 4 else 0
        if flag > 8:  # long label vector: read what it needs
            payload = self.read(key, max_bytes=_IR_SIZE + 4 * flag)
        return unpack_header(payload, self.rec_path, key)[0]


# --------------------------------------------------------------------------- property


def read_property(path):
    """Parse an insightface ``property`` file: one line ``num_classes,height,width``.

    Returns
    -------
    (num_classes, height, width) : tuple of int
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except UnicodeDecodeError:
        raise _fail(path, "malformed property: not text") from None
    fields = [t.strip() for t in text.split(",")]
    try:
        if len(fields) != 3:
            raise ValueError
        values = tuple(int(t) for t in fields)
        if min(values) <= 0:
            raise ValueError
    except ValueError:
        raise _fail(path, "malformed property: expected 'num_classes,height,width' (positive "
                    "integers), got %r" % text[:60]) from None
    return values


def _name_problem(name):
    """Why ``name`` cannot be one field of a line of ``labels.txt``, or None."""
    if not isinstance(name, str):
        return "is not a str (%s)" % type(name).__name__
    if not name:
        return "is empty"
    if "\t" in name:
        return "holds a tab"
    # Anything str.splitlines breaks at would split the line when read back.
    for ch in name:
        if len(("a" + ch + "a").splitlines()) > 1:
            return "holds a line break (%r)" % ch
    return None


def _labels_path_beside(path):
    """``labels.txt`` in the folder of ``path`` (a prefix or a record file)."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(path))), LABELS_FILE)


def read_labels(path, num_classes=None, property_path=None):
    """Parse a ``labels.txt`` file: one ``label<TAB>name`` line per label.

    Labels must run ``0, 1, 2, ...`` in file order; a name is the rest of the
    line after the first tab (kept as is, spaces included) and may not be empty
    or hold a tab or line break.  The file is UTF-8 (a byte-order mark is
    ignored); a missing final newline is accepted.

    Parameters
    ----------
    path : str
    num_classes : int, optional
        Class count the file must match (one line per class).
    property_path : str, optional
        Where ``num_classes`` comes from, named in the mismatch error.

    Returns
    -------
    list of str
        ``names[label]``.

    Raises
    ------
    FileNotFoundError
        No such file.
    RecordFormatError
        A malformed line (named by number), or a line count that differs from
        ``num_classes``.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise _fail(path, "not UTF-8 text (byte %d)" % err.start) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    names = []
    for lineno, line in enumerate(lines, 1):
        if line.endswith("\r"):  # written on Windows; names never hold a CR
            line = line[:-1]
        field, tab, name = line.partition("\t")
        if not tab:
            raise _fail(path, "line %d: expected 'label<TAB>name', got %r" % (lineno, line[:60]))
        if not (field.isascii() and field.isdigit()):
            raise _fail(path, "line %d: label %r is not a non-negative integer"
                        % (lineno, field[:20]))
        label, expected = int(field), len(names)
        if label < expected:
            raise _fail(path, "line %d: label %d appears twice (first on line %d)"
                        % (lineno, label, label + 1))
        if label != expected:
            raise _fail(path, "line %d: labels must run 0, 1, 2, ... in order; expected %d, "
                        "got %d" % (lineno, expected, label))
        problem = _name_problem(name)
        if problem is not None:
            raise _fail(path, "line %d: name of label %d %s" % (lineno, label, problem))
        names.append(name)
    if num_classes is not None and len(names) != int(num_classes):
        if property_path is not None:
            raise _fail(path, "%d labels, but %s says %d classes"
                        % (len(names), os.fspath(property_path), num_classes))
        raise _fail(path, "%d labels, expected %d classes" % (len(names), num_classes))
    return names


def _label_of(label, path, key):
    """Class index from a float or vector label; error unless a whole number."""
    if isinstance(label, np.ndarray) and label.size == 0:
        raise _fail(path, "empty label vector", key)
    value = float(label[0]) if isinstance(label, np.ndarray) else float(label)
    if not np.isfinite(value) or value != int(value):
        raise _fail(path, "label %r is not a whole number" % value, key)
    return int(value)


# --------------------------------------------------------------------------- dataset


def _folder_record(folder):
    """The record file of a data folder: ``train.rec``, else its only ``.rec``."""
    train = os.path.join(folder, "train.rec")
    if os.path.isfile(train):
        return train
    recs = sorted(f for f in os.listdir(folder) if f.endswith(".rec"))
    if len(recs) == 1:
        return os.path.join(folder, recs[0])
    # the error names train.rec, the conventional name
    return train

try:
    from mxnet.gluon.data import Dataset as _Dataset
except ImportError:  # pragma: no cover - the package needs mxnet anyway
    _Dataset = object


class FaceRecordDataset(_Dataset):
    """A Gluon ``Dataset`` over an insightface-layout or plain im2rec ``.rec`` file.

    ``ds[i]`` is ``(image, label)``: image an (H, W, 3) uint8 RGB
    ``numpy.ndarray``, label a Python ``int`` in ``[0, num_classes)``.
    ``len(ds)`` counts images only (never the header or identity records).
    Safe to use with ``gluon.data.DataLoader(num_workers > 0)``: every worker
    reopens the file.

    Parameters
    ----------
    rec_path : str
        The ``.rec`` file, or a folder holding ``train.rec`` (or, without one,
        exactly one other ``.rec``).  The index is
        ``<same name>.idx``; the optional ``property`` and ``labels.txt`` files
        sit in the same folder (insightface's convention, so one property per
        folder).
    idx_path : str, optional
        Explicit index path.

    Attributes
    ----------
    layout : str
        ``'insightface'`` or ``'im2rec'``.
    num_classes : int
    num_classes_source : str
        ``'property'`` or ``'max label + 1'`` (plain files without property).
    image_size : tuple of int or None
        (H, W) from ``property``; without one, the size of the first image.
    image_keys : numpy.ndarray
        Record key of each image, in dataset order.
    identity_ranges : numpy.ndarray or None
        (C, 2) ``[start, end)`` record keys per identity (insightface layout).
    labels_path : str or None
        The ``labels.txt`` beside the record file, None when the folder has none.
    label_names : list of str or None
        ``label_names[label]`` is the identity's name, from ``labels.txt``
        (read and checked when the dataset is opened); None without that file.
        See :meth:`label_name`.

    Raises
    ------
    FileNotFoundError
        Missing ``.rec`` or ``.idx``.
    RecordFormatError
        Truncated/corrupted file, malformed index, property or ``labels.txt``,
        missing property for an insightface-layout file, identity records beyond
        the property's class count, a ``labels.txt`` whose line count differs
        from ``num_classes`` (the property's count, or ``max label + 1``
        without property).  The first image is decoded and the last image's
        label read at open, so a first image that does not decode or whose size
        differs from the property's, or a last label outside
        ``[0, num_classes)``, fails here.  Reading any other record that is not
        a decodable image or whose label is outside ``[0, num_classes)`` raises
        it from ``ds[i]``, naming the file and the record.
    """

    def __init__(self, rec_path, idx_path=None):
        rec_path = os.fspath(rec_path)
        if os.path.isdir(rec_path):
            rec_path = _folder_record(rec_path)
        self.rec_path = rec_path
        self.reader = IndexedRecordReader(rec_path, idx_path)
        self.idx_path = self.reader.idx_path
        prop = os.path.join(os.path.dirname(os.path.abspath(rec_path)), "property")
        self.property_path = prop if os.path.isfile(prop) else None
        # A truncated tail shows up here rather than mid-epoch.
        last = max(self.reader.keys, key=lambda k: self.reader.offsets[k])
        self.reader.read(last)

        self.identity_ranges = None
        header0 = None
        if 0 in self.reader.offsets:
            (flag, label, _, _), body = unpack_header(self.reader.read(0), rec_path, 0)
            if flag >= 2 and not body:
                header0 = label
        if header0 is not None:
            self._open_insightface(header0)
        else:
            self._open_im2rec()
        self._open_labels()
        self._check_ends()

    # -- layouts

    def _open_insightface(self, header0):
        path = self.rec_path
        self.layout = "insightface"
        first_id, end = int(header0[0]), int(header0[1])
        if first_id < 1 or end < first_id:
            raise _fail(path, "header range [%d, %d) is not a valid identity range"
                        % (first_id, end), 0)
        missing = [k for k in range(1, end) if k not in self.reader.offsets]
        if missing:
            raise _fail(self.idx_path, "the header says records 1..%d exist, but key %d is "
                        "missing from the index" % (end - 1, missing[0]))
        self.image_keys = np.arange(1, first_id, dtype=np.int64)
        ranges = []
        for key in range(first_id, end):
            (flag, label, _, _), body = unpack_header(self.reader.read(key), path, key)
            if flag < 2 or body:
                raise _fail(path, "expected an identity record (flag 2, empty image)", key)
            start, stop = int(label[0]), int(label[1])
            if not 1 <= start <= stop <= first_id:
                raise _fail(path, "identity range [%d, %d) lies outside the image records "
                            "1..%d" % (start, stop, first_id - 1), key)
            ranges.append((start, stop))
        self.identity_ranges = np.array(ranges, dtype=np.int64).reshape(-1, 2)
        if self.property_path is None:
            raise FileNotFoundError(
                "%s: property file not found (an insightface-layout .rec needs "
                "'num_classes,height,width' in 'property' beside it)"
                % os.path.join(os.path.dirname(os.path.abspath(path)), "property"))
        self.num_classes, h, w = read_property(self.property_path)
        self.num_classes_source = "property"
        self.image_size = (h, w)
        if len(ranges) > self.num_classes:
            raise _fail(self.property_path, "says %d classes, but %s has %d identity records"
                        % (self.num_classes, os.path.basename(path), len(ranges)))

    def _open_im2rec(self):
        self.layout = "im2rec"
        self.image_keys = np.array(self.reader.keys, dtype=np.int64)
        if self.property_path is not None:
            self.num_classes, h, w = read_property(self.property_path)
            self.num_classes_source = "property"
            self.image_size = (h, w)
        else:
            labels = self.labels()
            if labels.size and labels.min() < 0:
                i = int(np.argmin(labels))
                raise _fail(self.rec_path, "negative label %d" % labels[i],
                            int(self.image_keys[i]))
            self.num_classes = int(labels.max()) + 1 if labels.size else 0
            self.num_classes_source = "max label + 1"
            self.image_size = self[0][0].shape[:2] if len(self) else None

    def _open_labels(self):
        path = _labels_path_beside(self.rec_path)
        if not os.path.isfile(path):
            self.labels_path = None
            self.label_names = None
            return
        self.labels_path = path
        if self.property_path is not None:
            self.label_names = read_labels(path, self.num_classes, self.property_path)
            return
        names = read_labels(path)
        if len(names) != self.num_classes:
            raise _fail(path, "%d labels, but %s has %d classes (max label + 1; no property)"
                        % (len(names), self.rec_path, self.num_classes))
        self.label_names = names

    def _check_ends(self):
        """Decode the first image and read the last label, so that a property that does
        not describe the records fails at open rather than mid-epoch: images of another
        size than the property's, a corrupt first image, labels beyond its class count
        (the last image holds the largest label in insightface's layout).  Other records
        are checked when they are read."""
        if not len(self):
            return
        image, _ = self[0]
        if self.property_path is not None and tuple(image.shape[:2]) != tuple(self.image_size):
            raise _fail(self.rec_path, "image is %dx%d (HxW), but %s says %dx%d"
                        % (*image.shape[:2], self.property_path, *self.image_size),
                        int(self.image_keys[0]))
        self.label_of(len(self) - 1)

    # -- access

    def __len__(self):
        return int(self.image_keys.shape[0])

    def _key(self, idx):
        n = len(self)
        idx = int(idx)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError("index %d out of range for %d images" % (idx, n))
        return int(self.image_keys[idx])

    def _check_label(self, label, key):
        label = _label_of(label, self.rec_path, key)
        num_classes = getattr(self, "num_classes", None)
        if num_classes is not None and not 0 <= label < num_classes:
            src = self.property_path or self.rec_path
            raise _fail(self.rec_path, "label %d is outside [0, %d) (class count from %s)"
                        % (label, num_classes, os.path.basename(src)), key)
        return label

    def read_record(self, idx):
        """``(encoded image bytes, label)`` of image ``idx`` without decoding."""
        key = self._key(idx)
        (flag, label, _, _), body = unpack_header(self.reader.read(key), self.rec_path, key)
        if not body:
            raise _fail(self.rec_path, "not an image (empty payload)", key)
        return body, self._check_label(label, key)

    def __getitem__(self, idx):
        return self.get(idx)

    def get(self, idx, strict=False):
        """``ds[idx]``; with ``strict``, an image the decoder only recovered from is refused.

        ``strict`` catches damage that libjpeg repairs with a warning on stderr
        (``Corrupt JPEG data: premature end of data segment``); it redirects the
        process's stderr while decoding, so it is for single-threaded scans
        (``inspect_rec --check``), not for data loaders.  See
        :func:`~gluon_face.data._image.decode_image`.

        Raises
        ------
        RecordFormatError
            Naming the file and the record.
        """
        body, label = self.read_record(idx)
        try:
            image = decode_image(body, strict=strict)
        except ValueError as err:
            raise _fail(self.rec_path, "not an image: %s" % err, self._key(idx)) from None
        return image, label

    def label_of(self, idx):
        """Label of image ``idx``, reading only its record header."""
        key = self._key(idx)
        return self._check_label(self.reader.read_header(key)[1], key)

    def label_name(self, label):
        """Name of class ``label`` from ``labels.txt``; ``str(label)`` without that file.

        Raises
        ------
        IndexError
            ``label`` outside ``[0, num_classes)``.
        ValueError
            ``label`` is not a whole number.
        """
        value = int(label)
        if value != label:
            raise ValueError("label %r is not a whole number" % (label,))
        if not 0 <= value < self.num_classes:
            raise IndexError("label %d is outside [0, %d)" % (value, self.num_classes))
        if self.label_names is None:
            return str(value)
        return self.label_names[value]

    def labels(self):
        """Every image's label (int64, dataset order), from the record headers only.

        Values are not range-checked here, so a scan can report bad labels.
        """
        out = np.empty(len(self), dtype=np.int64)
        for i, key in enumerate(self.image_keys):
            out[i] = _label_of(self.reader.read_header(int(key))[1], self.rec_path, int(key))
        return out

    def __repr__(self):
        return ("FaceRecordDataset(%r, layout=%s, images=%d, num_classes=%s, image_size=%s)"
                % (self.rec_path, self.layout, len(self), self.num_classes, self.image_size))


# --------------------------------------------------------------------------- writer


def _split_prefix(prefix):
    prefix = os.fspath(prefix)
    if prefix.endswith(".rec") or prefix.endswith(".idx"):
        prefix = prefix[:-4]
    return prefix



def _open_record_writer(mx, idx_path, rec_path):
    """``MXIndexedRecordIO(idx_path, rec_path, 'w')`` that a signal cannot leave half-built.

    MXNet sets ``is_open`` only part-way through the constructor, and its
    ``__del__`` reads it: a Ctrl-C or SIGTERM landing before that point made the
    garbage collector print a traceback under our one-line message.  Setting it
    first lets ``__del__`` of an unfinished writer return quietly.
    """
    record = mx.recordio.MXIndexedRecordIO.__new__(mx.recordio.MXIndexedRecordIO)
    record.is_open = False
    record.__init__(idx_path, rec_path, "w")
    return record

class FaceRecordWriter:
    """Write an insightface-layout ``.rec`` / ``.idx`` / ``property`` atomically.

    Use as a context manager and call :meth:`add` with images grouped by
    identity, labels ``0, 1, ..., C-1`` in non-decreasing order.  Images go to
    records ``1..N``, then one identity record per class, and the header record
    (key 0) is written last, as insightface's own packer does; the ``.idx``
    maps key 0 to it.  Everything is written under temporary names and renamed
    into place when the block ends without an exception (the ``.rec`` last), so
    an interrupted run leaves no file that looks valid.

    With ``names`` it also writes ``dirname(prefix)/labels.txt``, one
    ``label<TAB>name`` line per class.  Without, it removes a ``labels.txt``
    left in that folder by an earlier set, which would disagree with the new
    ``property``.

    Parameters
    ----------
    prefix : str
        Output prefix: writes ``prefix.rec``, ``prefix.idx`` and
        ``dirname(prefix)/property``.
    image_size : (int, int)
        (H, W) for the property file.
    names : sequence of str, optional
        Name of each label, ``names[c]`` for class ``c``; their number must
        equal the number of classes written.

    Attributes
    ----------
    names : list of str or None
        The names given.
    labels_path : str or None
        The ``labels.txt`` written, None without ``names``.

    Raises
    ------
    ValueError
        A name is empty or holds a tab or line break (at construction, before
        any file is made); at the end, ``len(names)`` differs from the number
        of classes written.
    """

    def __init__(self, prefix, image_size, names=None):
        prefix = _split_prefix(prefix)
        self.rec_path = prefix + ".rec"
        self.idx_path = prefix + ".idx"
        self.property_path = os.path.join(os.path.dirname(os.path.abspath(prefix)), "property")
        self._labels_file = _labels_path_beside(prefix)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.names = None
        if names is not None:
            if isinstance(names, (str, bytes)):
                raise TypeError("%s: names must be a sequence of str (one per label), not a "
                                "single %s" % (self._labels_file, type(names).__name__))
            self.names = list(names)
            for label, name in enumerate(self.names):
                problem = _name_problem(name)
                if problem is not None:
                    raise ValueError("%s: label %d: name %r %s; each label needs one "
                                     "'label<TAB>name' line" % (self._labels_file, label, name,
                                                                problem))
        self._stack = None
        self._record = None
        self._ranges = []
        self._count = 0

    def __enter__(self):
        import mxnet as mx

        self._mx = mx
        self._stack = contextlib.ExitStack()
        try:
            # Entered rec first so that it is renamed last: the .rec is the commit point.
            self._tmp_rec = self._stack.enter_context(atomic_path(self.rec_path))
            self._tmp_idx = self._stack.enter_context(atomic_path(self.idx_path))
            self._tmp_prop = self._stack.enter_context(atomic_path(self.property_path))
            self._tmp_labels = None
            if self.names is not None:
                self._tmp_labels = self._stack.enter_context(atomic_path(self._labels_file))
            self._record = _open_record_writer(mx, self._tmp_idx, self._tmp_rec)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def add(self, label, image_bytes):
        """Append one encoded image (JPEG/PNG bytes) of identity ``label``."""
        label = int(label)
        expected = len(self._ranges)
        if label == expected - 1:
            pass
        elif label == expected:
            if self.names is not None and label >= len(self.names):
                # Caught here rather than at the end, after the whole set is packed.
                raise ValueError("%s: %d names, but the data has more classes (label %d)"
                                 % (self._labels_file, len(self.names), label))
            self._ranges.append([self._count + 1, self._count + 1])
        else:
            raise ValueError("%s: labels must run 0, 1, 2, ... in order; got %d after %d"
                             % (self.rec_path, label, expected - 1))
        if not image_bytes:
            raise ValueError("%s: empty image for label %d" % (self.rec_path, label))
        key = self._count + 1
        if key + len(self._ranges) >= MAX_FLOAT_LABEL:
            raise ValueError("%s: more than 2**24 records; float32 labels cannot index them"
                             % self.rec_path)
        header = self._mx.recordio.IRHeader(0, float(label), key, 0)
        self._record.write_idx(key, self._mx.recordio.pack(header, bytes(image_bytes)))
        self._count = key
        self._ranges[-1][1] = key + 1

    @property
    def num_images(self):
        return self._count

    @property
    def num_classes(self):
        return len(self._ranges)

    @property
    def labels_path(self):
        return None if self.names is None else self._labels_file

    def _finish(self):
        mx = self._mx
        if self._count == 0:
            raise ValueError("%s: no images to write" % self.rec_path)
        if self.names is not None and len(self.names) != len(self._ranges):
            raise ValueError("%s: %d names, but %d classes were written to %s"
                             % (self._labels_file, len(self.names), len(self._ranges),
                                os.path.basename(self.rec_path)))
        first_id = self._count + 1
        for c, (start, stop) in enumerate(self._ranges):
            key = first_id + c
            header = mx.recordio.IRHeader(0, [float(start), float(stop)], key, 0)
            self._record.write_idx(key, mx.recordio.pack(header, b""))
        end = first_id + len(self._ranges)
        header = mx.recordio.IRHeader(0, [float(first_id), float(end)], 0, 0)
        self._record.write_idx(0, mx.recordio.pack(header, b""))
        self._record.close()
        with open(self._tmp_prop, "w", encoding="ascii") as f:
            f.write("%d,%d,%d\n" % (len(self._ranges), *self.image_size))
        if self.names is not None:
            with open(self._tmp_labels, "w", encoding="utf-8", newline="\n") as f:
                f.writelines("%d\t%s\n" % (c, name) for c, name in enumerate(self.names))
        else:
            # An earlier set's names would be taken for this one's.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._labels_file)
        # An old .rec beside a new .idx would look valid: drop it before renaming.
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.rec_path)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            exc_type, exc, tb = sys.exc_info()
            raise
        finally:
            if self._record is not None:
                self._record.close()
            self._stack.__exit__(exc_type, exc, tb)
        return False


def set_files(prefix):
    """The files of the set at ``prefix``: ``.rec``, ``.idx``, ``property``, ``labels.txt``."""
    prefix = _split_prefix(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    return [prefix + ".rec", prefix + ".idx", os.path.join(folder, "property"),
            os.path.join(folder, LABELS_FILE)]


def existing_set(prefix):
    """What writing a set at ``prefix`` would replace, as one line; None when nothing.

    A folder holds one set's ``property`` (and ``labels.txt``): insightface
    reads one per folder.  So writing ``prefix`` replaces data when

    * ``prefix.rec`` or ``prefix.idx`` exists (the same set, packed again);
    * the folder holds a ``property`` or ``labels.txt``: it describes another
      set (``train.rec`` when packing ``val``), which would be left with the
      new set's class count and names;
    * the folder holds another ``.rec`` (an im2rec file without property),
      which the new ``property`` would describe as well.

    Parameters
    ----------
    prefix : str
        As for :class:`FaceRecordWriter`.

    Returns
    -------
    str or None
        The reason, naming the file; None when the destination is free.
    """
    rec, idx, prop, labels = set_files(prefix)
    folder = os.path.dirname(prop)
    for path in (rec, idx):
        if os.path.exists(path):
            return ("%s already exists: packing the same destination again replaces that set"
                    % path)
    try:
        others = sorted(n for n in os.listdir(folder) if n.endswith(".rec")
                        and os.path.join(folder, n) != os.path.abspath(rec))
    except (FileNotFoundError, NotADirectoryError):  # the writer will say why it cannot
        return None
    owner = "the set %s" % ", ".join(others) if others else "another set (no .rec beside it)"
    for path in (prop, labels):
        if os.path.exists(path):
            return ("%s belongs to %s; a folder holds one set's %s, so %s needs a folder of "
                    "its own" % (path, owner, os.path.basename(path),
                                 os.path.basename(rec)))
    if others:
        return ("%s holds %s, which the new property would describe too; %s needs a folder "
                "of its own" % (folder, ", ".join(others), os.path.basename(rec)))
    return None


def write_face_rec(prefix, samples, image_size, names=None):
    """Write ``(label, encoded_image)`` pairs as an insightface-layout record file.

    Parameters
    ----------
    prefix : str
        Output prefix (``prefix.rec``, ``prefix.idx``, ``dirname/property``).
    samples : iterable of (int, bytes)
        Images grouped by identity, labels ``0..C-1`` in order.
    image_size : (int, int)
        (H, W) written to ``property``.
    names : sequence of str, optional
        One name per label, written to ``dirname/labels.txt`` (see
        :class:`FaceRecordWriter`).

    Returns
    -------
    dict
        ``rec``, ``idx``, ``property`` paths, ``labels`` path (None without
        ``names``), ``num_images``, ``num_classes``, ``image_size``.
    """
    with FaceRecordWriter(prefix, image_size, names=names) as w:
        for label, buf in samples:
            w.add(label, buf)
    return {"rec": w.rec_path, "idx": w.idx_path, "property": w.property_path,
            "labels": w.labels_path, "num_images": w.num_images, "num_classes": w.num_classes,
            "image_size": w.image_size}


def list_identity_folder(src_dir):
    """Identity folders and their image files, sorted by name (the label order).

    Returns
    -------
    list of (str, list of str)
        ``(identity name, [image paths])``; label = position in the list.

    Raises
    ------
    FileNotFoundError
        ``src_dir`` does not exist.
    RecordFormatError
        No identity sub-folder, or one holds no image.
    """
    src_dir = os.fspath(src_dir)
    if not os.path.isdir(src_dir):
        raise FileNotFoundError("%s: source folder not found" % src_dir)
    names = sorted(n for n in os.listdir(src_dir)
                   if not n.startswith(".") and os.path.isdir(os.path.join(src_dir, n)))
    if not names:
        raise _fail(src_dir, "no identity sub-folders (expected one folder per identity)")
    out = []
    for name in names:
        folder = os.path.join(src_dir, name)
        files = sorted(f for f in os.listdir(folder)
                       if not f.startswith(".") and os.path.splitext(f)[1].lower()
                       in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, f)))
        if not files:
            raise _fail(folder, "empty identity folder (no %s files)"
                        % "/".join(e[1:] for e in IMAGE_EXTENSIONS[:3]))
        out.append((name, [os.path.join(folder, f) for f in files]))
    return out


def pack_folder(src_dir, out_prefix, image_size=None, resize=False, encoding=None,
                quality=95, progress=None, max_pixels=MAX_PIXELS):
    """Pack an image folder (one sub-folder per identity) into insightface layout.

    Identities are the sub-folders sorted by name (label = rank), images sorted
    by file name: the output is deterministic.  The folder names go to
    ``labels.txt`` (so a folder name may not hold a tab or line break; this is
    checked before any image is read).  Every image is decoded; its size
    must equal ``image_size`` (or that of the first image when ``image_size`` is
    None) unless ``resize`` is set.  JPEG/PNG files that need no resizing are
    stored byte for byte; anything else is (re-)encoded.

    Parameters
    ----------
    src_dir : str
    out_prefix : str
        Writes ``out_prefix.rec``, ``out_prefix.idx``, ``dirname/property`` and
        ``dirname/labels.txt``.
    image_size : (int, int) or int, optional
        Expected (H, W); an int means square.
    resize : bool
        Resize images of another size to ``image_size`` instead of failing.
    encoding : {None, 'jpg', 'png'}
        Force re-encoding every image in this format; None keeps JPEG/PNG bytes
        and encodes anything else (or resized images) as JPEG.
    quality : int
        JPEG quality when encoding.
    progress : callable, optional
        ``progress(iterable, total)`` -> iterable, e.g. a tqdm wrapper.
    max_pixels : int or None
        Refuse an image of more pixels (H * W) than this, read from its header
        before it is decoded (:data:`MAX_PIXELS` by default; None: no limit).

    Returns
    -------
    dict
        As :func:`write_face_rec`, plus ``identities`` (names in label order).
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if resize and image_size is None:
        raise ValueError("resize=True needs image_size")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError("max_pixels must be >= 1, not %r" % (max_pixels,))
    identities = list_identity_folder(src_dir)
    names = [name for name, _ in identities]
    for label, name in enumerate(names):
        problem = _name_problem(name)
        if problem is not None:
            raise _fail(src_dir, "identity folder %r (label %d) %s, so it cannot be a line of "
                        "%s" % (name, label, problem, LABELS_FILE))
    files = [(label, path) for label, (_, paths) in enumerate(identities) for path in paths]
    expected = tuple(image_size) if image_size is not None else None

    def check_pixels(path, size):
        if size[0] * size[1] > max_pixels:
            raise _fail(path, "image is %dx%d (HxW) = %d pixels, more than the limit of %d"
                        % (size[0], size[1], size[0] * size[1], max_pixels))

    def samples():
        nonlocal expected
        it = files if progress is None else progress(files, len(files))
        for label, path in it:
            with open(path, "rb") as f:
                raw = f.read()
            size = encoded_image_size(raw)
            if max_pixels is not None and size is not None:
                check_pixels(path, size)
            try:
                image = decode_image(raw)
            except ValueError as err:
                raise _fail(path, "unreadable image: %s" % err) from None
            if max_pixels is not None and size is None:  # the header did not say
                check_pixels(path, image.shape[:2])
            if expected is None:
                expected = image.shape[:2]
            fmt = encoded_format(raw)
            if image.shape[:2] != tuple(expected):
                if not resize:
                    raise _fail(path, "image is %dx%d (HxW), expected %dx%d; resize it or "
                                "ask for resizing" % (*image.shape[:2], *expected))
                image = resize_image(image, expected)
                fmt = None
            if encoding is not None or fmt is None:
                raw = encode_image(image, encoding or "jpg", quality)
            yield label, raw

    # image_size is only known after the first image when not given.
    gen = samples()
    first = next(gen)
    with FaceRecordWriter(out_prefix, expected, names=names) as w:
        w.add(*first)
        for label, raw in gen:
            w.add(label, raw)
    return {"rec": w.rec_path, "idx": w.idx_path, "property": w.property_path,
            "labels": w.labels_path, "num_images": w.num_images, "num_classes": w.num_classes,
            "image_size": w.image_size, "identities": names}

