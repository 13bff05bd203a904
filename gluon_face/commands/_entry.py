"""The start of every command, as installed (``gluon-face-<name>``) and as ``tools/<name>.py``.

A command that needs MXNet first imports :mod:`gluon_face._mxnet`; when MXNet is
missing, or cannot import with the installed numpy, that prints the one line
``'<prog>: error: <what to install>'`` and exits 2 instead of ending in a
traceback from the command's imports.  ``gluon-face-launch`` needs no MXNet (it
reports a missing ``dmlc_tracker`` itself, when a job is launched).

Each command then runs the function its console script always ran: ``run``
where the command wraps ``main`` to make SIGTERM and Ctrl-C stop it with a
message (:func:`gluon_face._cli.with_stop_signals`), else ``main`` (which sets
its own handlers, or needs none).  Tests that call a command's ``main(argv)``
in-process leave this module out, and the signal handlers alone.
"""
import importlib
import sys

#: Command name (``gluon-face-<name>``) -> (module of gluon_face.commands, its function
#: to call, whether MXNet is needed).
COMMANDS = {
    "train": ("train", "main", True),
    "evaluate": ("evaluate", "run", True),
    "extract": ("extract", "run", True),
    "export-onnx": ("export_onnx", "run", True),
    "pack-rec": ("pack_rec", "main", True),
    "inspect-rec": ("inspect_rec", "run", True),
    "make-bin": ("make_bin", "run", True),
    "count-params": ("count_params", "main", True),
    # launch.run(args) is the job itself, not a signal wrapper: main sets the handlers
    "launch": ("launch", "main", False),
    "benchmark": ("benchmark", "main", True),
    "benchmark-data": ("benchmark_data", "main", True),
    "benchmark-head": ("benchmark_head", "main", True),
    "convert-insightface": ("convert_insightface", "run", True),
    "export-insightface": ("export_insightface", "run", True),
}


def run(name, prog=None):
    """Run command ``name`` on ``sys.argv[1:]``; its exit status.

    Parameters
    ----------
    name : str
        A key of :data:`COMMANDS`, e.g. ``'export-onnx'``.
    prog : str, optional
        The program name of the one-line error when MXNet cannot be imported
        (``tools/train.py`` passes ``'train.py'``); default ``'gluon-face-<name>'``.

    Returns
    -------
    int
        2 when the command needs MXNet and it cannot be imported (one line on
        stderr), else what the command returns.
    """
    module, function, needs_mxnet = COMMANDS[name]
    if needs_mxnet:
        try:
            from .. import _mxnet  # noqa: F401
        except ImportError as err:  # MXNet missing, or a numpy it cannot import with
            print(f"{prog or 'gluon-face-' + name}: error: {err}", file=sys.stderr)
            return 2
    command = importlib.import_module(f"{__package__}.{module}")
    return getattr(command, function)()


def _console_script(name):
    def entry():
        return run(name)
    entry.__name__ = entry.__qualname__ = name.replace("-", "_")
    entry.__doc__ = f"``gluon-face-{name}``: :func:`run` ``({name!r})``."
    return entry


# The console_scripts targets of setup.py (gluon_face.commands._entry:<name>).
train = _console_script("train")
evaluate = _console_script("evaluate")
extract = _console_script("extract")
export_onnx = _console_script("export-onnx")
pack_rec = _console_script("pack-rec")
inspect_rec = _console_script("inspect-rec")
make_bin = _console_script("make-bin")
count_params = _console_script("count-params")
launch = _console_script("launch")
benchmark = _console_script("benchmark")
benchmark_data = _console_script("benchmark-data")
benchmark_head = _console_script("benchmark-head")
convert_insightface = _console_script("convert-insightface")
export_insightface = _console_script("export-insightface")
