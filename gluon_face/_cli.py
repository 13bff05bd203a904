"""Small pieces shared by the command-line tools (the tools print; this module does not)."""
import argparse
import math
import os

__all__ = ["error_line", "checkpoint_image_size", "UsageError", "ToolParser",
           "positive_int", "non_negative_float", "int_between", "check_outputs", "Terminated",
           "install_stop_signals", "with_stop_signals", "stop_line"]


class UsageError(ValueError):
    """A bad command line (e.g. an output that would overwrite an input).

    Tools report it as one line and exit 2, as argparse does for a bad flag.
    """


class ToolParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are the one line ``'<prog>: error: ...'``.

    argparse prints the usage block above its message; a tool's bad input is
    reported as a single line instead (``--help`` shows the usage).  The exit
    status stays 2.  Abbreviated long options are refused by default
    (``allow_abbrev=False``), so ``--epoch`` is not taken for ``--epochs``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text):
    """argparse type: an integer >= 1."""
    return int_between(1)(text)


def int_between(low, high=None):
    """argparse type: an integer in ``[low, high]`` (``high`` None: no upper bound)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value
    parse.__name__ = "int"
    return parse


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _stat(path):
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _same(a, b):
    """Whether the paths ``a`` and ``b`` name one file (links and symlinks resolved)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    sa, sb = _stat(a), _stat(b)
    return sa is not None and sb is not None and os.path.samestat(sa, sb)


def _inside(path, folder_stat):
    """Whether ``path`` is the folder of ``folder_stat`` or lies below it."""
    current = os.path.realpath(path)
    while True:
        st = _stat(current)
        if st is not None and os.path.samestat(st, folder_stat):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def check_outputs(outputs, inputs):
    """Refuse output paths that would overwrite an input or be written inside an input folder.

    An output is refused when it is an existing folder, when it is the same
    file as an input (also through a symlink or a hard link), when it lies
    inside an input that is a folder (through symlinks and bind mounts too:
    parent folders are compared by device and inode), or when two outputs
    name one file.  Inputs that do not
    exist are skipped (the tool reports them itself); ``None`` entries are
    ignored.

    Parameters
    ----------
    outputs, inputs : iterable of str or None
        Paths as given on the command line (named as given in the error).

    Raises
    ------
    UsageError
        One line naming the output and the input.
    """
    outputs = [os.fspath(p) for p in outputs if p is not None]
    inputs = [os.fspath(p) for p in inputs if p is not None]
    for i, out in enumerate(outputs):
        for other in outputs[:i]:
            if _same(out, other):
                raise UsageError(f"{out}: the same file is given for two outputs "
                                 f"({other} and {out})")
        for source in inputs:
            st = _stat(source)
            if st is None:
                continue
            if os.path.isdir(source):
                if _inside(out, st):
                    raise UsageError(f"{out}: output lies inside the input folder {source}")
            elif _same(out, source):
                raise UsageError(f"{out}: output would overwrite the input {source}")
        if os.path.isdir(out):
            raise UsageError(f"{out}: is a folder; give a file name for this output")


def error_line(prog, err):
    """``'<prog>: error: <first line of err>'``: the one line a tool prints on bad input."""
    text = str(err).strip().splitlines()
    return f"{prog}: error: {text[0] if text else type(err).__name__}"


def checkpoint_image_size(state):
    """(H, W) a checkpoint's backbone was trained at, from its ``state.json`` dict.

    ``ValueError`` naming the checkpoint folder when the entry is missing or malformed.
    """
    size = state.get("image_size")
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ValueError(f"{state.get('folder', 'checkpoint')}: state.json has no valid "
                         f"image_size (got {size!r})")
    return tuple(int(s) for s in size)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (like Ctrl-C's ``KeyboardInterrupt``) so that
    every temporary file is removed on the way out."""


def _raise_terminated(signum, frame):
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated


def install_stop_signals():
    """Make SIGTERM raise :class:`Terminated` and SIGINT ``KeyboardInterrupt``.

    SIGINT too, because Python leaves it ignored when it was inherited ignored (a
    background job of a non-interactive shell).  A no-op outside the main thread.
    Processes forked later (data-loader workers) die of SIGTERM as usual.
    """
    import signal
    import threading

    from ._signals import owned_handler

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, owned_handler(_raise_terminated))
        signal.signal(signal.SIGINT, signal.default_int_handler)


def with_stop_signals(main):
    """``main`` as a program runs it: :func:`install_stop_signals`, then ``main()``.

    For a command whose ``main(argv)`` reports Ctrl-C and SIGTERM but leaves the
    handlers alone (tests call it in-process); ``tools/<name>.py`` and the
    installed command both call the function returned.
    """
    def run():
        install_stop_signals()
        return main()
    return run


def stop_line(prog, err, detail=""):
    """``(line, exit code)`` for Ctrl-C / SIGTERM ``err``: the tool prints the line and
    exits 130 / 143."""
    what = "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted"
    line = f"{prog}: error: {what}{'; ' + detail if detail else ''}"
    return line, 143 if isinstance(err, Terminated) else 130
