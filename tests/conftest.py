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
