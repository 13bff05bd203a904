"""Summaries and sample grids of record files (the logic of ``tools/inspect_rec.py``)."""
import numpy as np

from ._image import resize_image
from .recordio import FaceRecordDataset, RecordFormatError

__all__ = ["summarize_rec", "format_summary", "sample_grid"]


def summarize_rec(dataset, check_images=False, progress=None):
    """Scan a record file and describe it.

    Labels come from the record headers only (fast); ``check_images`` also
    decodes every image strictly (a JPEG that libjpeg only recovered from with a
    warning, e.g. ``Corrupt JPEG data: premature end of data segment``, is a
    problem: see :func:`~gluon_face.data._image.decode_image`) and compares its
    size with ``dataset.image_size``.

    Parameters
    ----------
    dataset : FaceRecordDataset or str
    check_images : bool
    progress : callable, optional
        ``progress(iterable, total)`` -> iterable, wraps the image check.

    Returns
    -------
    dict
        ``path``, ``layout``, ``images``, ``num_classes`` (and its source),
        ``image_size``, ``identities`` (labels with at least one image),
        ``empty_classes``, ``per_identity`` {min, median, max}, ``label_min``,
        ``label_max``, ``labels_path`` (the ``labels.txt`` naming the classes,
        or None), ``problems`` (list of one-line strings, empty when the file is
        consistent), ``labels`` (int64 array, dataset order).
    """
    ds = dataset if isinstance(dataset, FaceRecordDataset) else FaceRecordDataset(dataset)
    labels = ds.labels()
    problems = []
    n = len(labels)
    num_classes = int(ds.num_classes)
    if n:
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            i = int(bad[0])
            problems.append("%s: %d image(s) have labels outside [0, %d) (class count from %s); "
                            "first: record %d, label %d"
                            % (ds.rec_path, bad.size, num_classes, ds.num_classes_source,
                               int(ds.image_keys[i]), int(labels[i])))
        present, counts = np.unique(labels, return_counts=True)
    else:
        present, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if ds.identity_ranges is not None:
        key_to_pos = {int(k): p for p, k in enumerate(ds.image_keys)}
        for c, (start, stop) in enumerate(ds.identity_ranges):
            pos = [key_to_pos[k] for k in range(int(start), int(stop))]
            wrong = [p for p in pos if labels[p] != c]
            if wrong:
                problems.append("%s: identity record %d says records [%d, %d) are class %d, "
                                "but record %d has label %d"
                                % (ds.rec_path, int(ds.image_keys[-1]) + 1 + c if n else c,
                                   start, stop, c, int(ds.image_keys[wrong[0]]),
                                   int(labels[wrong[0]])))
                break
    if check_images and n:
        it = range(n) if progress is None else progress(range(n), n)
        for i in it:
            try:
                image = ds.get(i, strict=True)[0]
            except RecordFormatError as err:
                problems.append(str(err))
                continue
            if ds.image_size is not None and tuple(image.shape[:2]) != tuple(ds.image_size):
                problems.append("%s: record %d: image is %dx%d, expected %dx%d"
                                % (ds.rec_path, int(ds.image_keys[i]), *image.shape[:2],
                                   *ds.image_size))
    in_range = present[(present >= 0) & (present < num_classes)]
    return {
        "path": ds.rec_path, "layout": ds.layout, "images": n, "num_classes": num_classes,
        "num_classes_source": ds.num_classes_source,
        "image_size": None if ds.image_size is None else tuple(int(v) for v in ds.image_size),
        "identities": int(present.size), "empty_classes": int(num_classes - in_range.size),
        "per_identity": {"min": int(counts.min()) if n else 0,
                         "median": float(np.median(counts)) if n else 0.0,
                         "max": int(counts.max()) if n else 0},
        "label_min": int(labels.min()) if n else None,
        "label_max": int(labels.max()) if n else None,
        "labels_path": ds.labels_path, "problems": problems, "labels": labels,
    }


def format_summary(summary):
    """The summary of :func:`summarize_rec` as aligned text lines."""
    size = summary["image_size"]
    per = summary["per_identity"]
    rows = [
        ("file", summary["path"]),
        ("layout", summary["layout"]),
        ("images", str(summary["images"])),
        ("classes", "%d (from %s)" % (summary["num_classes"], summary["num_classes_source"])),
        ("identities with images", "%d (%d classes empty)"
         % (summary["identities"], summary["empty_classes"])),
        ("images per identity", "min %d / median %g / max %d"
         % (per["min"], per["median"], per["max"])),
        ("label range", "[%s, %s] vs [0, %d)" % (summary["label_min"], summary["label_max"],
                                                 summary["num_classes"])),
        ("image size (HxW)", "-" if size is None else "%dx%d" % tuple(size)),
        ("names", "%s (one per class)" % summary["labels_path"]
         if summary.get("labels_path") else "- (no labels.txt)"),
        ("problems", str(len(summary["problems"])) if summary["problems"] else "none"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join("%s  %s" % (k.ljust(width), v) for k, v in rows)


def sample_grid(dataset, rows=8, cols=8, labels=None, seed=0, pad=2, problems=None):
    """Tile sample images: one row per identity, up to ``cols`` of its images.

    Identities are spread evenly over the labels present; images within an
    identity are drawn at random (``seed``).  Images are resized to the
    dataset's image size when they differ; an image that does not decode
    cleanly (see :func:`summarize_rec`) leaves its tile grey, and its error is
    appended to ``problems`` when that list is given.

    Returns
    -------
    numpy.ndarray
        (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) uint8 RGB, grey background.
    """
    ds = dataset
    if labels is None:
        labels = ds.labels()
    labels = np.asarray(labels)
    if len(ds) == 0:
        raise ValueError("%s: no images to show" % ds.rec_path)
    size = tuple(ds.image_size) if ds.image_size is not None else ds[0][0].shape[:2]
    present = np.unique(labels)
    chosen = present[np.unique(np.linspace(0, present.size - 1, min(rows, present.size))
                               .round().astype(int))]
    rng = np.random.default_rng(seed)
    h, w = size
    grid = np.full((len(chosen) * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, np.uint8)
    for r, label in enumerate(chosen):
        idx = np.flatnonzero(labels == label)
        pick = np.sort(rng.choice(idx, size=min(cols, idx.size), replace=False))
        for c, i in enumerate(pick):
            try:
                image = resize_image(ds.get(int(i), strict=True)[0], size)
            except RecordFormatError as err:
                if problems is not None and str(err) not in problems:
                    problems.append(str(err))
                continue
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[top:top + h, left:left + w] = image
    return grid
