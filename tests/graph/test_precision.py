"""gluon_face.graph.precision: amp's operator lists as the pass uses them.

bfloat16 and float16 graphs of a FaceResNet are checked in tests/test_inference.py.
"""
import pytest
from mxnet import np

from gluon_face.graph.precision import (
    LOW_PRECISION_DTYPES,
    conditional_fp32_ops,
    to_low_precision,
)


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
def test_prelu_stays_float32(dtype):
    ops = conditional_fp32_ops(dtype)
    leaky = [values for name, attr, values in ops if name == "LeakyReLU" and attr == "act_type"]
    assert len(leaky) == 1 and "prelu" in leaky[0]


def test_other_dtypes_are_refused():
    with pytest.raises(ValueError, match="bfloat16, float16"):
        to_low_precision(None, np.zeros((1, 3)), dtype="int8")
