"""tools/benchmark.py's memory table (one worker process per row) and largest-batch search.

The search (gluon_face.benchmarks.capacity) is tested as a pure function against
fake probes; the command's wiring with fake workers; and one small run of real
workers (faceresnet18 at 32 px) that each row comes from a process of its own.
"""
import json
import os

import pytest

from gluon_face.benchmarks.capacity import (
    ProbeFailed,
    describe_capacity,
    fit_line,
    largest_batch,
)
from gluon_face.benchmarks.workers import out_of_memory
from gluon_face.commands import benchmark


def _truth(peak, limit, step=8, top=5000):
    """The largest multiple of ``step`` whose peak is at most ``limit``, by brute force."""
    fits = [b for b in range(step, top, step) if peak(b) <= limit]
    return max(fits) if fits else None


class FakeProbe:
    """peak(batch) for batches at or under ``stop_mib``; None (stopped) above, as the watch."""

    def __init__(self, peak, stop_mib=float("inf")):
        self.peak, self.stop_mib, self.calls = peak, stop_mib, []

    def __call__(self, batch):
        self.calls.append(batch)
        value = self.peak(batch)
        return value if value <= self.stop_mib else None


# -- the search, pure ----------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [(1200.0, 61.0), (300.0, 7.0), (4000.0, 150.0)])
@pytest.mark.parametrize("limit", [2000.0, 10000.0, 22000.0])
@pytest.mark.parametrize("stopped", [False, True])
def test_linear_memory_gives_the_exact_largest_batch(a, b, limit, stopped):
    probe = FakeProbe(lambda n: a + b * n, stop_mib=limit if stopped else float("inf"))
    result = largest_batch(probe, limit, seeds=(64, 128), step=8, max_probes=5)
    want = _truth(probe.peak, limit)
    assert result["largest"] == want
    assert result["exact"]
    assert describe_capacity(result) == (str(want) if want else
                                         f"none ({result['above']} does not fit)")
    assert len(probe.calls) <= 2 + 5
    assert all(n % 8 == 0 for n in probe.calls)
    if want is not None:  # the line is found from the seeds: two probes bracket the answer
        assert result["peak_mib"] == pytest.approx(a + b * want)
        if a + b * 128 <= limit and not stopped:
            assert result["probes"] <= 2


def test_known_batches_are_not_probed_again():
    peak = lambda n: 900.0 + 12.5 * n  # noqa: E731
    known = {16: peak(16), 64: peak(64), 128: peak(128)}
    probe = FakeProbe(peak)
    result = largest_batch(probe, 5000.0, seeds=(64, 128), known=known)
    assert not set(probe.calls) & set(known)
    assert result["largest"] == _truth(peak, 5000.0) and result["exact"]
    assert [r["probed"] for r in result["runs"][:3]] == [False, False, False]
    assert result["fit"]["b_mib"] == pytest.approx(12.5)


def test_the_probe_cap_is_respected_and_an_unfinished_answer_says_so():
    # strongly curved: the line keeps missing, and one probe cannot bracket the answer
    probe = FakeProbe(lambda n: 1000.0 + 40 * n + 0.05 * n * n)
    result = largest_batch(probe, 60000.0, seeds=(64, 128), max_probes=1)
    assert len(probe.calls) == 3 and result["probes"] == 1
    assert not result["exact"]
    assert describe_capacity(result).startswith(f"≥ {result['largest']} (")
    for cap in (0, 2, 3):
        probe = FakeProbe(lambda n: 1000.0 + 40 * n + 0.05 * n * n)
        result = largest_batch(probe, 60000.0, seeds=(64, 128), max_probes=cap)
        assert len(probe.calls) <= 2 + cap and result["probes"] <= cap


def test_a_small_limit_bisects_below_the_seeds():
    probe = FakeProbe(lambda n: 1200.0 + 61 * n, stop_mib=3500.0)
    result = largest_batch(probe, 3500.0, seeds=(64, 128))
    assert probe.calls[0] == 64 and 128 not in probe.calls  # 64 did not fit: 128 cannot
    assert result["largest"] == _truth(probe.peak, 3500.0) == 32 and result["exact"]
    nothing = largest_batch(FakeProbe(lambda n: 1200.0 + 61 * n, 1000.0), 1000.0)
    assert nothing["largest"] is None and nothing["exact"]
    assert describe_capacity(nothing) == "none (8 does not fit)"


