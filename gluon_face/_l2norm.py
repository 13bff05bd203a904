"""The one row-wise L2 normalisation of numpy arrays in gluon_face.

Every numpy-side normalisation (verification and identification metrics, the
flip test, stored embeddings, the glyph de-duplication) goes through
:func:`l2_normalize`, so one embedding normalised in two places gives the same
bits.  It is published as :func:`gluon_face.evaluation.l2_normalize`; it lives
in this numpy-only module so that :mod:`gluon_face.embedding` and
:mod:`gluon_face.data` can use it without importing the evaluation package
(scipy, scikit-learn, matplotlib).

The rule:

* the norm is taken and the division done in float64, whatever the input
  dtype, and the result is float64: a caller that stores float32 (as
  :func:`gluon_face.embedding.extract_embeddings` does) casts the result, so
  the rounding to float32 happens once, on the unit vector;
* there is no ``eps`` in the denominator: a row with a non-zero norm is divided
  by exactly that norm, however small;
* an all-zero row is divided by 1, so it stays zero instead of becoming NaN
  (``sklearn.preprocessing.normalize``'s convention, which insightface uses).

The networks' own normalisation inside the graph
(``gluon_face.heads._utils.l2_normalize``) is a different, MXNet operator.
"""
import numpy as np

__all__ = ["l2_normalize"]


def l2_normalize(x):
    """Scale every row to unit L2 norm; all-zero rows stay zero.

    Same convention as ``sklearn.preprocessing.normalize`` (which insightface uses).

    Parameters
    ----------
    x : array_like, shape (N, D)

    Returns
    -------
    numpy.ndarray, float64, shape (N, D)
        ``x_i / ||x_i||_2`` computed in float64 (``x_i`` unchanged when
        ``||x_i|| = 0``).
    """
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1.0
    return x / norms[:, None]
