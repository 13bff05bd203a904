"""Import MXNet once, with an error a user can act on.

``mxnet`` is an extra, not a requirement (see setup.py), so a bare
``pip install gluon_face`` leaves it out; and mxnet 1.9.1 fails to import
under numpy >= 1.24.  Both cases end in one line that says what to do.

``import gluon_face`` does not import this module: the package's loader imports
it when one of its modules fails to import (see ``gluon_face/__init__.py``), and
:func:`gluon_face.commands._entry.run` before a command that needs MXNet.
"""

_HINT = ("install one of the extras: pip install 'gluon_face[cpu]' (mxnet==1.9.1) "
         "or pip install 'gluon_face[cu112]' (mxnet-cu112==1.9.1)")

try:
    import mxnet as mx  # noqa: F401
except ImportError:
    raise ImportError("gluon_face needs MXNet 1.9.1, which is not installed: " + _HINT) from None
except AttributeError as err:  # np.bool and friends, removed in numpy 1.24
    import numpy

    raise ImportError(
        "MXNet 1.9.1 cannot import with numpy %s (%s): pip install 'numpy<1.24'"
        % (numpy.__version__, err)) from None


def error_message(err):
    """The one informative line of an exception, for MXNet's multi-line errors too.

    ``MXNetError`` text starts with ``Traceback (most recent call last):`` and C++
    frame lines; its message is the line after ``MXNetError:`` (without the
    ``Check failed: <expression>:`` prefix when a reason follows it).
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("MXNetError:"):
            message = line[len("MXNetError:"):].strip()
            if message.startswith("Check failed:") and ": " in message[len("Check failed:"):]:
                reason = message.rsplit(": ", 1)[1].strip()
                message = reason or message
            return message
    useful = [line for line in lines if not line.startswith(("Traceback (most recent call",
                                                               "File ", "[bt]"))]
    return useful[0] if useful else type(err).__name__