def test_a_budget_beyond_the_machine_is_predicted_and_labelled():
    peak = lambda n: 1228.8 + 61 * n  # noqa: E731
    machine, budget = 21.0 * 1024, 24.0 * 1024
    probe = FakeProbe(peak, stop_mib=machine)
    result = largest_batch(probe, machine, seeds=(64, 128), budget_mib=budget)
    measured = _truth(peak, machine)
    assert result["largest"] == measured and result["exact"]
    assert max(peak(n) for n in probe.calls if peak(n) <= machine) <= machine
    assert max(probe.calls) <= measured + 8  # nothing ran towards the budget
    a, b = fit_line({n: peak(n) for n in probe.calls})
    assert result["predicted"] == int((budget - a) / b) // 8 * 8 > measured
    text = describe_capacity(result)
    assert text.startswith(f"{result['predicted']} (predicted from 64,128,")
    assert "peak = 1.2 GiB + 61.0 MiB/image" in text
    assert text.endswith(f"measured up to 21.0 GiB: {measured} fits)")


def test_a_probe_that_cannot_run_ends_the_search_with_a_lower_bound():
    def probe(n):
        if n > 128:
            raise ProbeFailed("failed (exit 1): boom")
        return 1000.0 + 10 * n
    result = largest_batch(probe, 8000.0, seeds=(64, 128))
    assert result["largest"] == 128 and not result["exact"]
    assert result["failed"].startswith("B=")
    assert describe_capacity(result).startswith("≥ 128 (B=")


def test_bad_search_arguments():
    with pytest.raises(ValueError):
        largest_batch(lambda n: 1.0, 0.0)
    with pytest.raises(ValueError):
        largest_batch(lambda n: 1.0, 100.0, step=0)


def test_what_counts_as_out_of_memory():
    base = {"result": None, "returncode": 1, "stderr": "", "status": "failed (exit 1): x"}
    assert out_of_memory(dict(base, status="stopped: RSS > 2 GiB", returncode=-9))
    assert out_of_memory(dict(base, returncode=-9))  # killed without our stop: OOM killer
    assert out_of_memory(dict(base, returncode=-6,
                              stderr="terminate called after throwing an instance of "
                                     "'std::bad_alloc'\n  what():  std::bad_alloc\n"))
    assert out_of_memory(dict(base, stderr="Traceback ...\nMemoryError\n"))
    assert not out_of_memory(dict(base, stderr="ValueError: unknown model\n"))
    assert not out_of_memory(dict(base, status="stopped: > 60 s", returncode=-9))
    assert not out_of_memory(dict(base, result={"memory": {}}, status="ok", returncode=0))


# -- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--memory-batches", "x"], ["--memory-batches", "16,0"], ["--memory-batches=-4"],
    ["--max-batch-gib", "0"], ["--max-batch-gib=-1"], ["--max-batch-gib", "nan"],
    ["--max-batch-gib", "lots"], ["--max-batch-gib", "4", "--no-train"],
    ["--max-batch-gib", "4", "--modes", "int8"],
])
def test_bad_memory_options_fail_with_one_line(argv, capsys):
    rc = benchmark.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("benchmark: error: ")


def test_memory_batches_default_and_quick():
    args = benchmark._parse(["--batch-size", "16"])
    assert args.memory_batches == [16, 64, 128] and args.max_batch_gib is None
    assert benchmark._parse(["--batch-size", "64"]).memory_batches == [64, 128]
    assert benchmark._parse(["--memory-batches", ""]).memory_batches == []
    quick = benchmark._parse(["--quick"])
    assert quick.memory_batches and max(quick.memory_batches) <= 8
    assert benchmark._seeds([16, 64, 128]) == [64, 128]
    assert benchmark._seeds([2]) == [2, 4] and benchmark._seeds([]) == [64, 128]
    jobs = benchmark._memory_jobs(benchmark._parse(["--networks", "faceresnet18",
                                                    "--modes", "hybrid,int8",
                                                    "--memory-batches", "8,32"]))
    assert jobs == [("faceresnet18", "embed", "hybrid", 8), ("faceresnet18", "embed", "int8", 8),
                    ("faceresnet18", "train", "hybrid", 8),
                    ("faceresnet18", "train", "hybrid", 32)]


