"""Image decode / encode / resize helpers shared by the readers and writers.

Decoding goes through OpenCV (``cv2.imdecode`` is several times faster than
Pillow on small JPEGs) and always returns HWC uint8 **RGB**: OpenCV's native
BGR order is flipped here, once, so no caller ever sees BGR.  Encoding goes
through Pillow, which is what the design notes ask of the writers (it needs no
OpenCV and gives byte-identical output across OpenCV versions).
"""
import io

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


def decode_image(buf):
    """Decode JPEG/PNG/... bytes to an HWC uint8 RGB array.

    Parameters
    ----------
    buf : bytes or numpy.ndarray of uint8
        Encoded image.

    Returns
    -------
    numpy.ndarray
        Shape (H, W, 3), dtype uint8, channels in RGB order.  Grey images are
        replicated to three channels; an alpha channel is dropped.

    Raises
    ------
    ValueError
        If the bytes are empty or are not a decodable image.
    """
    if isinstance(buf, np.ndarray):
        data = np.ascontiguousarray(buf, dtype=np.uint8).ravel()
    else:
        data = np.frombuffer(buf, dtype=np.uint8)
    if data.size == 0:
        raise ValueError("empty image payload")
    if cv2 is not None:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("not a decodable image (%d bytes)" % data.size)
        return np.ascontiguousarray(img[:, :, ::-1])
    from PIL import Image  # pragma: no cover

    try:  # pragma: no cover
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as err:  # pragma: no cover
        raise ValueError("not a decodable image (%d bytes): %s" % (data.size, err)) from None


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
