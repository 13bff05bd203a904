"""The README's default job, run as a user runs it: ``python tools/train.py``.

It trains on the built-in glyph identities and must recognise identities it never
saw: open-set verification accuracy at least 0.95 (10-fold, no flip test: glyphs
are not mirror-symmetric), at least 25 points above raw pixels on the same pairs,
and all-pairs TAR at FAR 1e-3 and rank-1 identification far above raw pixels'.
Timing lives in the README, not here.
"""
import csv
import os
import subprocess
import sys

import numpy as onp
import pytest

from gluon_face.data import FaceRecordDataset, load_bin
from gluon_face.evaluation import (
    all_pairs_verification,
    identification,
    split_gallery_probes,
    verification_accuracy,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


def _pixels(images):
    """The raw-pixels baseline: normalised pixels, centred per image."""
    x = (onp.asarray(images).reshape(len(images), -1).astype(onp.float64) - 127.5) / 128
    return x - x.mean(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def default_run(glyph_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "run"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"),
                           "--output", str(out)], capture_output=True, text=True,
                          timeout=1200, cwd=str(tmp_path_factory.getbasetemp()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("open_set_acc")]
    return out, rows[-1], proc.stdout


def test_default_job_beats_raw_pixels_on_unseen_identities(default_run, glyph_dir):
    out, last, stdout = default_run
    accuracy = float(last["open_set_acc"])
    images, issame = load_bin(os.path.join(glyph_dir, "open_set.bin"))
    pixels = verification_accuracy(_pixels(images), issame).accuracy
    assert accuracy >= 0.95, stdout
    assert accuracy - pixels >= 0.25, (accuracy, pixels)
    # no flip test for glyphs: the reported number is the one without the mirror
    assert last["open_set_acc"] == last["open_set_acc_noflip"]
    assert "open-set identities: TAR" in stdout


def test_default_job_open_set_tar_and_rank1(default_run, glyph_dir):
    _, last, _ = default_run
    ds = FaceRecordDataset(os.path.join(glyph_dir, "open_set"))
    images = onp.stack([ds[i][0] for i in range(len(ds))])
    labels = ds.labels()
    x = _pixels(images)
    pixel_tar = all_pairs_verification(x, labels).tar_at_far[1e-3]
    gallery, probes = split_gallery_probes(labels)
    pixel_rank1 = identification(x[gallery], labels[gallery], x[probes],
                                 labels[probes]).rank[1]
    tar, rank1 = float(last["open_tar_far1e-3"]), float(last["open_rank1"])
    assert tar > 0.35 and tar > 5 * pixel_tar, (tar, pixel_tar)
    assert rank1 > 0.5 and rank1 > 5 * pixel_rank1, (rank1, pixel_rank1)
