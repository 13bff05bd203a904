"""A small name -> factory registry shared by models and heads.

Registry keys are the CLI names (``--network faceresnet50``, ``--loss cosface``),
so an unknown name is an error that lists every valid one.
"""


class Registry:
    """Maps names to factories.

    Parameters
    ----------
    kind : str
        What the registry holds ("model", "head"); used in error messages.
    """

    def __init__(self, kind):
        self.kind = kind
        self._factories = {}

    def register(self, name=None):
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""
        def wrap(fn):
            key = name or fn.__name__
            if key in self._factories:
                raise ValueError("%s %r is registered twice" % (self.kind, key))
            self._factories[key] = fn
            return fn
        return wrap

    def names(self):
        """Sorted list of the registered names."""
        return sorted(self._factories)

    def __contains__(self, name):
        return name in self._factories

    def get(self, name):
        """The factory registered as ``name``; ``ValueError`` listing valid names otherwise."""
        try:
            return self._factories[name]
        except KeyError:
            raise ValueError("unknown %s %r; valid names: %s"
                             % (self.kind, name, ", ".join(self.names()))) from None

    def create(self, name, **kwargs):
        """Build ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)
