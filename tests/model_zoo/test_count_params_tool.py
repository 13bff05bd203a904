"""gluon_face.commands.count_params (tools/count_params.py), called through its main(argv)."""
import re

import pytest

from gluon_face.commands import count_params


def _rows(text):
    """{row name: (params, MMAC)} from the printed table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"(\S.*?)\s{2,}(?:\S+\s+)?([\d,]+)\s+[\d.]+ M\s+([\d,.]+)", line)
        if m:
            rows[m.group(1)] = (int(m.group(2).replace(",", "")),
                                float(m.group(3).replace(",", "")))
    return rows


def test_exercise_table(capsys):
    assert count_params.main(["--network", "faceresnet50", "--emb-size", "512",
                              "--num-classes", "85742"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    for name in ["stem", "stage1", "stage2", "stage3", "stage4", "output", "head arcface",
                 "backbone", "backbone + head"]:
        assert name in rows, (name, out)
    assert rows["backbone"][0] == 43_590_848
    assert rows["head arcface"][0] == 512 * 85742 == 43_899_904
    assert rows["backbone + head"][0] == 43_590_848 + 43_899_904
    assert sum(rows[g][0] for g in ["stem", "stage1", "stage2", "stage3", "stage4",
                                    "output"]) == 43_590_848
    assert abs(rows["backbone"][1] / 1e3 - 6.31) < 0.005  # GMAC
    assert "6.31 GMAC" in out
    assert "50.2% of all" in out and "1.01x the backbone" in out
    assert "38,144 BN running statistics" in out


def test_other_settings(capsys):
    assert count_params.main(["--network", "faceresnet18", "--emb-size", "128",
                              "--num-classes", "1000", "--image-size", "96", "128",
                              "--loss", "softmax", "--act-type", "relu"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert "input 3x96x128" in out and "512x6x8" in out
    assert rows["head softmax"][0] == 128 * 1000
    assert rows["output"][0] == 2 * 512 + 512 * 6 * 8 * 128 + 128 + 2 * 128


def test_layer_listing(capsys):
    assert count_params.main(["--network", "faceresnet18", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "features.3.0.downsample.0 (Conv2D)" in out
    assert "output.1 (Dense)" in out


@pytest.mark.parametrize("argv,match", [
    (["--network", "resnet9"],
     "unknown model 'resnet9'; valid names: faceresnet10-demo, faceresnet100"),
    (["--image-size", "100"], "multiple of 16"),
    (["--image-size", "96", "96", "96"], "one or two"),
    (["--loss", "triplet"], "unknown head 'triplet'"),
    (["--num-classes", "0"], "num_classes"),
])
def test_bad_arguments_one_line_exit_2(capsys, argv, match):
    assert count_params.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("count_params: error: ")
    assert match in lines[0]
