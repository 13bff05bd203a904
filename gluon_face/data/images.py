"""Folders of image files: listing them in a stable order and decoding them lazily.

:func:`find_images` lists every image under a folder; :class:`ImageFiles` turns
such a list into a sequence that decodes one image per index, which is what
:func:`gluon_face.embedding.embed_images` takes, so a large folder is never held
in memory at once.
"""
import os

import numpy as np

# one list of image endings for the whole package (also used by pack_folder)
from ._image import IMAGE_EXTENSIONS

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "find_images"]


def find_images(folder):
    """Sorted relative paths of every image file under ``folder`` (recursive).

    A file counts as an image when its name ends in one of
    :data:`IMAGE_EXTENSIONS` (case-insensitive); hidden files and folders are
    skipped.  Paths use ``/`` and sort by their components, so the order does not
    depend on the file system.

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    list of str
        Paths relative to ``folder``.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, folder)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(name if rel == "." else os.path.join(rel, name))
    parts = sorted(tuple(p.split(os.sep)) for p in found)
    return ["/".join(p) for p in parts]


class ImageFiles:
    """A lazily decoded list of image files: ``files[i]`` -> ``(H, W, 3)`` uint8 RGB.

    Suitable as the ``images`` argument of
    :func:`gluon_face.embedding.embed_images`: only one batch is decoded at a
    time.

    Parameters
    ----------
    paths : list of str
        Image files (absolute, or relative to ``root``).
    root : str, optional
        Folder the paths are relative to.
    """

    def __init__(self, paths, root=None):
        self.paths = list(paths)
        self.root = root

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        path = self.paths[i] if self.root is None else os.path.join(self.root, self.paths[i])
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from None
