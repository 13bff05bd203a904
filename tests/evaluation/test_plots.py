"""Figures render to real PNG files on the Agg canvas."""
import csv
from pathlib import Path

import numpy as onp
import pytest

from gluon_face.evaluation import (
    identification,
    plot_cmc,
    plot_curves,
    plot_embeddings,
    plot_roc,
    plot_target_logits,
    split_gallery_probes,
    verification_accuracy,
)

PNG = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_bytes=2000):
    data = Path(path).read_bytes()
    assert data[:8] == PNG
    assert len(data) > min_bytes
    # width and height from the IHDR chunk
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 100
    leftovers = [p.name for p in Path(path).parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_plot_embeddings_2d_with_centres(tmp_path):
    rng = onp.random.RandomState(0)
    x = rng.randn(60, 2)
    labels = onp.repeat(onp.arange(3), 20)
    fig = plot_embeddings(x, labels, title="2-D", unit_circle=True, normalize=True,
                          centers=rng.randn(3, 2), path=tmp_path / "emb.png")
    check_png(tmp_path / "emb.png")
    ax = fig.axes[0]
    assert len(ax.collections) == 3  # one scatter per class
    assert ax.get_title() == "2-D"


def test_plot_embeddings_projects_high_dim(tmp_path):
    rng = onp.random.RandomState(1)
    fig = plot_embeddings(rng.randn(50, 16), rng.randint(0, 25, 50), path=tmp_path / "pca.png")
    check_png(tmp_path / "pca.png")
    assert fig.axes[0].get_xlabel() == "PC 1"
    assert fig.axes[0].get_legend() is None  # too many classes for a legend
    with pytest.raises(ValueError, match="2-D embeddings"):
        plot_embeddings(rng.randn(5, 3), [0] * 5, centers=onp.ones((1, 2)))
    with pytest.raises(ValueError, match="one entry per embedding"):
        plot_embeddings(rng.randn(5, 2), [0] * 4)


def test_plot_roc(tmp_path):
    rng = onp.random.RandomState(2)
    emb = rng.randn(200, 8)
    same = rng.rand(100) < 0.5
    emb[1::2][same] = emb[0::2][same] + 0.5 * rng.randn(int(same.sum()), 8)
    res = verification_accuracy(emb, same)
    fig = plot_roc({"model": res, "pair": (res.fpr, res.tpr)}, path=tmp_path / "roc.png")
    check_png(tmp_path / "roc.png")
    assert fig.axes[0].get_xscale() == "log"
    assert "acc" in fig.axes[0].get_lines()[0].get_label()
    plot_roc(res)  # a single result
    with pytest.raises(ValueError):
        plot_roc({})


def test_plot_cmc(tmp_path):
    rng = onp.random.RandomState(3)
    labels = onp.repeat(onp.arange(30), 4)
    emb = rng.randn(30, 8)[labels] + 0.8 * rng.randn(120, 8)
    gallery, probes = split_gallery_probes(labels)
    res = identification(emb[gallery], labels[gallery], emb[probes], labels[probes])
    fig = plot_cmc({"model": res, "cmc": [0.2, 0.5, 1.0]}, path=tmp_path / "cmc.png",
                   title="CMC")
    check_png(tmp_path / "cmc.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # 23 gallery identities
    lines = ax.get_lines()
    assert len(lines) == 2 and "rank-1" in lines[0].get_label()
    onp.testing.assert_array_equal(lines[0].get_ydata(), res.cmc)
    onp.testing.assert_array_equal(lines[0].get_xdata(), onp.arange(1, len(res.cmc) + 1))
    assert ax.get_title() == "CMC"
    assert plot_cmc(res).axes[0].get_title() == ""  # a single result, no title
    with pytest.raises(ValueError):
        plot_cmc({})
    with pytest.raises(ValueError, match="finite rates"):
        plot_cmc({"bad": [[0.1, 0.2]]})


def test_plot_curves_from_dict_and_csv(tmp_path):
    history = {"step": [0, 10, 20, 30], "loss": [5.0, 3.0, 2.0, 1.5],
               "lr": [0.1, 0.1, 0.01, 0.01], "open_set": [None, 0.6, None, 0.8]}
    fig = plot_curves(history, path=tmp_path / "curves.png", title="run")
    check_png(tmp_path / "curves.png")
    assert len(fig.axes) == 3
    assert fig.axes[2].get_yscale() == "log"
    csv_path = tmp_path / "metrics.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "loss", "acc", "time"])
        for i in range(5):
            w.writerow([i, 10 * i, 4 - i * 0.5, "" if i % 2 else 0.5 + 0.1 * i, 1.0])
    fig = plot_curves(csv_path, path=tmp_path / "csv.png")
    check_png(tmp_path / "csv.png")
    assert fig.axes[0].get_xlabel() == "step"
    with pytest.raises(ValueError, match="no data rows"):
        empty = tmp_path / "empty.csv"
        empty.write_text("step,loss\n")
        plot_curves(empty)
    with pytest.raises(ValueError, match="no loss or accuracy"):
        plot_curves({"step": [1, 2], "time": [3, 4]})


def test_plot_target_logits(tmp_path):
    fig = plot_target_logits(path=tmp_path / "margins.png")
    check_png(tmp_path / "margins.png")
    assert len(fig.axes[0].get_lines()) >= 5
    with pytest.raises(ValueError, match=r"\(s, m, a, b\)"):
        plot_target_logits({"bad": (1, 2)})