def test_capacity_wiring_with_fake_workers(monkeypatch, tmp_path, capsys):
    """The command's search: memory rows as seeds, the machine's limit, the labelled
    prediction in the table and the JSON; workers faked in-process."""
    lines = {"hybrid": (1228.8, 61.0), "bf16": (900.0, 40.0)}
    calls = []

    def fake_run(args, name, task, mode, batch, limit_gib):
        a, b = lines[mode] if task == "train" else (500.0, 1.0)
        peak = a + b * batch
        calls.append((task, mode, batch, limit_gib))
        row = {"network": name, "task": task, "mode": mode, "batch_size": batch,
               "image_size": args.image_size, "wall_s": 0.0, "limit_gib": limit_gib}
        if peak > limit_gib * 1024:
            row.update(peak_rss_mib=None, rss_added_mib=None, out_of_memory=True,
                       status=f"stopped: RSS > {limit_gib:g} GiB")
        else:
            row.update(peak_rss_mib=peak, rss_added_mib=peak - 300, pid=10_000 + len(calls),
                       status="ok")
        return row, None

    monkeypatch.setattr(benchmark, "_memory_run", fake_run)
    monkeypatch.setattr(benchmark, "_machine_limit_gib", lambda: 12.0)
    monkeypatch.setattr(benchmark, "_run_workers",
                        lambda args: ([], {"float32": [1.0], "bfloat16": []}, []))
    out = tmp_path / "cap.json"
    rc = benchmark.main(["--networks", "faceresnet18", "--modes", "hybrid,bf16",
                         "--head-classes", "", "--max-batch-gib", "24", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.read_text())
    assert [(r["task"], r["mode"], r["batch_size"]) for r in result["memory"]] == [
        ("embed", "hybrid", 16), ("embed", "bf16", 16),
        ("train", "hybrid", 16), ("train", "hybrid", 64), ("train", "hybrid", 128),
        ("train", "bf16", 16), ("train", "bf16", 64), ("train", "bf16", 128)]
    assert all(limit <= 12.0 for *_, limit in calls)  # nothing ran past the machine
    caps = {c["mode"]: c for c in result["capacity"]}
    assert set(caps) == {"hybrid", "bf16"}
    for mode, (a, b) in lines.items():
        c = caps[mode]
        assert c["machine_limited"] and c["budget_gib"] == 24 and c["limit_gib"] == 12.0
        assert c["largest"] == _truth(lambda n, a=a, b=b: a + b * n, 12.0 * 1024)
        assert c["exact"]
        assert c["predicted"] == int((24 * 1024 - a) / b) // 8 * 8
        assert [w["batch_size"] for w in c["workers"]][0] not in (16, 64, 128)
        assert f"{c['predicted']} (predicted from 16,64,128," in text
    assert "largest batch in 24 GiB" in text and "measured up to 12.0 GiB" in text


# -- real workers --------------------------------------------------------------------------

@pytest.mark.slow
def test_each_memory_row_comes_from_a_process_of_its_own(tmp_path, capsys):
    out = tmp_path / "mem.json"
    rc = benchmark.main(["--quick", "--modes", "hybrid", "--head-classes", "",
                         "--memory-batches", "2,4", "--repeats", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.read_text())
    memory = result["memory"]
    assert [(r["task"], r["mode"], r["batch_size"]) for r in memory] == [
        ("embed", "hybrid", 2), ("train", "hybrid", 2), ("train", "hybrid", 4)]
    pids = [r["pid"] for r in memory]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    for r in memory:
        assert r["status"] == "ok" and r["network"] == "faceresnet18" and r["image_size"] == 32
        assert 0 < r["baseline_rss_mib"] < r["peak_rss_mib"]
        assert r["rss_added_mib"] == pytest.approx(r["peak_rss_mib"] - r["baseline_rss_mib"])
        assert r["warmup"] + r["steps"] >= 3 and r["steps"] >= 2
    # the speed rows carry their configuration's own figures, from its own process
    own = {(r["task"], r["batch_size"]): r for r in memory}
    for row in result["rows"]:
        mem = own[(row["task"], row["batch_size"])]
        assert row["memory_pid"] == mem["pid"] and row["peak_rss_mib"] == mem["peak_rss_mib"]
    speed_table = text.split("GEMM roof")[0]
    assert "MiB" not in speed_table
    assert "peak RSS MiB" in text and "added MiB" in text
