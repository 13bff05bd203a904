"""Ratios against the PyTorch peer: each row against the peer's rows of the same protocol."""
from gluon_face.benchmarks.torch_peer import add_torch_ratios


def _head(mode, step_s, ce, framework=None):
    row = {"workload": "head", "num_classes": 1000, "mode": mode, "step_s": step_s,
           "step_s_min": step_s, "cross_entropy": ce}
    if framework:
        row["framework"] = framework
    return row


def test_head_rows_are_compared_within_their_protocol():
    torch_rows = [_head("eager", 2.0, True, "torch"), _head("compile", 1.0, True, "torch"),
                  _head("logits", 1.6, False, "torch"),
                  _head("compile-logits", 0.8, False, "torch")]
    floor = dict(_head("products", 0.2, False), floor=True)
    ours = [_head("fused", 0.4, False), _head("fused+ce", 0.5, True), floor]
    add_torch_ratios(ours, torch_rows)
    no_ce, ce, floor = ours
    # the products alone are no head: no ratio against the peer's heads
    assert "vs_torch_best" not in floor and "vs_torch" not in floor
    # backward from a given gradient: against logits / compile-logits only
    assert no_ce["torch_best_mode"] == "compile-logits"
    assert no_ce["vs_torch_best"] == 0.8 / 0.4 and no_ce["vs_torch"] == 1.6 / 0.4
    # with the cross-entropy: against eager / compile only
    assert ce["torch_best_mode"] == "compile"
    assert ce["vs_torch_best"] == 1.0 / 0.5 and ce["vs_torch"] == 2.0 / 0.5


def test_backbone_rows_against_the_fastest_variant():
    def row(mode, rate, framework=None):
        r = {"network": "n", "task": "train", "mode": mode, "images_s": rate,
             "images_s_max": rate}
        if framework:
            r["framework"] = framework
        return r

    ours = [row("bf16", 10.0)]
    add_torch_ratios(ours, [row("eager", 2.0, "torch"), row("bf16", 8.0, "torch"),
                            row("compile-bf16", 12.5, "torch")])
    assert ours[0]["torch_best_mode"] == "compile-bf16"
    assert ours[0]["vs_torch_best"] == 10.0 / 12.5 and ours[0]["vs_torch"] == 5.0
