"""Launch a parameter-server MXNet job: ``tools/launch.py -n N [-s S] [-H hosts] COMMAND``.

The command line is that of MXNet's ``tools/launch.py``, which the mxnet 1.9.1
pip wheel does not ship.  The work is done by the ``dmlc_tracker`` package the
wheel does install (its ``local`` and ``ssh`` submitters and its parameter-server
tracker); this script adds what running it on Python >= 3.9 and in scripts needs:

* ``dmlc_tracker`` calls ``threading.Thread.isAlive``, removed in Python 3.9:
  an alias to ``is_alive`` is added at run time when it is missing;
* a failure is a failure: when any scheduler, server or worker exits non-zero,
  the other processes are stopped and this script exits with that code (the
  tracker alone only prints a thread traceback and waits forever for the
  scheduler, which waits forever for the dead worker);
* one-line errors for a missing ``dmlc_tracker``, a missing or empty hosts
  file, bad counts or a missing command; ``--host-ip`` defaults to 127.0.0.1
  when every process runs on this machine.

Every process (the scheduler here, ``-s`` servers and ``-n`` workers) runs
COMMAND with ``DMLC_ROLE`` set; MXNet turns the scheduler and server processes
into their roles when they import it, so COMMAND must import mxnet, e.g.
``python tools/train.py --kvstore dist_sync ...``.  As with MXNet's launcher,
COMMAND is joined with spaces and run by bash (over ssh on the hosts).

Exit codes: 0 every process finished, 2 bad arguments, otherwise the exit code
of the first process that failed (1 if it was killed by a signal), 130 Ctrl-C, 143 SIGTERM
(both stop every process first).
"""
import argparse
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PROG = "launch.py"
log = logging.getLogger("launch")


class LaunchError(Exception):
    """A bad argument or setup problem, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise LaunchError(message)


def build_parser():
    parser = _Parser(
        prog=PROG, allow_abbrev=False,
        description="Launch a distributed MXNet job (scheduler, servers and workers) on this "
        "machine or on the hosts of a hosts file over ssh.",
        epilog="Example: launch.py -n 2 -H hosts --sync-dst-dir /tmp/gluon_face python "
        "tools/train.py --kvstore dist_sync")
    parser.add_argument("-n", "--num-workers", required=True, type=int,
                        help="number of worker processes")
    parser.add_argument("-s", "--num-servers", type=int,
                        help="number of server processes (default: --num-workers)")
    parser.add_argument("-H", "--hostfile", type=str,
                        help="hosts file for --launcher ssh: one 'host', 'host:port' or "
                        "'host slots=N' a line; blank lines and '#' comments are skipped")
    parser.add_argument("--launcher", choices=["local", "ssh"], default=None,
                        help="where the processes run (default: ssh with -H, else local)")
    parser.add_argument("--sync-dst-dir", type=str,
                        help="ssh: rsync the current folder to this folder on every host "
                        "first and run COMMAND there (default: run in the current folder's "
                        "path on every host)")
    parser.add_argument("--host-ip", type=str,
                        help="address of this machine (the scheduler) as the hosts reach "
                        "it (default: 127.0.0.1 when every host is this machine, else "
                        "guessed by dmlc_tracker); also 'ip' or 'dns'")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[:VALUE]",
                        help="pass environment variable NAME (its value here, or VALUE) to "
                        "every process; ssh always passes OMP_NUM_THREADS, KMP_AFFINITY, "
                        "LD_LIBRARY_PATH and DMLC_INTERFACE when they are set")
    parser.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds the other processes get to exit after a failure "
                        "before they are killed (default: 10)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command every process runs")
    return parser


# ----------------------------------------------------------------------------- arguments
def read_hostfile(path):
    """``[(host, port)]`` of a hosts file; raises :class:`LaunchError` when unusable."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise LaunchError(f"hosts file {path}: {err.strerror or err}") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        entry = re.sub(r"\s+slots=\S*$", "", entry)
        host, _, port = entry.partition(":")
        if not host or any(c.isspace() for c in host) or (port and not port.isdigit()):
            raise LaunchError(f"hosts file {path}, line {number}: expected 'host', "
                              f"'host:port' or 'host slots=N', got {line.strip()!r}")
        hosts.append((host, port or "22"))
    if not hosts:
        raise LaunchError(f"hosts file {path} lists no hosts")
    return hosts


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


