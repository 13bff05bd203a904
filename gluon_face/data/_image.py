"""Image decode / encode / resize helpers shared by the readers and writers.

Decoding goes through OpenCV (``cv2.imdecode`` is several times faster than
Pillow on small JPEGs) and always returns HWC uint8 **RGB**: OpenCV's native
BGR order is flipped here, once, so no caller ever sees BGR.  Encoding goes
through Pillow, which is what the design notes ask of the writers (it needs no
OpenCV and gives byte-identical output across OpenCV versions).

libjpeg recovers from some damage (``Corrupt JPEG data: premature end of data
segment``) with a warning on the process's stderr and a partly grey image;
``decode_image(..., strict=True)`` catches those messages and refuses the image
(for scans such as ``inspect_rec --check``; see its thread-safety note).
"""
import contextlib
import io
import os
import sys
import tempfile
import warnings

import numpy as np

try:  # OpenCV is an install requirement, but keep a Pillow path for odd setups.
    import cv2
except ImportError:  # pragma: no cover - exercised only without opencv
    cv2 = None

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions (lower case) treated as images when packing a folder."""


def encoded_format(buf):
    """``'jpg'``, ``'png'`` or ``None`` from the magic bytes of an encoded image."""
    head = bytes(buf[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


_capture = None  # (pid, temporary file) that takes fd 2 during a strict decode


@contextlib.contextmanager
def _decoder_messages(found):
    """Send what C code writes to fd 2 meanwhile to a file; append it to ``found``."""
    global _capture
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to catch
        yield
        return
    if _capture is None or _capture[0] != os.getpid():
        _capture = (os.getpid(), tempfile.TemporaryFile())
    sink = _capture[1]
    sink.seek(0)
    sink.truncate()
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()  # Python's own pending output is not the decoder's
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        found.append(sink.read().decode("utf-8", "replace"))


def _first_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def decode_image(buf, strict=False):
    """Decode JPEG/PNG/... bytes to an HWC uint8 RGB array.

    Parameters
    ----------
    buf : bytes or numpy.ndarray of uint8
        Encoded image.
    strict : bool
        Also refuse an image the decoder only recovered from: anything libjpeg,
        libpng or OpenCV writes to stderr while decoding (``Corrupt JPEG data:
        premature end of data segment``...) becomes the ``ValueError``.  This
        redirects the process's file descriptor 2 for the duration of the call,
        so output of other threads meanwhile would be taken for the decoder's:
        meant for single-threaded scans, not for data loaders.

    Returns
    -------
    numpy.ndarray
        Shape (H, W, 3), dtype uint8, channels in RGB order.  Grey images are
        replicated to three channels; an alpha channel is dropped.

    Raises
    ------
    ValueError
        If the bytes are empty or are not a decodable image (one line, also
        for OpenCV's own errors such as an image larger than its pixel limit).
    """
    if isinstance(buf, np.ndarray):
        data = np.ascontiguousarray(buf, dtype=np.uint8).ravel()
    else:
        data = np.frombuffer(buf, dtype=np.uint8)
    if data.size == 0:
        raise ValueError("empty image payload")
    if cv2 is not None:
        messages = []
        try:
            if strict:
                with _decoder_messages(messages):
                    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
            else:
                img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error as err:
            # "OpenCV(4.x) <source file>:<line>: error: (-215:Assertion failed) <what>"
            said = _first_line(str(err)).split(" error: ", 1)[-1]
            raise ValueError("not a decodable image (%d bytes): OpenCV: %s"
                             % (data.size, said or "error")) from None
        said = _first_line("".join(messages))
        if img is None:
            raise ValueError("not a decodable image (%d bytes)%s"
                             % (data.size, ": " + said if said else ""))
        if said:
            raise ValueError("corrupt image data (%d bytes): %s" % (data.size, said))
        return np.ascontiguousarray(img[:, :, ::-1])
    from PIL import Image  # pragma: no cover

    try:  # pragma: no cover
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as err:  # pragma: no cover
        raise ValueError("not a decodable image (%d bytes): %s" % (data.size, err)) from None


def _jpeg_size(data):
    """(H, W) from the frame header of JPEG bytes, None when not found."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                return None
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return (height, width) if height and width else None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def encoded_image_size(buf):
    """(H, W) of encoded image bytes from their header, without decoding the pixels.

    JPEG and PNG headers are parsed here; other formats go through Pillow's lazy
    ``Image.open``.  Used to refuse huge images before they are decoded.

    Returns
    -------
    (int, int) or None
        None when the header does not say (unknown format, damaged header, or
        an image beyond Pillow's decompression-bomb limit).
    """
    data = bytes(buf[:1 << 20])  # the headers; JPEG segments are at most 64 KiB each
    fmt = encoded_format(data)
    if fmt == "jpg":
        return _jpeg_size(data)
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return (height, width) if height and width else None
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(buf))) as im:
                width, height = im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return (int(height), int(width))


def encode_image(image, fmt="jpg", quality=95):
    """Encode an HWC uint8 RGB (or HW grey) array with Pillow.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) or (H, W) uint8.
    fmt : {'jpg', 'png'}
        Output format (a leading dot is accepted).  PNG is lossless.
    quality : int
        JPEG quality, 1..100 (insightface and im2rec use 95).

    Returns
    -------
    bytes
    """
    from PIL import Image

    fmt = fmt.lower().lstrip(".")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError("encode_image expects an (H, W, 3) or (H, W) uint8 array, got %s %s"
                         % (image.dtype, image.shape))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    out = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if fmt in ("jpg", "jpeg"):
        pil.save(out, format="JPEG", quality=int(quality))
    elif fmt == "png":
        pil.save(out, format="PNG")
    else:
        raise ValueError("unknown image format %r; use 'jpg' or 'png'" % fmt)
    return out.getvalue()


def resize_image(image, size):
    """Resize an HWC uint8 image to ``size = (height, width)``.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    """
    height, width = int(size[0]), int(size[1])
    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    if cv2 is not None:
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        out = cv2.resize(image, (width, height), interpolation=interp)
        return out.reshape(height, width, *image.shape[2:])
    from PIL import Image  # pragma: no cover

    resample = Image.BOX if shrinking else Image.BILINEAR  # pragma: no cover
    return np.asarray(Image.fromarray(image).resize((width, height), resample))  # pragma: no cover
