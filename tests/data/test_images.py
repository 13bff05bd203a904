"""find_images and ImageFiles: listing and lazily decoding a folder of images."""
import numpy as onp
import pytest

from gluon_face.data.images import ImageFiles, find_images

H = W = 8


def test_find_images_and_image_files(tmp_path):
    from PIL import Image

    rng = onp.random.RandomState(2)
    arrays = {}
    for rel in ("b/2.png", "a/10.png", "a/9.jpg", "c.bmp"):
        path = tmp_path / rel
        path.parent.mkdir(exist_ok=True)
        arrays[rel] = rng.randint(0, 256, size=(H, W, 3)).astype(onp.uint8)
        Image.fromarray(arrays[rel]).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(arrays["c.bmp"]).save(tmp_path / ".hidden" / "x.png")
    paths = find_images(tmp_path)
    assert paths == ["a/10.png", "a/9.jpg", "b/2.png", "c.bmp"]
    files = ImageFiles(paths, root=str(tmp_path))
    assert len(files) == 4
    onp.testing.assert_array_equal(files[0], arrays["a/10.png"])
    onp.testing.assert_array_equal(files[3], arrays["c.bmp"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: cannot decode"):
        ImageFiles(["broken.png"], root=str(tmp_path))[0]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_images(tmp_path / "missing")
