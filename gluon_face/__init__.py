"""gluon_face: face recognition with MXNet Gluon.

Backbones (:mod:`gluon_face.model_zoo`), margin heads (:mod:`gluon_face.heads`),
insightface-format data (:mod:`gluon_face.data`), verification metrics
(:mod:`gluon_face.evaluation`) and a trainer (:mod:`gluon_face.training`).

Importing the package does not import MXNet: the metrics, the command-line
helpers and the job launcher (:mod:`gluon_face.commands.launch`) work without
it.  A module that needs MXNet fails to import, when MXNet is missing or cannot
be imported, with the one-line message of :mod:`gluon_face._mxnet` that says
what to install.
"""
import importlib.machinery
import sys

__version__ = "0.1.0"


class _MXNetErrorLoader(importlib.machinery.SourceFileLoader):
    """The loader of this package's modules: MXNet's import failures made actionable.

    A module that imports mxnet fails, when MXNet is missing, with ``No module
    named 'mxnet'``, and under numpy >= 1.24 with an ``AttributeError`` deep
    inside mxnet.  When a module of this package fails to import with either
    kind of error and MXNet cannot be imported, the error raised is the one-line
    ``ImportError`` of :mod:`gluon_face._mxnet` instead.  Any other failure, and
    every failure while MXNet imports, is raised as it is.
    """

    def exec_module(self, module):
        """Run the module; on an import or attribute error, check MXNet first."""
        try:
            super().exec_module(module)
        except (ImportError, AttributeError):
            from . import _mxnet  # noqa: F401  (raises its one-line error if MXNet is unusable)
            raise


class _MXNetErrorFinder:
    """Finds this package's modules as the path finder does, to load them with the loader above.

    This is what lets ``import gluon_face.model_zoo`` say what to install without
    a list of the modules that need MXNet, and without importing MXNet for those
    that do not (a ``__getattr__`` on the package would not do: ``import
    gluon_face.x`` goes through the import system, not through attribute
    access).  Anything but a source file, e.g. a namespace package, is left to
    the usual finders.
    """

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        """The path finder's spec for a module below this package, with our loader; else None."""
        # _mxnet's own failure is the message itself; path is None for top-level names
        if (path is None or not fullname.startswith(__name__ + ".")
                or fullname == __name__ + "._mxnet"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return None
        spec.loader = _MXNetErrorLoader(spec.loader.name, spec.loader.path)
        return spec

    @staticmethod
    def invalidate_caches():
        """Nothing is cached here (``importlib.invalidate_caches`` calls every finder)."""


# Ahead of the usual finders; once, also when this module is reloaded (a new class object).
if not any(getattr(f, "__qualname__", None) == _MXNetErrorFinder.__qualname__
           and getattr(f, "__module__", None) == __name__ for f in sys.meta_path):
    sys.meta_path.insert(0, _MXNetErrorFinder)