def _env_pairs(specs):
    """``{name: value}`` of the ``--env NAME[:VALUE]`` options."""
    pairs = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise LaunchError(f"--env {spec!r}: expected NAME or NAME:VALUE")
        if not sep:
            if name not in os.environ:
                raise LaunchError(f"--env {name}: not set in this environment")
            value = os.environ[name]
        if re.search(r"[\s'\"\\;$`]", value):
            raise LaunchError(f"--env {name}: the value {value!r} has spaces or shell "
                              "characters, which the ssh command line cannot carry")
        pairs[name] = value
    return pairs


def check_args(args):
    """Validate and complete ``args`` in place; raises :class:`LaunchError`."""
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        raise LaunchError("no command to launch (e.g. launch.py -n 2 python tools/train.py "
                          "--kvstore dist_sync)")
    if args.num_workers < 1:
        raise LaunchError(f"--num-workers must be at least 1, got {args.num_workers}")
    if args.num_servers is None:
        args.num_servers = args.num_workers
    if args.num_servers < 1:
        raise LaunchError(f"--num-servers must be at least 1 (MXNet's dist kvstore needs a "
                          f"server), got {args.num_servers}")
    if args.launcher is None:
        args.launcher = "ssh" if args.hostfile else "local"
    args.hosts = None
    if args.launcher == "ssh":
        if not args.hostfile:
            raise LaunchError("--launcher ssh needs a hosts file (-H FILE)")
        args.hosts = read_hostfile(args.hostfile)
        if "'" in " ".join(args.command):
            raise LaunchError("the command contains a single quote, which the ssh "
                              "launcher cannot pass (it wraps the command in '...')")
        if args.sync_dst_dir:
            if shutil.which("rsync") is None:
                raise LaunchError("--sync-dst-dir needs rsync, which is not on PATH")
            if not os.path.isabs(args.sync_dst_dir):
                raise LaunchError(f"--sync-dst-dir {args.sync_dst_dir}: must be an "
                                  "absolute path")
    else:
        if args.hostfile:
            raise LaunchError("-H/--hostfile is for --launcher ssh (local runs every "
                              "process on this machine)")
        if args.sync_dst_dir:
            raise LaunchError("--sync-dst-dir is for --launcher ssh")
    if args.stop_timeout < 0:
        raise LaunchError(f"--stop-timeout must be >= 0, got {args.stop_timeout}")
    args.env_pairs = _env_pairs(args.env)
    return args


def _import_tracker():
    try:
        from dmlc_tracker import local, ssh, tracker
    except ImportError as err:
        raise LaunchError(f"cannot import dmlc_tracker ({err}); it is installed with mxnet: "
                          "pip install -e .[cpu] (or mxnet-cu112 for GPUs)") from None
    return tracker, local, ssh


def _python_compat():
    """Give ``threading.Thread`` the camel-case names dmlc_tracker still calls."""
    for old, new in (("isAlive", "is_alive"), ("setDaemon", None)):
        if not hasattr(threading.Thread, old):
            if new:
                setattr(threading.Thread, old, getattr(threading.Thread, new))
            else:
                setattr(threading.Thread, old, lambda self, flag: setattr(self, "daemon",
                                                                          flag))


def _resolve_host_ip(args, tracker):
    if args.host_ip:
        return args.host_ip
    if args.launcher == "local" or all(_is_loopback(h) for h, _ in args.hosts):
        return "127.0.0.1"
    try:
        return tracker.get_host_ip("auto")
    except OSError as err:
        raise LaunchError(f"cannot guess the address of this machine ({err}); pass "
                          "--host-ip") from None


# ----------------------------------------------------------------------------- processes
class _Stopped(Exception):
    """Raised in dmlc_tracker's threads when they try to start a process after a stop."""


