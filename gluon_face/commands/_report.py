"""How a command reports a failure or a stop: one line on stderr, and its exit status."""
import sys

from .._cli import error_line, stop_line


def fail(prog, err, code=2):
    """Print ``'<prog>: error: <first line of err>'``; return ``code`` (2: bad input)."""
    print(error_line(prog, err), file=sys.stderr)
    return code


def stopped(prog, err, detail=""):
    """Print the line for Ctrl-C / SIGTERM ``err``; return 130 / 143."""
    line, code = stop_line(prog, err, detail)
    print(line, file=sys.stderr)
    return code
