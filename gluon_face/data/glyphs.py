"""Glyph identities: a built-in open-set recognition set drawn with installed fonts.

Face recognition is about people the network never saw in training, and a face
data set cannot be shipped or downloaded here.  Glyphs stand in for faces:

* an **identity** is a Unicode character;
* a **photo** of it is its drawing in one of 16 type faces that matplotlib
  installs (DejaVu Sans, Sans Mono and Serif, and STIX General, each regular,
  bold, italic and bold italic): the faces differ in stroke width, serifs, slant
  and proportions the way photos of one person differ in age, make-up and
  expression;
* **pose and lighting** come from a seeded random affine warp (rotation, scale,
  shear, shift), stroke thickening or thinning, blur, ink and background levels,
  a lighting gradient, a colour cast and sensor noise.

Every character that at least :data:`MIN_FACES` of the 16 faces draw is a
candidate, except combining marks, spaces and format characters.  Characters
that look alike are dropped so that no two identities are the same person under
two names (Latin ``A``, Greek ``Alpha`` and Cyrillic ``A`` are one drawing in
DejaVu Sans): each candidate's renderings are averaged over its faces, and a
candidate whose averaged image has a cosine above :data:`DUPLICATE_COSINE` with
an identity already kept (in code point order) is dropped.

Like a face set, the identities are split three ways (:func:`glyph_data_dir`):

* ``train.rec`` / ``train.idx`` / ``property`` / ``labels.txt``: the training
  identities, minus :data:`CLOSED_HOLDOUT` photos of each;
* ``open_set.bin``: verification pairs of :data:`NUM_OPEN_IDENTITIES` identities
  that training never sees (balanced per fold of the 10-fold protocol), and
  ``open_set/open_set.rec`` (+ ``.idx``, ``property``, ``labels.txt``): every
  photo of those identities, for all-pairs verification (TAR at FAR) and 1:N
  identification;
* ``closed_set.bin``: pairs of the held-out photos of training identities.

Glyphs are not mirror-symmetric (``b`` mirrored is ``d``), so neither the
training set's random mirror nor the flip test of the verification protocol
applies: ``dataset.json`` says so (``"flip": false, "flip_test": false``), and
the trainer and ``tools/evaluate.py`` read it (:func:`read_dataset_info`).

Labels are named ``U+XXXX UNICODE NAME`` in ``labels.txt``.  The build is
deterministic: every photo's random draws depend only on the seed, the code
point and the face, so two builds give identical files (with the same fonts,
Pillow/FreeType and OpenCV).
"""
import json
import os
import unicodedata

import numpy as np

from .._l2norm import l2_normalize
from ._cache import cached_build, verify_stamp, write_stamp
from ._image import encode_image

__all__ = ["glyph_data_dir", "build_glyph_data", "verify_glyph_data", "glyph_font_files",
           "glyph_candidates", "select_identities", "render_canonical", "photograph",
           "font_code_points", "draw_glyphs", "photo_of", "label_name",
           "read_dataset_info", "GlyphFontError", "GLYPHS_VERSION", "GLYPH_FACES",
           "MIN_FACES", "DUPLICATE_COSINE", "IMAGE_SIZE", "NUM_OPEN_IDENTITIES",
           "CLOSED_HOLDOUT", "NUM_OPEN_PAIRS", "NUM_CLOSED_PAIRS", "DATASET_INFO"]

GLYPHS_VERSION = "glyphs-v1"
"""Name of the cache sub-folder; bump it whenever the content changes."""
GLYPH_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)
"""The 16 type faces (files of matplotlib's ``mpl-data/fonts/ttf``); index = face id."""
MIN_FACES = 12
"""A character is an identity candidate when at least this many faces draw it."""
DUPLICATE_COSINE = 0.97
"""Candidates whose face-averaged drawings are closer than this are one identity."""
IMAGE_SIZE = 32
"""Side of the stored photos, in pixels."""
NUM_OPEN_IDENTITIES = 400
"""Identities kept out of training for the open-set pairs and identification."""
CLOSED_HOLDOUT = 2
"""Photos (faces) of every training identity held out for ``closed_set.bin``."""
NUM_OPEN_PAIRS = 3000
NUM_CLOSED_PAIRS = 2000
DATASET_INFO = "dataset.json"
"""File name of a data folder's own description (:func:`read_dataset_info`)."""
SEED = 20261206
# Canonical drawings: font size and canvas in pixels, before the photo is taken.
_CANVAS = 64
_FONT_SIZE = 40
_BASELINE = 46          # row of the baseline in the canvas
_INK_THRESHOLD = 32     # grey level that counts as ink when centring
# Categories that are not drawable identities: combining marks, separators, controls.
_SKIP_CATEGORIES = frozenset({"Mn", "Me", "Mc", "Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cs",
                              "Cn"})
