"""gluon_face.evaluation is usable without MXNet (pure numpy / scipy / scikit-learn)."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_evaluation_needs_no_mxnet_and_no_pyplot(tmp_path):
    """gluon_face.evaluation works with MXNet unimportable.

    ``gluon_face/__init__`` imports MXNet eagerly (to fail early with an actionable
    message), so the subprocess registers an empty ``gluon_face`` package and
    blocks every ``mxnet`` import: the evaluation subpackage itself must not need it.
    """
    code = textwrap.dedent(f"""
        import importlib.abc, sys, types
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "mxnet" or name.startswith("mxnet."):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        pkg = types.ModuleType("gluon_face")
        pkg.__path__ = [{str(ROOT / "gluon_face")!r}]
        sys.modules["gluon_face"] = pkg
        import numpy as np
        import gluon_face.evaluation as ev
        rng = np.random.RandomState(0)
        e = ev.combine_flip(rng.randn(40, 4), rng.randn(40, 4))
        r = ev.verification_accuracy(e, rng.rand(20) < 0.5, nfolds=5)
        ev.dunn_index(rng.randn(10, 2), [0, 1] * 5)
        ev.plot_roc(r, path={str(tmp_path / "roc.png")!r})
        ev.plot_embeddings(rng.randn(10, 2), [0, 1] * 5)
        ev.plot_target_logits()  # the heads' margin presets and formula, MXNet-free
        bad = sorted(m for m in sys.modules
                     if m.split(".")[0] == "mxnet" or m == "matplotlib.pyplot")
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG
