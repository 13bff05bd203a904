"""The data-pipeline benchmark on a small synthetic file."""
import numpy as np

from gluon_face.benchmarks.data import benchmark_loader, default_worker_counts, make_synthetic_rec
from gluon_face.data import FaceRecordDataset


def test_synthetic_rec_and_loader(tmp_path):
    info = make_synthetic_rec(str(tmp_path / "train"), num_images=40, num_classes=6,
                              image_size=32)
    assert info["num_images"] == 40 and info["num_classes"] == 6
    ds = FaceRecordDataset(str(tmp_path))
    assert ds.image_size == (32, 32) and ds[0][0].shape == (32, 32, 3)
    counts = np.bincount(ds.labels())
    assert counts.tolist() == [7, 7, 7, 7, 6, 6]
    # smooth images: JPEG is far smaller than raw pixels
    assert info["mean_bytes"] < 32 * 32 * 3 / 2
    for workers in (0, 2):
        r = benchmark_loader(str(tmp_path), num_workers=workers, batch_size=8, num_images=48)
        assert r["num_workers"] == workers and r["images"] == 48
        assert r["seconds"] > 0 and r["images_per_s"] > 0
    counts = default_worker_counts()
    assert counts[0] == 0 and counts == sorted(set(counts))
