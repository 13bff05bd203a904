"""Shared fixtures.

``GLUON_FACE_TEST_CTX`` picks the device the suite runs on: ``cpu`` (default)
or ``gpu`` / ``gpu:N``, so the same tests run on a GPU machine.  Multi-device
tests use ``ctx_list``: two GPUs when there, else two CPU contexts, which MXNet
treats as separate devices for split_and_load, Trainer and kvstore.
"""
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import npx

npx.set_np()


def _parse_ctx(text):
    kind, _, idx = text.partition(":")
    idx = int(idx or 0)
    if kind == "gpu":
        return mx.gpu(idx)
    if kind == "cpu":
        return mx.cpu(idx)
    raise ValueError("GLUON_FACE_TEST_CTX must be cpu, gpu or gpu:N, not %r" % text)


@pytest.fixture(scope="session")
def ctx():
    return _parse_ctx(os.environ.get("GLUON_FACE_TEST_CTX", "cpu"))


@pytest.fixture(scope="session")
def ctx_list(ctx):
    if ctx.device_type == "gpu" and mx.context.num_gpus() >= 2:
        return [mx.gpu(0), mx.gpu(1)]
    return [mx.cpu(0), mx.cpu(1)]


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state (numpy and MXNet)."""
    onp.random.seed(0)
    mx.random.seed(0)
    yield


def _ranks_agree(folder):
    """Two workers' saved trainable parameters (tests/helpers/dist_params.py) are equal
    and moved away from their initial values."""
    a = onp.load(folder / "params_rank0.npz")
    b = onp.load(folder / "params_rank1.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
    for key in a.files:
        onp.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the workers did train: the weights moved from their initial values
    init = onp.load(folder / "init_rank1.npz")
    assert any(not onp.allclose(init[k], b[k]) for k in b.files)


@pytest.fixture
def ranks_agree():
    """``ranks_agree(folder)``: the distributed tests' check that both ranks ended equal."""
    return _ranks_agree


@pytest.fixture(scope="session")
def glyph_dir():
    """The built-in glyph identities, in the cache ``tools/train.py`` uses (built once)."""
    from gluon_face.data import glyph_data_dir

    return glyph_data_dir()