_OPEN_DIR = "open_set"
_FILES = ("train.rec", "train.idx", "property", "labels.txt", "open_set.bin",
          "closed_set.bin", "open_set/open_set.rec", "open_set/open_set.idx",
          "open_set/property", "open_set/labels.txt", DATASET_INFO)


class GlyphFontError(OSError):
    """A font of :data:`GLYPH_FACES` is missing or unreadable; the message names the file."""


# ----------------------------------------------------------------------------- fonts
def glyph_font_files(font_dir=None):
    """Paths of the 16 faces, checked to exist and to parse as fonts.

    Parameters
    ----------
    font_dir : str, optional
        Folder holding the files of :data:`GLYPH_FACES`; default matplotlib's
        ``mpl-data/fonts/ttf``.

    Raises
    ------
    GlyphFontError
        Naming the first missing or unreadable file.
    """
    if font_dir is None:
        import matplotlib

        font_dir = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    paths = [os.path.join(font_dir, name) for name in GLYPH_FACES]
    for path in paths:
        if not os.path.isfile(path):
            raise GlyphFontError("%s: font file not found (the glyph identities need "
                                 "matplotlib's DejaVu and STIX fonts)" % path)
    return paths


def font_code_points(paths):
    """The code points each font maps to a glyph: one frozenset per path.

    Raises
    ------
    GlyphFontError
        Naming the first file that is not a readable font.
    """
    from fontTools.ttLib import TTFont, TTLibError

    out = []
    for path in paths:
        try:
            font = TTFont(path, lazy=True)
            cmap = font.getBestCmap()
            font.close()
        except (TTLibError, OSError, ValueError, AssertionError, KeyError, IndexError) as err:
            raise GlyphFontError("%s: unreadable font (%s)" % (path, err or type(err).__name__)) \
                from None
        if not cmap:
            raise GlyphFontError("%s: unreadable font (no character map)" % path)
        out.append(frozenset(cmap))
    return out


def glyph_candidates(cmaps, min_faces=MIN_FACES):
    """Code points drawn by at least ``min_faces`` fonts, minus marks and separators.

    Parameters
    ----------
    cmaps : list of set of int
        The code points of each face.

    Returns
    -------
    list of int, sorted
    """
    counts = {}
    for cmap in cmaps:
        for cp in cmap:
            counts[cp] = counts.get(cp, 0) + 1
    return sorted(cp for cp, n in counts.items()
                  if n >= min_faces and unicodedata.category(chr(cp)) not in _SKIP_CATEGORIES)


