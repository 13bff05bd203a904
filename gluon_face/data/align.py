"""Five-point face alignment to the ArcFace template.

A detector (RetinaFace, MTCNN, ...) gives five landmarks per face, in this
order: left eye, right eye, nose tip, left mouth corner, right mouth corner
(left/right as seen in the image).  insightface crops every training and test
face by the similarity transform (rotation, uniform scale, translation) that
maps those five points onto a fixed template in least squares, then warps the
image to 112x112.  Recognition models trained on such crops expect the same
preprocessing at test time.

The least-squares similarity is Umeyama's closed form (S. Umeyama, "Least-squares
estimation of transformation parameters between two point patterns", IEEE TPAMI
13(4), 1991), computed here in plain numpy; the warp is ``cv2.warpAffine``.
"""
import numpy as np

__all__ = ["ARCFACE_TEMPLATE", "arcface_template", "estimate_similarity", "apply_affine",
           "align_face"]

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963],
                             [73.5318, 51.5014],
                             [56.0252, 71.7366],
                             [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float64)
"""(5, 2) ``(x, y)`` pixel positions of the five landmarks in a 112x112 crop."""
ARCFACE_TEMPLATE.setflags(write=False)


def _landmarks(points, name):
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape != (5, 2) and arr.shape != (10,):
        raise ValueError("%s must be 5 (x, y) points, shape (5, 2); got shape %s"
                         % (name, arr.shape))
    arr = arr.reshape(5, 2)
    if not np.isfinite(arr).all():
        raise ValueError("%s holds NaN or infinite coordinates" % name)
    return arr


def arcface_template(image_size=112):
    """The five-point template for a square crop of ``image_size`` pixels.

    Sizes that are multiples of 112 scale the 112 template; other sizes follow
    insightface's convention of scaling a 128-wide layout, i.e. the 112 template
    shifted 8 pixels right (for 128) and then scaled by ``image_size / 128``.

    Parameters
    ----------
    image_size : int
        Side of the square output crop, in pixels.

    Returns
    -------
    numpy.ndarray
        (5, 2) float64 ``(x, y)`` pixel coordinates.
    """
    size = int(image_size)
    if size <= 0 or size != image_size:
        raise ValueError("image_size must be a positive integer, got %r" % (image_size,))
    if size % 112 == 0:
        ratio, shift = size / 112.0, 0.0
    else:
        ratio = size / 128.0
        shift = 8.0 * ratio
    out = ARCFACE_TEMPLATE * ratio
    out[:, 0] += shift
    return out


def estimate_similarity(src, dst):
    """Least-squares similarity transform mapping ``src`` points onto ``dst``.

    Finds scale :math:`s > 0`, rotation :math:`R` (det +1, no reflection) and
    translation :math:`t` minimising :math:`\\sum_i \\lVert d_i - (s R x_i + t)
    \\rVert^2` (Umeyama 1991): with centred points and the SVD
    :math:`U \\Sigma V^T` of the cross-covariance :math:`\\frac1n \\sum_i
    \\bar d_i \\bar x_i^T`, :math:`R = U D V^T`, :math:`D = \\mathrm{diag}(1,
    \\det(U V^T))`, :math:`s = \\mathrm{tr}(\\Sigma D) / \\sigma_x^2`.

    Parameters
    ----------
    src, dst : array_like
        (N, 2) ``(x, y)`` points, N >= 2, in corresponding order.

    Returns
    -------
    numpy.ndarray
        (2, 3) float64 affine matrix ``[s R | t]``; ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError("estimate_similarity needs two (N, 2) point sets of equal N >= 2, "
                         "got %s and %s" % (src.shape, dst.shape))
    n = src.shape[0]
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c ** 2).sum() / n
    if var_src <= 1e-12 * max(1.0, float(np.abs(src).max())) ** 2:
        raise ValueError("source points coincide: no similarity transform is defined")
    cov = dst_c.T @ src_c / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_src)
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_dst - scale * rot @ mu_src
    return matrix


def apply_affine(matrix, points):
    """Map (N, 2) ``(x, y)`` points by a (2, 3) affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(image, landmarks5, image_size=112, border_value=0, return_matrix=False):
    """Crop and warp a face so its five landmarks land on the ArcFace template.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) (or (H, W)) uint8 image, any channel order (kept as given).
    landmarks5 : array_like
        (5, 2) ``(x, y)`` pixel positions in ``image``: left eye, right eye,
        nose tip, left and right mouth corners; a flat (10,) vector
        ``x1, y1, ..., x5, y5`` is accepted too.
    image_size : int
        Side of the square output (112 for ArcFace models).
    border_value : int
        Fill value for pixels that fall outside ``image``.
    return_matrix : bool
        Also return the (2, 3) matrix mapping ``image`` pixel coordinates to
        crop coordinates.

    Returns
    -------
    numpy.ndarray
        (image_size, image_size, 3) (or 2-D for a grey input), dtype of ``image``.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("align_face expects an (H, W, C) or (H, W) image, got shape %s"
                         % (image.shape,))
    points = _landmarks(landmarks5, "landmarks5")
    template = arcface_template(image_size)
    matrix = estimate_similarity(points, template)
    size = int(image_size)
    out = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=border_value)
    if image.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
        out = out[:, :, None]
    return (out, matrix) if return_matrix else out
