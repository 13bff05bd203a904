"""Five-point alignment against a known similarity transform."""
import numpy as np
import pytest

from gluon_face.data import ARCFACE_TEMPLATE, align_face, arcface_template, estimate_similarity
from gluon_face.data.align import apply_affine


def _similarity(scale, angle, tx, ty):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_template_values():
    np.testing.assert_allclose(ARCFACE_TEMPLATE[0], [38.2946, 51.6963])
    np.testing.assert_allclose(ARCFACE_TEMPLATE[4], [70.7299, 92.2041])
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE * 2)
    t128 = arcface_template(128)
    np.testing.assert_allclose(t128[:, 0], ARCFACE_TEMPLATE[:, 0] + 8)
    np.testing.assert_allclose(t128[:, 1], ARCFACE_TEMPLATE[:, 1])


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (2.3, 0.4, 31.0, -7.5),
                                               (0.6, -2.9, 140.0, 90.0)])
def test_umeyama_recovers_known_similarity(scale, angle, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(7, 2))
    m = _similarity(scale, angle, tx, ty)
    dst = apply_affine(m, src)
    np.testing.assert_allclose(estimate_similarity(src, dst), m, atol=1e-9)
    # noisy points: least squares beats the exact transform's residual only marginally
    noisy = dst + rng.normal(0, 0.5, size=dst.shape)
    fit = estimate_similarity(src, noisy)
    res_fit = ((apply_affine(fit, src) - noisy) ** 2).sum()
    assert res_fit <= ((dst - noisy) ** 2).sum() + 1e-9


def test_no_reflection():
    """A mirrored face is fit by a rotation (det > 0), never by a reflection."""
    mirrored = ARCFACE_TEMPLATE * [-1, 1]
    m = estimate_similarity(ARCFACE_TEMPLATE, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    assert ((apply_affine(m, ARCFACE_TEMPLATE) - mirrored) ** 2).sum() > 1.0


def test_align_face_puts_landmarks_on_template():
    """Warp a synthetic face by a known similarity; alignment undoes it."""
    size = 112
    # An image that is a smooth function of position, with bright dots at the landmarks.
    face = np.zeros((size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    face[..., 0] = (xx * 2) % 256
    face[..., 1] = (yy * 2) % 256
    face[..., 2] = 50
    import cv2

    m = _similarity(1.7, 0.35, 60.0, 25.0)  # crop -> photo
    photo = cv2.warpAffine(face, m, (300, 260), flags=cv2.INTER_LINEAR)
    landmarks = apply_affine(m, ARCFACE_TEMPLATE)
    aligned, matrix = align_face(photo, landmarks, return_matrix=True)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    np.testing.assert_allclose(apply_affine(matrix, landmarks), ARCFACE_TEMPLATE, atol=1e-6)
    inner = (slice(10, 100), slice(10, 100))
    diff = np.abs(aligned[inner].astype(int) - face[inner].astype(int))[..., 2]
    assert diff.max() <= 1
    # channels 0/1 carry position: the recovered position is within a pixel
    for c, grid in ((0, xx), (1, yy)):
        position = aligned[inner][..., c] / 2.0
        assert (np.abs(position - grid[inner]) <= 1.0).mean() > 0.95, c
    # flat (10,) landmarks are accepted
    np.testing.assert_array_equal(align_face(photo, landmarks.ravel()), aligned)
    # other output sizes scale the template
    big, m2 = align_face(photo, landmarks, image_size=224, return_matrix=True)
    assert big.shape == (224, 224, 3)
    np.testing.assert_allclose(apply_affine(m2, landmarks), ARCFACE_TEMPLATE * 2, atol=1e-6)


def test_align_face_bad_input():
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match=r"landmarks5 must be 5 \(x, y\) points"):
        align_face(image, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        align_face(image, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="coincide"):
        align_face(image, np.ones((5, 2)))
    with pytest.raises(ValueError, match="image"):
        align_face(np.zeros(5, np.uint8), ARCFACE_TEMPLATE)
