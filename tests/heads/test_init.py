"""gluon_face.heads: every exported name resolves, though only .margins is imported eagerly.

That gluon_face.heads.margins needs no MXNet is checked by tests/evaluation/test_init.py
(gluon_face.evaluation imports it).
"""
import pytest

import gluon_face.heads as heads


def test_every_exported_name_resolves():
    for name in heads.__all__:
        assert getattr(heads, name) is not None, name
        assert name in dir(heads)
    assert heads.ArcMarginBlock.__module__ == "gluon_face.heads.margin"
    with pytest.raises(AttributeError, match="no_such_name"):
        heads.no_such_name  # noqa: B018
    from gluon_face.heads import _kernels  # a submodule, not an export

    assert hasattr(_kernels, "AVAILABLE")

