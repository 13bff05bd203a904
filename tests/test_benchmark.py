"""tools/benchmark.py --quick end to end, and the measurement helpers of gluon_face.benchmarks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gluon_face.benchmarks.backbones import BACKBONE_MODES, TRAIN_MODES, backbone_gflop
from gluon_face.benchmarks.timing import summarize_times
from gluon_face.commands import benchmark
from gluon_face.model_zoo import get_model
from gluon_face.model_zoo.summary import summarize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    rc = benchmark.main(["--quick", "--json", str(out)])
    return rc, json.loads(out.read_text())


def test_quick_run_writes_positive_numbers(quick):
    rc, result = quick
    assert rc == 0
    assert result["gemm_roof_gflops"] > 0 and result["gemm_roof_samples"]
    rows = result["rows"]
    backbone = [r for r in rows if r.get("workload") != "head"]
    head = [r for r in rows if r.get("workload") == "head"]
    want = {("embed", m) for m in BACKBONE_MODES} | {("train", m) for m in TRAIN_MODES}
    assert {(r["task"], r["mode"]) for r in backbone} == want
    for r in backbone:
        for key in ("images_s", "images_s_min", "images_s_max", "step_s", "gflop_per_image",
                    "gflops", "roof_fraction", "speedup", "peak_rss_mib"):
            assert r[key] > 0, (key, r)
        assert r["images_s_min"] <= r["images_s"] <= r["images_s_max"]
        assert 0 <= r["rss_added_mib"] <= r["peak_rss_mib"]
        assert r["network"] == "faceresnet18" and r["repeats"] == 2
        # images/s and step time describe the same measurement
        assert r["images_s"] == pytest.approx(r["batch_size"] / r["step_s"])
    assert {r["mode"] for r in head} == {"fused", "plain", "fused+ce"}
    for r in head:
        for key in ("step_s", "step_s_min", "step_s_max", "gflops", "roof_fraction",
                    "speedup", "peak_rss_mib"):
            assert r[key] > 0, (key, r)
    first = {r["task"]: r for r in reversed(backbone)}
    assert all(r["speedup"] == pytest.approx(1.0) for r in first.values())


def test_quick_table_is_printed(tmp_path, capsys):
    rc = benchmark.main(["--quick", "--networks", "none", "--head-classes", "500",
                           "--repeats", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "arcface head C=500" in out and "GEMM roof" in out


def test_flops_per_image_from_the_summary():
    net = get_model("faceresnet18")
    macs = summarize(net).macs
    assert backbone_gflop(net, train=False) == pytest.approx(2 * macs / 1e9)
    assert backbone_gflop(net, train=True) == pytest.approx(6 * macs / 1e9)


def test_summarize_times():
    s = summarize_times([2.0, 1.0, 4.0], work=8)
    assert s["rate"] == 4.0 and s["rate_min"] == 2.0 and s["rate_max"] == 8.0
    assert s["step_s"] == 2.0 and s["repeats"] == 3
    with pytest.raises(ValueError):
        summarize_times([])
    with pytest.raises(ValueError):
        summarize_times([1.0, 0.0])


@pytest.mark.parametrize("argv", [["--modes", "int4"], ["--repeats", "0"],
                                  ["--head-classes", "ten"], ["--networks", "resnet9"]])
def test_bad_arguments_fail_with_one_line(argv, capsys):
    rc = benchmark.main(argv + ["--quick", "--head-classes", "100"] if argv[0] == "--networks"
                          else argv)
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("name", ["timing", "memory", "text", "capacity"])
def test_shared_modules_need_only_the_standard_library(name):
    # tools/benchmark_torch.py loads the first three by path in a venv without numpy,
    # MXNet or gluon_face, and the batch search is pure: -I -S leaves only the
    # standard library importable.
    path = ROOT / "gluon_face" / "benchmarks" / f"{name}.py"
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('m', {str(path)!r}); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "print(sorted({'numpy', 'mxnet', 'gluon_face'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