def render_canonical(font, code_point):
    """The character drawn in ``font`` on a ``64 x 64`` canvas, before the photo.

    Baseline at a fixed row (so ``,`` and ``'`` differ in height as in print),
    ink centred horizontally (the alignment step of a face pipeline).

    Parameters
    ----------
    font : PIL.ImageFont.FreeTypeFont
    code_point : int

    Returns
    -------
    numpy.ndarray or None
        (64, 64) uint8, ink bright on black; None when the font draws nothing.
    """
    from PIL import Image, ImageDraw

    big = 2 * _CANVAS
    image = Image.new("L", (big, big), 0)
    # The anchor 'ms' puts the baseline's middle at the point.
    ImageDraw.Draw(image).text((big // 2, _CANVAS // 2 + _BASELINE), chr(code_point),
                               font=font, fill=255, anchor="ms")
    ink = np.asarray(image)
    cols = np.flatnonzero((ink > _INK_THRESHOLD).any(axis=0))
    if cols.size == 0:
        return None
    centre = (int(cols[0]) + int(cols[-1]) + 1) // 2
    padded = np.zeros((big, big + _CANVAS), dtype=np.uint8)
    padded[:, _CANVAS // 2:_CANVAS // 2 + big] = ink
    # In padded columns the ink centre is centre + _CANVAS // 2: the crop starts at centre.
    top = _CANVAS // 2
    return np.ascontiguousarray(padded[top:top + _CANVAS, centre:centre + _CANVAS])


def draw_glyphs(paths, cmaps, code_points):
    """``{(code_point, face): canonical drawing}`` for every face that draws each point.

    Parameters
    ----------
    paths : list of str
        The font files (face ``i`` is ``paths[i]``).
    cmaps : list of set of int
        Their code points (:func:`font_code_points`).
    code_points : iterable of int

    Returns
    -------
    dict
        ``(code_point, face) -> (64, 64) uint8`` (:func:`render_canonical`); faces
        that do not map a point, or draw nothing for it, are absent.
    """
    from PIL import ImageFont

    fonts = []
    for path in paths:
        try:
            fonts.append(ImageFont.truetype(path, _FONT_SIZE))
        except OSError as err:
            raise GlyphFontError("%s: unreadable font (%s)" % (path, err)) from None
    drawings = {}
    for cp in code_points:
        for face, (font, cmap) in enumerate(zip(fonts, cmaps)):
            if cp in cmap:
                image = render_canonical(font, cp)
                if image is not None:
                    drawings[(cp, face)] = image
    return drawings


def select_identities(drawings, min_faces=MIN_FACES, max_cosine=DUPLICATE_COSINE):
    """Identities among the drawn candidates: enough faces, no near-duplicates.

    Each candidate's drawings are reduced to 32 x 32, averaged over its faces
    and L2-normalised; candidates are visited in code point order and kept
    unless the cosine with an identity already kept exceeds ``max_cosine``.

    Parameters
    ----------
    drawings : dict
        ``{(code_point, face): (64, 64) uint8}`` from the canonical renderer.

    Returns
    -------
    kept : list of int
        Code points of the identities, sorted.
    dropped : dict
        ``{code_point: code point of the identity it duplicates}`` (only the
        near-duplicates; candidates with too few faces are simply absent).
    """
    faces = {}
    for cp, face in drawings:
        faces.setdefault(cp, []).append(face)
    cands = sorted(cp for cp, fs in faces.items() if len(fs) >= min_faces)
    if not cands:
        return [], {}
    means = np.empty((len(cands), 32 * 32), dtype=np.float64)
    for i, cp in enumerate(cands):
        stack = np.stack([drawings[(cp, f)] for f in sorted(faces[cp])]).astype(np.float64)
        small = stack.reshape(len(stack), 32, 2, 32, 2).mean(axis=(2, 4))
        means[i] = small.mean(axis=0).ravel()
    means = l2_normalize(means)
    gram = means @ means.T
    kept, dropped = [], {}
    for i, cp in enumerate(cands):
        if kept:
            sims = gram[i, kept]
            j = int(np.argmax(sims))
            if sims[j] > max_cosine:
                dropped[cp] = cands[kept[j]]
                continue
        kept.append(i)
    kept = [cands[i] for i in kept]
    return kept, dropped


# ----------------------------------------------------------------------------- photos
def photograph(canonical, rng, size=IMAGE_SIZE):
    """One "photo" of a canonical drawing: pose, stroke, blur, lighting and noise.

    Parameters
    ----------
    canonical : numpy.ndarray
        (64, 64) uint8 drawing, ink bright on black (:func:`render_canonical`).
    rng : numpy.random.Generator
        The photo's own generator: the same draws give the same photo.
    size : int
        Side of the photo.

    Returns
    -------
    numpy.ndarray
        (size, size, 3) uint8 RGB: dark ink on a lighter background.
    """
    import cv2

    n = canonical.shape[0]
    ink = canonical.astype(np.float32) / 255.0
    # Stroke weight: blend towards a dilated (bolder) or eroded (lighter) copy.
    kind = rng.integers(3)
    weight = rng.uniform(0.3, 1.0)
    kernel = np.ones((3, 3), np.uint8)
    if kind == 1:
        ink = (1 - weight) * ink + weight * cv2.dilate(ink, kernel)
    elif kind == 2:  # at most 70%: a full erosion wipes out hairlines
        ink = (1 - 0.7 * weight) * ink + 0.7 * weight * cv2.erode(ink, kernel)
    # Pose: rotation, anisotropic scale, shear and shift about the centre.
    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.85, 1.1) * np.exp(rng.uniform(-0.08, 0.08) * np.array([1.0, -1.0]))
    shear = rng.uniform(-0.2, 0.2)
    shift = rng.uniform(-0.05, 0.05, size=2) * n
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lin = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    centre = np.array([n / 2.0, n / 2.0])
    matrix = np.hstack([lin, (centre + shift - lin @ centre)[:, None]]).astype(np.float32)
    ink = cv2.warpAffine(ink, matrix, (n, n), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    sigma = rng.uniform(0.0, 1.6)
    if sigma > 0.3:
        ink = cv2.GaussianBlur(ink, (0, 0), sigma)
    ink = cv2.resize(ink, (size, size), interpolation=cv2.INTER_AREA)
    # Lighting: paper and ink levels, a linear gradient across the photo, a colour cast.
    paper = rng.uniform(0.45, 0.95)
    contrast = rng.uniform(0.4, 0.85) * paper
    direction = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-0.35, 0.35)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    light = 1.0 + slope * (np.cos(direction) * xs + np.sin(direction) * ys)
    grey = (paper - contrast * ink) * light
    cast = rng.uniform(0.9, 1.1, size=3)
    noise = rng.normal(0.0, rng.uniform(0.0, 0.04), size=(size, size, 3))
    rgb = grey[:, :, None] * cast[None, None, :] + noise
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def photo_of(canonical, code_point, face):
    """The set's photo of ``code_point`` in face ``face``: :func:`photograph` with the
    generator seeded by ``(SEED, code_point, face)``, so each photo is reproducible alone."""
    rng = np.random.default_rng([SEED, code_point, face])
    return photograph(canonical, rng)


def label_name(code_point):
    """``'U+XXXX UNICODE NAME'`` (just ``'U+XXXX'`` for a character without a name)."""
    name = unicodedata.name(chr(code_point), "")
    return "U+%04X %s" % (code_point, name) if name else "U+%04X" % code_point


# ----------------------------------------------------------------------------- build
def build_glyph_data(out_dir, font_dir=None, progress=None):
    """Write the glyph identity set into ``out_dir`` (created; should be empty).

    Parameters
    ----------
    out_dir : str
    font_dir : str, optional
        Where the 16 fonts are (default matplotlib's).
    progress : callable, optional
        ``progress(iterable, total)`` -> iterable, e.g. a tqdm wrapper, over the
        identities as their photos are taken.

    Returns
    -------
    dict
        The content of ``dataset.json`` (counts of every split included).

    Raises
    ------
    GlyphFontError
        A font is missing or unreadable.
    """
    from .recordio import write_face_rec
    from .verification import balanced_pairs, write_bin

    paths = glyph_font_files(font_dir)
    cmaps = font_code_points(paths)
    drawings = draw_glyphs(paths, cmaps, glyph_candidates(cmaps))
    identities, dropped = select_identities(drawings)
    if len(identities) < NUM_OPEN_IDENTITIES + 100:
        raise GlyphFontError("%s: only %d glyph identities; the fonts there are not the "
                             "expected DejaVu/STIX files" % (os.path.dirname(paths[0]),
                                                             len(identities)))
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(identities))
    open_ids = sorted(identities[i] for i in order[:NUM_OPEN_IDENTITIES])
    train_ids = sorted(identities[i] for i in order[NUM_OPEN_IDENTITIES:])
    faces_of = {}
    for cp, face in sorted(drawings):
        faces_of.setdefault(cp, []).append(face)

    todo = [(cp, False) for cp in train_ids] + [(cp, True) for cp in open_ids]
    if progress is not None:
        todo = progress(todo, len(todo))
    photos = {}
    for cp, _ in todo:
        for face in faces_of[cp]:
            photos[(cp, face)] = encode_image(photo_of(drawings[(cp, face)], cp, face), "png")

    os.makedirs(out_dir, exist_ok=True)
    # training identities: all but CLOSED_HOLDOUT faces of each, drawn with the set's rng
    train_samples, holdout = [], []
    for label, cp in enumerate(train_ids):
        faces = faces_of[cp]
        held = set(int(f) for f in rng.choice(faces, size=CLOSED_HOLDOUT, replace=False))
        holdout.append([(cp, f) for f in faces if f in held])
        train_samples.extend((label, photos[(cp, f)]) for f in faces if f not in held)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    train = write_face_rec(os.path.join(out_dir, "train"), train_samples, size,
                           names=[label_name(cp) for cp in train_ids])
    # open set: every photo, for identification and all-pairs verification
    open_keys = [(cp, f) for cp in open_ids for f in faces_of[cp]]
    open_samples = [(label, photos[(cp, f)]) for label, cp in enumerate(open_ids)
                    for f in faces_of[cp]]
    os.makedirs(os.path.join(out_dir, _OPEN_DIR), exist_ok=True)
    write_face_rec(os.path.join(out_dir, _OPEN_DIR, "open_set"), open_samples, size,
                   names=[label_name(cp) for cp in open_ids])
    # pairs
    for name, keys_by_id, num_pairs in (
            ("open_set.bin", [[(cp, f) for f in faces_of[cp]] for cp in open_ids],
             NUM_OPEN_PAIRS),
            ("closed_set.bin", holdout, NUM_CLOSED_PAIRS)):
        flat = [k for keys in keys_by_id for k in keys]
        groups, start = [], 0
        for keys in keys_by_id:
            groups.append(np.arange(start, start + len(keys)))
            start += len(keys)
        pairs, issame = balanced_pairs(groups, num_pairs, rng)
        write_bin(os.path.join(out_dir, name), [photos[flat[i]] for i in pairs.ravel()], issame)
    info = {
        "name": "glyph identities", "version": GLYPHS_VERSION,
        "flip": False, "flip_test": False,
        "why_no_flip": "glyphs are not mirror-symmetric: a mirrored b is a d",
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "identification": _OPEN_DIR + "/open_set.rec",
        "faces": list(GLYPH_FACES),
        "train_identities": len(train_ids), "train_images": train["num_images"],
        "closed_set_images": int(sum(len(h) for h in holdout)),
        "closed_set_pairs": NUM_CLOSED_PAIRS,
        "open_identities": len(open_ids), "open_images": len(open_keys),
        "open_set_pairs": NUM_OPEN_PAIRS,
        "near_duplicates_dropped": len(dropped), "seed": SEED,
    }
    with open(os.path.join(out_dir, DATASET_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return info


def verify_glyph_data(folder):
    """Why ``folder`` is not a complete glyph set, or None when it is."""
    return verify_stamp(folder, GLYPHS_VERSION, _FILES)


def glyph_data_dir(cache_dir=None, rebuild=False, progress=None):
    """Path of the built-in glyph identity set, building it on first use.

    Parameters
    ----------
    cache_dir : str, optional
        Cache root; the set lives in ``<cache_dir>/glyphs-v1``.  Default
        ``$GLUON_FACE_CACHE``, else ``~/.cache/gluon_face``.
    rebuild : bool
        Build afresh even if a valid copy exists.
    progress : callable, optional
        As in :func:`build_glyph_data`.

    Returns
    -------
    str
        The folder (see the module docstring for its files).

    Notes
    -----
    Same cache rules as :func:`gluon_face.data.demo_data_dir`: a missing,
    incomplete or corrupted folder (any file whose size or checksum differs
    from ``stamp.json``) is rebuilt, in a temporary sibling folder renamed into
    place.
    """
    def build(folder):
        info = build_glyph_data(folder, progress=progress)
        write_stamp(folder, GLYPHS_VERSION, _FILES, seed=SEED, info=info)

    return cached_build(GLYPHS_VERSION, build, verify_glyph_data, cache_dir, rebuild)


# ----------------------------------------------------------------------------- dataset.json
def read_dataset_info(folder):
    """A data folder's own description (``dataset.json``), or ``{}`` without one.

    The keys the library reads: ``flip`` (may training mirror the images?) and
    ``flip_test`` (does the verification protocol add the mirrored embedding?),
    both default true for faces; ``identification`` (path, relative to the
    folder, of a labelled ``.rec`` of open-set identities).

    Raises
    ------
    ValueError
        When the file exists but is not a JSON object (the message names it).
    """
    path = os.path.join(os.fspath(folder), DATASET_INFO)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError("%s: unreadable (%s)" % (path, str(err).splitlines()[0])) from None
    if not isinstance(info, dict):
        raise ValueError("%s: expected a JSON object" % path)
    for key in ("flip", "flip_test"):
        if key in info and not isinstance(info[key], bool):
            raise ValueError("%s: %r must be true or false, got %r" % (path, key, info[key]))
    return info
