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
    assert {r["mode"] for r in head} == {"fused", "plain", "fused+ce", "products"}
    for r in head:
        assert r["floor"] == (r["mode"] == "products")
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
    assert "head C=500: GEMM bound" in out and "products alone" in out


def test_head_bounds_line():
    head = dict(workload="head", batch_size=128, num_classes=100000, emb_size=512)
    flop = 6 * 128 * 100000 * 512  # 39.3 GFLOP at 393.216 GFLOP/s: a 0.1 s bound
    rows = [dict(head, mode="fused", step_s=0.3, gflops=flop / 0.3 / 1e9, floor=False),
            dict(head, mode="products", step_s=0.15, gflops=flop / 0.15 / 1e9, floor=True),
            dict(workload="head", batch_size=128, num_classes=10, emb_size=512,
                 mode="fused", step_s=1.0, gflops=1.0, floor=False)]
    text = benchmark.describe_head_bounds(rows, 393.216)
    assert text == ("head C=100000: GEMM bound 0.100 s (its FLOP at the float32 roof); "
                    "products alone (fully_connected fwd+bwd) 0.150 s = 1.50x the bound; "
                    "fused 0.300 s = 3.00x the bound, 2.00x the products")
    assert benchmark.describe_head_bounds(rows[:1], 393.216) == ""


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


PROFILER_TABLE = """
Profile Statistics:
\tNote the difference in units for different entries.
Custom Operator
=================
Name  Total Count  Time (ms)  Min Time (ms)  Max Time (ms)  Avg Time (ms)
----  -----------  ---------  -------------  -------------  -------------
gf_row_normalize::pure_python  2  6.0360  0.7560  5.2800  3.0180

Device Storage
=================
Name  Total Count  Min Use  (kB)  Max Use  (kB)  Avg Use  (kB)
----  -----------  -------------  -------------  -------------
Memory: cpu/0  40  0.0000  192.0640  96.0320

MXNET_C_API
=================
Name  Total Count  Time (ms)  Min Time (ms)  Max Time (ms)  Avg Time (ms)
----  -----------  ---------  -------------  -------------  -------------
MXNDArrayWaitAll  2  4152.9531  2049.6721  2103.2810  2076.4766

operator
=================
Name  Total Count  Time (ms)  Min Time (ms)  Max Time (ms)  Avg Time (ms)
----  -----------  ---------  -------------  -------------  -------------
_backward_Convolution  106  1519.6890  2.1520  63.5840  14.3367
BatchNorm,Activation  50  22.1470  0.0730  2.7000  0.4429
"""


def test_profiler_table_parsed_by_section():
    from gluon_face.benchmarks.profile import parse_operator_table

    rows = parse_operator_table(PROFILER_TABLE)
    # operators and custom operators; not the C API calls, not the memory section
    assert rows == [
        {"operator": "gf_row_normalize::pure_python", "calls": 2, "total_ms": 6.036},
        {"operator": "_backward_Convolution", "calls": 106, "total_ms": 1519.689},
        {"operator": "BatchNorm,Activation", "calls": 50, "total_ms": 22.147},
    ]


def test_profile_rows_come_from_a_worker(tmp_path, capsys, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)  # the worker's working directory too
    out = tmp_path / "rows.json"
    rc = benchmark.main(["--quick", "--profile", "--head-classes", "", "--memory-batches", "",
                         "--modes", "fused", "--no-embed", "--repeats", "1", "--json",
                         str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "convolutions ms" in text
    (row,) = json.loads(out.read_text())["profile"]
    assert (row["network"], row["task"], row["mode"]) == ("faceresnet18", "train", "fused")
    assert row["pid"] != os.getpid() and row["steps"] == 1
    names = {o["operator"] for o in row["operators"]}
    # bulking off: forward and backward convolutions are timed on their own
    assert {"Convolution", "_backward_Convolution"} <= names
    conv = sum(o["ms_per_step"] for o in row["operators"] if o["convolution"])
    assert row["convolution_ms"] == pytest.approx(conv)
    assert 0 < row["convolution_ms"] < row["operator_ms"]
    assert row["operator_ms"] == pytest.approx(sum(o["ms_per_step"] for o in row["operators"]))
    ms = [o["ms_per_step"] for o in row["operators"]]
    assert ms == sorted(ms, reverse=True)
    # MXNet's trace file (profile.json by default) is not left in the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]
