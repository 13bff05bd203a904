"""Verification pairs: .bin round trip, Python 2 pickles, pairs lists, bad input."""
import os
import pickle
import struct

import numpy as np
import pytest

from gluon_face.data import PairsFormatError, load_bin, make_bin, read_pairs, write_bin
from gluon_face.data._image import encode_image


def _py2_pickle(bins, issame):
    """The bytes Python 2's pickle (protocol 2) writes for (list of str, list of bool).

    Python 2 ``str`` is pickled with BINSTRING, which Python 3 only loads as
    ``bytes`` with ``encoding='bytes'``; built by hand from the opcodes.
    """
    out = [b"\x80\x02", b"("]
    for b in bins:
        out.append(b"T" + struct.pack("<i", len(b)) + b)
    out.append(b"l(")
    out.extend(b"\x88" if s else b"\x89" for s in issame)
    out.append(b"l\x86.")
    return b"".join(out)


def test_write_load_round_trip(tmp_path, colour_image):
    images = [colour_image(i // 2, i) for i in range(6)]
    path = write_bin(str(tmp_path / "t.bin"), images, [True, False, True], fmt="png")
    loaded, issame = load_bin(path)
    assert isinstance(loaded, np.ndarray) and loaded.shape == (6, 24, 20, 3)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, np.stack(images))
    assert issame.dtype == bool and issame.tolist() == [True, False, True]
    # stored as insightface does: a pickled (list of bytes, list of bool)
    with open(path, "rb") as f:
        bins, flags = pickle.load(f, encoding="bytes")
    assert all(isinstance(b, bytes) for b in bins) and flags == [True, False, True]
    import mxnet as mx  # insightface decodes each item with mx.image.imdecode (RGB)

    np.testing.assert_array_equal(mx.image.imdecode(bins[3]).asnumpy(), images[3])
    resized, _ = load_bin(path, image_size=16)
    assert resized.shape == (6, 16, 16, 3)
    raw, _ = load_bin(path, decode=False)
    assert raw == bins


def test_reads_python2_pickle(tmp_path, colour_image):
    bins = [encode_image(colour_image(0, i), "jpg") for i in range(4)]
    path = tmp_path / "lfw.bin"
    path.write_bytes(_py2_pickle(bins, [True, False]))
    with open(path, "rb") as f:  # sanity: this is what insightface's Python 3 code does
        assert pickle.load(f, encoding="bytes")[0] == bins
    images, issame = load_bin(str(path))
    assert images.shape == (4, 24, 20, 3) and issame.tolist() == [True, False]
    assert np.abs(images[2].astype(int) - colour_image(0, 2)).mean() < 3


def test_reads_numpy_issame_and_protocol2(tmp_path, colour_image):
    bins = [encode_image(colour_image(1, i), "png") for i in range(2)]
    path = tmp_path / "p2.bin"
    with open(path, "wb") as f:
        pickle.dump((bins, np.array([True])), f, protocol=2)
    images, issame = load_bin(str(path))
    assert issame.tolist() == [True]
    np.testing.assert_array_equal(images[1], colour_image(1, 1))


@pytest.mark.parametrize("content,match", [
    (b"this is not a pickle", "not a verification-pairs pickle"),
    (pickle.dumps({"a": 1}), "not a verification-pairs pickle"),
    (pickle.dumps(([b"x"], [True])), r"expected 2 images for 1 pairs"),
    (pickle.dumps(([1, 2], [True])), r"image 0 is a int"),
    (pickle.dumps(([b"abc", b"def"], [True])), r"image 0: not a decodable image"),
    (pickle.dumps(([], [[1, 2]])), "flat list of booleans"),
    (b"", "not a verification-pairs pickle"),
], ids=["text", "dict", "count", "int-image", "undecodable", "nested-issame", "empty"])
def test_bad_bin(tmp_path, content, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(PairsFormatError, match=r"bad\.bin: .*" + match):
        load_bin(str(path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_hostile_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([_Evil()], [True])))
    with pytest.raises(PairsFormatError, match="refusing to load global"):
        load_bin(str(path))
    assert not os.path.exists("pwned")


# ------------------------------------------------------------ insightface's build_eval_pack.py
def _imencode_jpg(rgb):
    """``cv2.imencode('.jpg', bgr)[1]`` as build_eval_pack.py stores it: uint8, shape (N, 1).

    build_eval_pack.py reads its images with cv2 (BGR) and stores that array as it
    is.  OpenCV 3 and early 4 return it as a column (N, 1); the OpenCV 4.11 of our
    venv returns a flat (N,), so the column is made here (flat arrays are tested
    below).  Without OpenCV the JPEG bytes come from PIL.
    """
    try:
        import cv2
    except ImportError:
        buf = np.frombuffer(encode_image(rgb, "jpg"), dtype=np.uint8)
    else:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]))
        assert ok
    return np.ascontiguousarray(buf.reshape(-1, 1))


