"""insightface-format face data: record files, verification pairs, alignment, built-in sets.

* :class:`FaceRecordDataset` reads ``train.rec`` (insightface layout or plain
  im2rec) as a Gluon ``Dataset`` of ``(HWC uint8 RGB, int label)``;
  :func:`write_face_rec` / :func:`pack_folder` write the insightface layout;
  :func:`read_labels` reads the ``labels.txt`` of identity names written beside it.
* :class:`FaceTransform` is the picklable training/eval transform
  (flip, ``(x - 127.5) / 128``, HWC -> CHW float32).
* :func:`load_bin` / :func:`write_bin` / :func:`make_bin` handle ``.bin``
  verification pair sets.
* :func:`align_face` warps a face onto the 5-point ArcFace template.
* :func:`glyph_data_dir` builds (once) and returns the built-in glyph identities:
  Unicode characters drawn in 16 installed type faces, split into training,
  open-set and closed-set identities like a face set (the default training data);
  :func:`read_dataset_info` reads a data folder's ``dataset.json``.
* :func:`demo_data_dir` builds (once) and returns the built-in digits demo set.
* :func:`find_images` lists the image files under a folder (:data:`IMAGE_EXTENSIONS`);
  :class:`ImageFiles` decodes them one index at a time, for
  :func:`gluon_face.embedding.embed_images`.
"""
from .align import ARCFACE_TEMPLATE, align_face, arcface_template, estimate_similarity
from .demo import demo_data_dir
from .glyphs import GlyphFontError, glyph_data_dir, read_dataset_info
from .images import IMAGE_EXTENSIONS, ImageFiles, find_images
from .inspection import format_summary, sample_grid, summarize_rec
from .recordio import (
    FaceRecordDataset,
    FaceRecordWriter,
    IndexedRecordReader,
    RecordFormatError,
    list_identity_folder,
    pack_folder,
    read_labels,
    read_property,
    write_face_rec,
)
from .transforms import (
    CenterCrop,
    Compose,
    FaceTransform,
    Normalize,
    RandomCrop,
    RandomFlipLeftRight,
    Resize,
    normalize_image,
)
from .verification import PairsFormatError, load_bin, make_bin, read_pairs, write_bin

__all__ = [
    "FaceRecordDataset", "FaceRecordWriter", "IndexedRecordReader", "RecordFormatError",
    "write_face_rec", "pack_folder", "list_identity_folder", "read_property", "read_labels",
    "FaceTransform", "Compose", "RandomFlipLeftRight", "Resize", "CenterCrop", "RandomCrop",
    "Normalize", "normalize_image",
    "load_bin", "write_bin", "make_bin", "read_pairs", "PairsFormatError",
    "align_face", "ARCFACE_TEMPLATE", "arcface_template", "estimate_similarity",
    "demo_data_dir", "glyph_data_dir", "read_dataset_info", "GlyphFontError",
    "summarize_rec", "format_summary", "sample_grid",
    "IMAGE_EXTENSIONS", "ImageFiles", "find_images",
]
