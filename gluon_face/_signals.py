"""Signal handlers that belong to the process installing them.

A process forked after a handler was installed inherits it.  MXNet's
``DataLoader(num_workers > 0)`` forks its worker processes, and
``Pool.terminate`` ends them with SIGTERM: a worker that runs the trainer's
"stop after this step" handler instead of dying survives it, and the pool's
join then waits forever (a run that never ends).  :func:`owned_handler` wraps
a handler so that in any other process the signal takes its default action.
"""
import functools
import os
import signal


def owned_handler(handler):
    """``handler`` in this process; in a process forked later, the default action.

    Parameters
    ----------
    handler : callable
        ``handler(signum, frame)``, as for :func:`signal.signal`.

    Returns
    -------
    callable
        For :func:`signal.signal`.  In a child it resets the signal to
        ``SIG_DFL`` and sends it again, so SIGTERM ends the child as if no
        handler had been installed.
    """
    owner = os.getpid()

    @functools.wraps(handler)
    def guarded(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return None
        return handler(signum, frame)

    return guarded
