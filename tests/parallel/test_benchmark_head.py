"""tools/benchmark_head.py and gluon_face.benchmarks.heads on tiny sizes."""
import json

import pytest

from gluon_face.benchmarks.heads import KINDS, measure_head
from gluon_face.benchmarks.memory import peak_rss_bytes, rss_bytes


@pytest.fixture(scope="module")
def tool():
    from gluon_face.commands import benchmark_head

    return benchmark_head


@pytest.mark.parametrize("kind", KINDS)
def test_measure_head(kind):
    result = measure_head(kind, 200, emb_size=16, batch_size=8, steps=2, warmup=1,
                          num_shards=2, sample_rate=0.1)
    assert result["kind"] == kind and result["num_classes"] == 200
    assert 0 < result["step_s_min"] <= result["step_s"] <= result["step_s_max"]
    assert result["peak_rss_gib"] >= result["base_rss_gib"] > 0
    assert result["shards"] == (1 if kind == "full" else 2)
    assert result["sample_rate"] == (0.1 if kind == "partial" else 1.0)


def test_memory_readers():
    # the kernel folds per-thread RSS counters in lazily: allow a few pages of skew
    current = rss_bytes()
    assert current > 1 << 20
    assert peak_rss_bytes() >= current - (1 << 20)


def test_measure_head_rejects_unknown_kind():
    with pytest.raises(ValueError, match="valid kinds: full, sharded, partial"):
        measure_head("dense", 10)


def test_tool_table_and_json(tool, tmp_path, capsys):
    out = tmp_path / "head.json"
    rc = tool.main(["--classes", "300", "--kinds", "full,partial", "--emb-size", "16",
                    "--batch-size", "8", "--steps", "1", "--warmup", "0", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "partial" in captured.out and "full" in captured.out
    rows = json.loads(out.read_text())["results"]
    assert [(r["kind"], r["status"]) for r in rows] == [("full", "ok"), ("partial", "ok")]
    assert all(r["step_s"] > 0 and r["peak_rss_gib"] > 0 for r in rows)


def test_tool_stops_a_config_over_the_memory_limit(tool, capsys):
    rc = tool.main(["--classes", "300", "--kinds", "sharded", "--emb-size", "16",
                    "--batch-size", "8", "--steps", "1", "--max-rss-gib", "0.01"])
    assert rc == 1
    assert "stopped: RSS > 0.01 GiB" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--classes", "ten"], "comma-separated integers"),
    (["--kinds", "dense"], "unknown head kind"),
    (["--sample-rate", "0"], "--sample-rate"),
])
def test_tool_bad_arguments(tool, capsys, argv, message):
    assert tool.main(argv) == 2
    assert message in capsys.readouterr().err
