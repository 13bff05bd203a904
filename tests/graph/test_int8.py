"""gluon_face.graph.int8: which calibration data is accepted.

The INT8 graphs themselves are checked in tests/test_inference.py.
"""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.graph.int8 import CALIB_MODES, calibration_batches, to_int8

SHAPE = (4, 3, 2, 2)


def _data(n):
    return onp.arange(n * 12, dtype="float64").reshape(n, 3, 2, 2)


@pytest.mark.parametrize("kind", ["numpy", "mxnet", "batches", "loader"])
def test_calibration_batches_accepts_arrays_and_iterables(kind):
    data = _data(5)
    given = {"numpy": data, "mxnet": mx.nd.array(data),
             "batches": [data[:2], mx.nd.array(data[2:])],
             "loader": [(data[:3], onp.zeros(3)), (data[3:], onp.zeros(2))]}[kind]
    got = calibration_batches(given, SHAPE)
    assert got.dtype == onp.float32
    onp.testing.assert_array_equal(got, data.astype("float32"))


@pytest.mark.parametrize("given, message", [
    ([], "no batches"),
    (onp.zeros((0, 3, 2, 2)), "N >= 1"),
    (onp.zeros((2, 3, 2, 3)), r"\(N, 3, 2, 2\)"),
    (onp.zeros((3, 2, 2)), r"\(N, 3, 2, 2\)"),
])
def test_calibration_batches_refuses_what_does_not_fit(given, message):
    with pytest.raises(ValueError, match=message):
        calibration_batches(given, SHAPE)


def test_to_int8_checks_its_arguments_before_any_graph_work():
    example = np.zeros(SHAPE)
    assert CALIB_MODES == ("naive", "entropy")
    with pytest.raises(ValueError, match="calib_mode"):
        to_int8(None, example, calib_data=_data(1), calib_mode="none")
    with pytest.raises(ValueError, match="calib_data"):
        to_int8(None, example)
    with pytest.raises(ValueError, match="num_calib_examples"):
        to_int8(None, example, calib_data=_data(1), num_calib_examples=0)