class ProcessTable:
    """Every process dmlc_tracker starts, with its role, so failures can be seen.

    An instance stands in for the ``subprocess`` module inside dmlc_tracker's
    modules (:meth:`install`): ``call`` and ``check_call`` behave as the
    module's, but each child runs in its own session (so it can be stopped with
    its shell and children) and is recorded.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.procs = []  # [(label, Popen)]
        self.counts = {}
        self.expected = None
        self.stopping = False
        self.last_start = time.time()

    # the subprocess-module face -------------------------------------------------
    def __getattr__(self, name):
        return getattr(subprocess, name)

    def call(self, args, **kwargs):
        return self._start(args, kwargs).wait()

    def check_call(self, args, **kwargs):
        code = self.call(args, **kwargs)
        if code:
            raise subprocess.CalledProcessError(code, args)
        return 0

    def _start(self, args, kwargs):
        text = args if isinstance(args, str) else " ".join(map(str, args))
        env = kwargs.get("env") or {}
        role = env.get("DMLC_ROLE")
        found = re.search(r"DMLC_ROLE=(\w+)", text)
        role = role or (found.group(1) if found else "process")
        host = re.search(r"DMLC_NODE_HOST=([^;\s]+)", text)
        with self.lock:
            if self.stopping:
                raise _Stopped(f"not starting a {role}: the launch is stopping")
            number = self.counts.get(role, 0)
            self.counts[role] = number + 1
            label = f"{role} #{number}" + (f" on {host.group(1)}" if host else "")
            proc = subprocess.Popen(args, start_new_session=True, **kwargs)
            self.procs.append((label, proc))
            self.last_start = time.time()
        log.debug("started %s (pid %d)", label, proc.pid)
        return proc

    def install(self, *modules):
        """Make ``modules`` use this table as their ``subprocess``; returns an undo."""
        saved = [(m, m.subprocess) for m in modules]
        for module in modules:
            module.subprocess = self

        def undo():
            for module, original in saved:
                module.subprocess = original
        return undo

    # supervision ------------------------------------------------------------------
    def snapshot(self):
        with self.lock:
            return list(self.procs)

    def failure(self):
        """``(label, code)`` of a failed process (workers first), or None."""
        failed = [(label, p.poll()) for label, p in self.snapshot()
                  if p.poll() not in (None, 0)]
        failed.sort(key=lambda item: not item[0].startswith("worker"))
        return failed[0] if failed else None

    def running(self):
        return [label for label, p in self.snapshot() if p.poll() is None]

    def stop(self, timeout):
        """Stop every running process: SIGTERM to its session, SIGKILL after ``timeout``."""
        with self.lock:
            self.stopping = True
        procs = [p for _, p in self.snapshot() if p.poll() is None]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.time() + (timeout if sig == signal.SIGTERM else 5)
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
            procs = [p for p in procs if p.poll() is None]
            if not procs:
                return


def _quiet_thread_errors(table):
    """dmlc_tracker's threads raise when their process fails; we report that ourselves."""
    def hook(info):
        expected = (subprocess.CalledProcessError, _Stopped, RuntimeError)
        first = (str(info.exc_value).strip().splitlines() or [""])[0][:200]
        level = logging.DEBUG if isinstance(info.exc_value, expected) else logging.WARNING
        log.log(level, "dmlc_tracker thread %s: %s: %s", info.thread.name if info.thread
                else "?", info.exc_type.__name__, first)
    previous = threading.excepthook
    threading.excepthook = hook

    def undo():
        threading.excepthook = previous
    return undo


class _InlinePool:
    """Runs dmlc_tracker's (no-op) sync calls in place instead of forking a process pool."""

    def __init__(self, processes=None):
        pass

    def apply_async(self, func, args=()):
        func(*args)

    def close(self):
        pass

    def join(self):
        pass


def _already_synced(local_dir, node, remote_dir):
    log.debug("%s already synced to %s:%s", local_dir, node[0], remote_dir)


def _sync(args, ssh):
    """rsync the current folder to every host with dmlc_tracker's ``sync_dir``."""
    local_dir = os.getcwd() + "/"
    for host in dict.fromkeys(args.hosts):
        try:
            ssh.sync_dir(local_dir, host, args.sync_dst_dir)
        except subprocess.CalledProcessError as err:
            raise LaunchError(f"rsync of {local_dir} to {host[0]}:{args.sync_dst_dir} failed "
                              f"with exit code {err.returncode}") from None


