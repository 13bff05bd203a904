"""Command-line entry points: each module's ``main(argv=None) -> int`` is a command.

They run as ``tools/<name>.py`` and as the installed ``gluon-face-<name>``, both
through :func:`gluon_face.commands._entry.run`, which reports in one line when a
command needs MXNet and it cannot be imported.  This package imports no MXNet:
:mod:`gluon_face.commands.launch` works without it.
"""
