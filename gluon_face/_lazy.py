"""Package attributes that import their module on first use (PEP 562).

Three packages export names whose modules are costly or need MXNet
(:mod:`gluon_face.heads`, :mod:`gluon_face.graph`, :mod:`gluon_face.benchmarks`);
:func:`lazy_attributes` gives each the same ``__getattr__`` / ``__dir__`` pair.
"""
import importlib


def lazy_attributes(package, homes, namespace):
    """``__getattr__`` and ``__dir__`` for ``package`` whose names live in submodules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    homes : dict
        Exported name -> submodule (relative, without the dot) that defines it.
    namespace : dict
        The package's ``globals()``: a name looked up once is stored there, so
        later lookups do not come back to ``__getattr__``.

    Returns
    -------
    (callable, callable)
        Assign them to the package's ``__getattr__`` and ``__dir__``.
    """
    def __getattr__(name):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__
