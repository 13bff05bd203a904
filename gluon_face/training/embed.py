"""Former home of the embedding and evaluation helpers; kept so old imports still work.

Every name here is re-exported from where it now lives:

* :func:`parse_ctx` - :mod:`gluon_face.devices`;
* :data:`IMAGE_EXTENSIONS`, :func:`find_images`, :class:`ImageFiles` -
  :mod:`gluon_face.data.images` (also ``gluon_face.data``);
* :func:`embed_images`, :func:`extract_embeddings` - :mod:`gluon_face.embedding`;
* :func:`evaluate_bin`, :func:`evaluate_identities` -
  :mod:`gluon_face.evaluation.protocols` (also ``gluon_face.evaluation``);
* :func:`l2_normalize` - the package's one numpy L2 normalisation,
  :func:`gluon_face.evaluation.l2_normalize`.  It no longer takes ``eps`` and
  returns float64 (all-zero rows stay zero); see :mod:`gluon_face._l2norm`.

New code imports from those modules.
"""
from .._l2norm import l2_normalize
from ..data.images import IMAGE_EXTENSIONS, ImageFiles, find_images
from ..devices import parse_ctx
from ..embedding import embed_images, extract_embeddings
from ..evaluation.protocols import evaluate_bin, evaluate_identities

__all__ = ["embed_images", "evaluate_bin", "evaluate_identities", "extract_embeddings",
           "l2_normalize", "parse_ctx", "find_images", "ImageFiles", "IMAGE_EXTENSIONS"]