def _frombuffer():
    """numpy's protocol-5 array constructor (``numpy.core`` or ``numpy._core``)."""
    return np.zeros(1, np.uint8).__reduce_ex__(5)[0]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_build_eval_pack_files(tmp_path, colour_image, protocol):
    rgb = [colour_image(i // 2, i) for i in range(6)]
    bins = [_imencode_jpg(im) for im in rgb]
    assert bins[0].dtype == np.uint8 and bins[0].ndim == 2 and bins[0].shape[1] == 1
    path = tmp_path / "agedb_30.bin"
    with open(path, "wb") as f:  # as build_eval_pack.py does, at a given protocol
        pickle.dump((bins, [True, False, True]), f, protocol=protocol)
    if protocol == 5:
        assert b"_frombuffer" in path.read_bytes()  # numpy's protocol-5 form is exercised
    images, issame = load_bin(str(path))
    assert images.shape == (6, 24, 20, 3) and issame.tolist() == [True, False, True]
    for got, want in zip(images, rgb):  # RGB out, colours in place (channel 0 bright)
        assert np.abs(got.astype(int) - want).mean() < 3
    raw, _ = load_bin(str(path), decode=False)
    assert raw == [b.tobytes() for b in bins]
    # a (1, N) row and a flat array are encoded images too
    with open(path, "wb") as f:
        pickle.dump(([bins[0].reshape(1, -1), bins[1].ravel()], [True]), f, protocol=protocol)
    assert load_bin(str(path))[0].shape == (2, 24, 20, 3)


class _Reduce:
    """Pickles as ``function(*args)``: hand-made hostile or malformed payloads."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("payload,match", [
    (lambda: _Reduce(os.system, ("touch pwned",)), "refusing to load global"),
    (lambda: _Reduce(_frombuffer(), ("touch pwned", np.dtype(np.uint8), (11,), "C")),
     "refusing _frombuffer of a str"),
    (lambda: _Reduce(_frombuffer(), ([1, 2], np.dtype(np.uint8), (2,), "C")),
     "refusing _frombuffer of a list"),
    (lambda: _Reduce(_frombuffer(), (b"\0" * 8, np.dtype(object), (1,), "C")),
     "refusing _frombuffer with dtype"),
    (lambda: _Reduce(_frombuffer(), (b"\0" * 8, np.dtype(np.uint8), (9,), "C")),
     "does not fit 8 bytes"),
    (lambda: _Reduce(_frombuffer(), (b"\0" * 8, np.dtype(np.uint8), (8,), "K")),
     "refusing _frombuffer with order"),
], ids=["os.system", "str-buffer", "list-buffer", "object-dtype", "short-buffer", "order"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_hostile_or_malformed_frombuffer_is_refused(tmp_path, payload, match, protocol):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([payload()], [True]), protocol=protocol))
    with pytest.raises(PairsFormatError) as info:
        load_bin(str(path))
    message = str(info.value)
    assert message.startswith(str(path) + ": ") and match in message and "\n" not in message
    assert not os.path.exists("pwned")


def test_mixed_sizes_need_image_size(tmp_path, colour_image):
    images = [colour_image(0, 0), colour_image(0, 1, (30, 30))]
    path = write_bin(str(tmp_path / "m.bin"), images, [True])
    with pytest.raises(PairsFormatError, match="different sizes"):
        load_bin(path)
    assert load_bin(path, image_size=(20, 20))[0].shape == (2, 20, 20, 3)


def test_write_bin_checks_counts(tmp_path, colour_image):
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        write_bin(str(tmp_path / "x.bin"), [colour_image(0, i) for i in range(3)], [True])
    assert not os.listdir(tmp_path)


def _lfw_folder(root, colour_image, names=("Ann_A", "Bob_B")):
    for p, name in enumerate(names):
        os.makedirs(os.path.join(root, name))
        for i in range(1, 4):
            with open(os.path.join(root, name, "%s_%04d.jpg" % (name, i)), "wb") as f:
                f.write(encode_image(colour_image(p, i), "jpg"))


def test_lfw_pairs_txt(tmp_path, colour_image):
    root = str(tmp_path / "lfw")
    _lfw_folder(root, colour_image)
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1\t2\nAnn_A\t1\t2\nBob_B\t1\t3\nAnn_A\t3\tBob_B\t2\n"
                         "Bob_B 1 Ann_A 1\n")
    pairs = read_pairs(str(pairs_txt), root)
    assert [s for _, _, s in pairs] == [True, True, False, False]
    assert pairs[2][0].endswith("Ann_A/Ann_A_0003.jpg")
    assert pairs[2][1].endswith("Bob_B/Bob_B_0002.jpg")
    info = make_bin(root, str(pairs_txt), str(tmp_path / "lfw.bin"))
    assert info == {"path": str(tmp_path / "lfw.bin"), "pairs": 4, "same": 2}
    images, issame = load_bin(str(tmp_path / "lfw.bin"))
    assert images.shape == (8, 24, 20, 3) and issame.tolist() == [True, True, False, False]
    # JPEG bytes were stored unchanged
    with open(os.path.join(root, "Bob_B", "Bob_B_0002.jpg"), "rb") as f:
        assert load_bin(str(tmp_path / "lfw.bin"), decode=False)[0][5] == f.read()


def test_plain_pairs(tmp_path, colour_image):
    root = str(tmp_path / "img")
    _lfw_folder(root, colour_image)
    plain = tmp_path / "plain.txt"
    plain.write_text("# comment\nAnn_A/Ann_A_0001.jpg Ann_A/Ann_A_0002.jpg 1\n\n"
                     "Ann_A/Ann_A_0001.jpg\tBob_B/Bob_B_0001.jpg\tdiff\n"
                     "Bob_B/Bob_B_0003.jpg Bob_B/Bob_B_0001.jpg same\n")
    pairs = read_pairs(str(plain), root, fmt="plain")
    assert [s for _, _, s in pairs] == [True, False, True]
    info = make_bin(root, str(plain), str(tmp_path / "p.bin"), image_size=16)
    assert info["pairs"] == 3
    assert load_bin(str(tmp_path / "p.bin"))[0].shape == (6, 16, 16, 3)


def test_pairs_naming_missing_files(tmp_path, colour_image):
    root = str(tmp_path / "lfw")
    _lfw_folder(root, colour_image)
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("Ann_A 1 2\nAnn_A 1 9\n")
    with pytest.raises(PairsFormatError,
                       match=r"pairs\.txt: line 2: image not found: .*Ann_A_0009\.jpg"):
        make_bin(root, str(pairs_txt), str(tmp_path / "out.bin"))
    assert not os.path.exists(tmp_path / "out.bin")
    pairs_txt.write_text("just one field\n")
    with pytest.raises(PairsFormatError, match=r"line 1: cannot parse"):
        read_pairs(str(pairs_txt), root)
    pairs_txt.write_text("\n# nothing\n")
    with pytest.raises(PairsFormatError, match="no pairs found"):
        read_pairs(str(pairs_txt), root)


def test_unreadable_image_in_pairs(tmp_path, colour_image):
    root = str(tmp_path / "lfw")
    _lfw_folder(root, colour_image)
    with open(os.path.join(root, "Bob_B", "Bob_B_0002.jpg"), "wb") as f:
        f.write(b"garbage")
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("Bob_B 1 2\n")
    with pytest.raises(PairsFormatError, match=r"Bob_B_0002\.jpg: unreadable image"):
        make_bin(root, str(pairs_txt), str(tmp_path / "out.bin"))
    assert not os.path.exists(tmp_path / "out.bin")
