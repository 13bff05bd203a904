"""Shared fixtures.

``GLUON_FACE_TEST_CTX`` picks the device the suite runs on: ``cpu`` (default)
or ``gpu`` / ``gpu:N``, so the same tests run on a GPU machine.  Multi-device
tests use ``ctx_list``: two GPUs when there, else two CPU contexts, which MXNet
treats as separate devices for split_and_load, Trainer and kvstore.

``GLUON_FACE_REQUIRE`` (comma-separated names of :data:`CAPABILITIES`) lists the
capabilities this machine must have: a test that would skip for want of a listed one
fails instead, so CI (``.ci/run`` sets it) cannot pass with a whole capability skipped.
Tests skip only through :func:`require`, :func:`require_module` or :func:`needs`.
"""
import importlib
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import npx

npx.set_np()

REQUIRE_VAR = "GLUON_FACE_REQUIRE"
#: What a test may skip for want of: name -> what it is.
CAPABILITIES = {
    "onnx": "onnx and onnxruntime (the onnx extra, in the test extra): ONNX export",
    "numba": "numba (the cpu extra): the margin heads' fused kernels",
    "bf16": "a CPU with AVX-512 BF16: the --amp (bfloat16) training path",
    "amx": "a CPU with AMX: bfloat16 convolutions on AMX tiles",
    "im2rec": "tools/im2rec.py of the mxnet wheel (PyPI's 1.9.1 ships it)",
}


def required_capabilities():
    """The set of capabilities ``GLUON_FACE_REQUIRE`` names.

    Raises ``pytest.UsageError`` for a name that is not in :data:`CAPABILITIES` (a
    misspelt requirement would otherwise require nothing).
    """
    names = {n.strip() for n in os.environ.get(REQUIRE_VAR, "").split(",") if n.strip()}
    unknown = sorted(names - set(CAPABILITIES))
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_VAR}: unknown capability {', '.join(unknown)} "
                                f"(known: {', '.join(CAPABILITIES)})")
    return names


def require(capability, available, reason):
    """Skip the test with ``reason`` unless ``available``; fail it instead
    when ``GLUON_FACE_REQUIRE`` lists ``capability``."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}: add it to CAPABILITIES")
    if available:
        return
    if capability in required_capabilities():
        pytest.fail(f"{reason}, but {REQUIRE_VAR} requires {capability!r} "
                    f"({CAPABILITIES[capability]})", pytrace=False)
    _skip(reason)


def _skip(reason):
    try:
        pytest.skip(reason)
    except pytest.skip.Exception as skip:
        skip._use_item_location = True  # -rs names the test, as for a skipif mark
        raise


def missing_modules(*names):
    """Why one of the modules ``names`` cannot be imported; '' when they all can."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            return f"{name} cannot be imported ({err})"
    return ""


def require_module(capability, name):
    """``import name`` in a test of ``capability``; when it fails, :func:`require`."""
    why = missing_modules(name)
    require(capability, not why, why)
    return importlib.import_module(name)


def needs(capability, available, reason):
    """Mark form of :func:`require` for a test (or, as ``pytestmark``, a module) whose
    condition is known at import: ``@needs("bf16", cpu_has_bf16(), "CPU without
    avx512_bf16")``."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}: add it to CAPABILITIES")
    return pytest.mark.needs(capability, bool(available), reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(capability, available, reason): skip unless "
                                       "available, fail if GLUON_FACE_REQUIRE lists it")
    required_capabilities()  # a misspelt name stops the run before the first test


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # skip before the fixtures are built; a required capability fails in the call phase
    for mark in item.iter_markers("needs"):
        capability, available, reason = mark.args
        if not available and capability not in required_capabilities():
            _skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    for mark in item.iter_markers("needs"):
        require(*mark.args)


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