def run(args):
    """Launch the job described by checked ``args``; returns the exit code."""
    tracker, local, ssh = _import_tracker()
    _python_compat()
    host_ip = _resolve_host_ip(args, tracker)
    os.environ.update(args.env_pairs)  # the scheduler and local processes inherit them
    if args.launcher == "ssh" and args.sync_dst_dir:
        _sync(args, ssh)
    table = ProcessTable()
    undo = [table.install(tracker, local, ssh), _quiet_thread_errors(table)]
    if args.launcher == "ssh" and args.sync_dst_dir:
        # synced above, with errors checked; dmlc_tracker would sync again in a process
        # pool forked from a thread, whose errors it never reads
        saved = ssh.sync_dir, ssh.Pool
        ssh.sync_dir, ssh.Pool = _already_synced, _InlinePool
        undo.append(lambda: (setattr(ssh, "sync_dir", saved[0]), setattr(ssh, "Pool", saved[1])))
    original_submit = tracker.submit

    def submit(nworker, nserver, fun_submit, hostIP="auto", pscmd=None):
        def start_nodes(nworker, nserver, envs):
            envs.update(args.env_pairs)
            table.expected = 1 + nworker + nserver
            log.info("scheduler at %s:%s; starting %d server(s) and %d worker(s) (%s)",
                     envs.get("DMLC_PS_ROOT_URI"), envs.get("DMLC_PS_ROOT_PORT"), nserver,
                     nworker, args.launcher)
            return fun_submit(nworker, nserver, envs)
        return original_submit(nworker, nserver, start_nodes, hostIP=host_ip, pscmd=pscmd)

    tracker.submit = submit
    undo.append(lambda: setattr(tracker, "submit", original_submit))
    with tempfile.TemporaryDirectory(prefix="launch-") as tmp:
        dmlc_args = argparse.Namespace(
            num_workers=args.num_workers, num_servers=args.num_servers,
            command=list(args.command), local_num_attempt=0, host_ip=host_ip,
            host_file=None, sync_dst_dir=args.sync_dst_dir)
        if args.launcher == "ssh":
            # a comment-free copy: dmlc_tracker reads every non-blank line as a host
            dmlc_args.host_file = os.path.join(tmp, "hosts")
            with open(dmlc_args.host_file, "w") as f:
                f.writelines(f"{h}:{p}\n" for h, p in args.hosts)
        submitter = local.submit if args.launcher == "local" else ssh.submit
        thread = threading.Thread(target=submitter, args=(dmlc_args,), name="dmlc-submit",
                                  daemon=True)
        try:
            log.info("launching %d worker(s) and %d server(s) with the %s launcher: %s",
                     args.num_workers, args.num_servers, args.launcher,
                     " ".join(args.command))
            thread.start()
            return _supervise(table, thread, args.stop_timeout)
        except KeyboardInterrupt as err:
            what = "terminated" if isinstance(err, _Terminated) else "interrupted"
            log.warning("%s: stopping %d process(es)", what, len(table.running()))
            table.stop(args.stop_timeout)
            return _interrupt_code(err)
        finally:
            thread.join(timeout=5)
            for step in reversed(undo):
                step()


def _supervise(table, thread, stop_timeout, poll=0.2, idle=10.0):
    """Wait until every process has finished or one has failed; returns the exit code."""
    reported = set()
    while True:
        failed = table.failure()
        if failed is not None:
            label, code = failed
            running = table.running()
            log.error("%s exited with code %d: stopping the %d other running process(es)",
                      label, code, len(running))
            table.stop(stop_timeout)
            return code if 0 < code < 256 else 1
        for label, proc in table.snapshot():
            if proc.poll() == 0 and label not in reported:
                reported.add(label)
                log.info("%s finished", label)
        if not thread.is_alive() and not table.running():
            started = len(table.snapshot())
            if table.expected is not None and started >= table.expected:
                break
            if time.time() - table.last_start > idle:  # the tracker started no more
                break
        time.sleep(poll)
    started = len(table.snapshot())
    if table.expected is None or started < table.expected:
        log.error("only %d of the %s processes were started (does the command import "
                  "mxnet? the scheduler runs it too)", started, table.expected or
                  "1 + servers + workers")
        return 1
    log.info("all %d processes finished", started)
    return 0


def main(argv=None) -> int:
    try:
        args = check_args(build_parser().parse_args(argv))
    except LaunchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s launch.py %(message)s", datefmt="%H:%M:%S",
                            level=logging.INFO, stream=sys.stderr)
    # Ctrl-C must stop the job even when this process was started with SIGINT ignored
    # (a background job of a non-interactive shell, as in many CI scripts): Python only
    # turns SIGINT into KeyboardInterrupt when the inherited disposition is the default.
    # train.py installs its own handler for the same reason.
    # SIGTERM (a batch scheduler stopping the job) stops the processes the same way.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return run(args)
    except LaunchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # before any process was started (e.g. during the rsync)
        what = "terminated" if isinstance(err, _Terminated) else "interrupted"
        print(f"{PROG}: {what}", file=sys.stderr)
        return _interrupt_code(err)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum, frame):
    raise _Terminated


def _interrupt_code(err):
    return 143 if isinstance(err, _Terminated) else 130
