"""gluon_face.data._image: header sizes, and decode errors that stay one line."""
import io

import numpy as np
import pytest
from PIL import Image

from gluon_face.data._image import decode_image, encode_image, encoded_image_size


def _image(h, w):
    return np.random.default_rng(h * w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["jpg", "png", "bmp", "progressive", "exif"])
def test_encoded_image_size(fmt):
    image = _image(37, 53)
    if fmt in ("jpg", "png"):
        data = encode_image(image, fmt)
    else:
        buf = io.BytesIO()
        pil = Image.fromarray(image)
        if fmt == "bmp":
            pil.save(buf, format="BMP")
        else:  # JPEG with a frame header further in, or a progressive one (SOF2)
            exif = Image.Exif()
            exif[0x010E] = "x" * 5000  # ImageDescription: a long APP1 segment
            pil.save(buf, format="JPEG", progressive=fmt == "progressive", exif=exif)
        data = buf.getvalue()
    assert encoded_image_size(data) == (37, 53)
    assert encoded_image_size(np.frombuffer(data, np.uint8)) == (37, 53)


def test_encoded_image_size_unknown():
    assert encoded_image_size(b"") is None
    assert encoded_image_size(b"not an image") is None
    assert encoded_image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None  # no frame header
    assert encoded_image_size(encode_image(_image(8, 8), "png")[:20]) is None


def test_decode_errors_are_one_line():
    jpeg = bytearray(encode_image(_image(16, 16), "jpg"))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (65000).to_bytes(2, "big") * 2  # beyond OpenCV's pixel limit
    for data in (bytes(jpeg), b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\xff\xd8\xff" + b"\x13" * 99):
        with pytest.raises(ValueError) as exc:
            decode_image(data)
        message = str(exc.value)
        assert message.startswith("not a decodable image (") and "\n" not in message, message


def test_strict_decode_keeps_stderr_working(capfd):
    good = encode_image(_image(32, 32), "jpg")
    scan = good.find(b"\xff\xda")  # the scan ends early, the file does not
    damaged = good[: (scan + len(good)) // 2] + b"\xff\xd9"
    with pytest.raises(ValueError, match="Corrupt JPEG data: premature end of data segment"):
        decode_image(damaged, strict=True)
    np.testing.assert_array_equal(decode_image(good, strict=True), decode_image(good))
    import sys

    print("still here", file=sys.stderr)
    err = capfd.readouterr().err
    assert err == "still here\n"  # libjpeg's message went to the decoder, not to stderr
