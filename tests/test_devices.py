"""parse_ctx: device strings to MXNet contexts."""
import mxnet as mx
import pytest

from gluon_face.devices import parse_ctx


def test_parse_ctx():
    assert parse_ctx("cpu") == [mx.cpu(0)]
    assert parse_ctx("cpu:0,1") == [mx.cpu(0), mx.cpu(1)]
    for bad in ("tpu", "cpu:a", "cpu:0,0", "cpu:-1"):
        with pytest.raises(ValueError, match="device"):
            parse_ctx(bad)
    if mx.context.num_gpus() == 0:
        with pytest.raises(ValueError, match="0 GPU"):
            parse_ctx("gpu:0")
