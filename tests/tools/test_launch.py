"""tools/launch.py: MXNet's launcher command line over the installed dmlc_tracker.

Two workers and a server train ``tools/train.py --kvstore dist_sync`` on the demo
data with the local launcher and with the ssh launcher (a fake ``ssh`` and
``rsync`` on PATH run the remote command on this machine with an empty
environment), and end with identical trainable parameters; a failing worker
makes the launcher exit non-zero instead of hanging; bad arguments give one line.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from gluon_face.commands import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(ROOT, "tools", "launch.py")
TRAIN = os.path.join(ROOT, "tools", "train.py")
PYTHONPATH = os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "helpers")])

# Runs tools/train.py's real command line; saves each rank's trainable parameters
# (BatchNorm running statistics are per worker, as in any parameter-server job).
WORKER = textwrap.dedent("""
    import os
    import runpy
    import sys

    import numpy as onp
    from dist_params import trainable_params  # tests/helpers, on PYTHONPATH
    from gluon_face.training import trainer as trainer_module

    out, tool = os.environ["GF_PARAMS_OUT"], os.environ["GF_TRAIN_TOOL"]
    fit = trainer_module.FaceTrainer.fit

    def fit_and_save(self):
        onp.savez(os.path.join(out, f"init_rank{self.rank}.npz"), **trainable_params(self))
        summary = fit(self)
        onp.savez(os.path.join(out, f"params_rank{self.rank}.npz"), **trainable_params(self))
        return summary

    trainer_module.FaceTrainer.fit = fit_and_save
    sys.argv = [tool] + sys.argv[1:]
    runpy.run_path(tool, run_name="__main__")
""")

# ssh stand-in: drops the options and the host, runs the remote command here with
# an empty environment (only what the launcher exports reaches the process).
FAKE_SSH = textwrap.dedent("""\
    #!/bin/bash
    args=()
    while [ $# -gt 0 ]; do
      case "$1" in
        -o|-p|-l|-i) shift 2 ;;
        *) args+=("$1"); shift ;;
      esac
    done
    echo "${args[0]}" >> "$FAKE_LOG"
    exec env -i HOME="$HOME" PATH="$PATH" bash -c "${args[*]:1}"
""")

# rsync stand-in: copies SRC into HOST:DST on this machine.
FAKE_RSYNC = textwrap.dedent("""\
    #!/bin/bash
    src="${@: -2:1}"
    dst="${@: -1}"
    dst="${dst#*:}"
    echo "rsync $src $dst" >> "$FAKE_LOG"
    mkdir -p "$dst" && cp -a "$src". "$dst"/
""")


@pytest.fixture(scope="module")
def demo_dir():
    from gluon_face.data import demo_data_dir

    return demo_data_dir()  # built once here, not by two workers at the same time


def _train_args(data_dir, out, kvstore="dist_sync", ctx="cpu"):
    return ["--data-dir", data_dir, "--output", str(out), "--kvstore", kvstore,
            "--network", "faceresnet18", "--model-kwargs", "channels=[4,4,4,8,8]",
            "--emb-size", "8", "--batch-size", "8", "--max-steps", "4", "--lr", "0.05",
            "--warmup-epochs", "0", "--log-interval", "1", "--no-hybridize", "--ctx", ctx]


def _run(args, env, cwd, timeout=120):
    proc = subprocess.Popen([sys.executable, LAUNCH, *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the launcher stops the processes it started
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        pytest.fail(f"launch.py did not finish in {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def _base_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PYTHONPATH, PS_VERBOSE="0")
    env.update(extra)
    return env


def _assert_workers_agree(params_dir, out, stderr, ranks_agree):
    assert "worker 0/2" in stderr and "worker 1/2" in stderr, stderr[-3000:]
    ranks_agree(params_dir)
    assert '"step": 4' in (out / "checkpoints" / "last" / "state.json").read_text()


@pytest.mark.parametrize("kvstore, ctx", [("dist_sync", "cpu"),
                                          ("dist_device_sync", "cpu:0,1")])
def test_local_launcher_trains_two_workers_in_sync(demo_dir, tmp_path, kvstore, ctx, ranks_agree):
    (tmp_path / "worker.py").write_text(WORKER)
    params = tmp_path / "params"
    params.mkdir()
    env = _base_env(GF_PARAMS_OUT=str(params), GF_TRAIN_TOOL=TRAIN)
    code, out, err = _run(["-n", "2", "-s", "1", "--launcher", "local", sys.executable,
                           "worker.py", *_train_args(demo_dir, tmp_path / "run", kvstore, ctx)],
                          env, cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert "max_steps after 4 steps" in out  # rank 0's summary from train.py
    assert "all 4 processes finished" in err
    _assert_workers_agree(params, tmp_path / "run", err, ranks_agree)


def test_local_launcher_runs_train_py_hybridized(demo_dir, tmp_path):
    # train.py itself (hybridized, as by default): every process must finish; a worker
    # that exits with kvstore operations still pending would hang the job
    args = [a for a in _train_args(demo_dir, tmp_path / "run") if a != "--no-hybridize"]
    code, out, err = _run(["-n", "2", "-s", "1", sys.executable, TRAIN, *args, "--hybridize"],
                          _base_env(), cwd=tmp_path, timeout=60)
    assert code == 0, err[-3000:]
    assert "max_steps after 4 steps" in out and "all 4 processes finished" in err


def test_ssh_launcher_with_hostfile_and_sync_dir(demo_dir, tmp_path, ranks_agree):
    bin_dir, src, dst, params = (tmp_path / name for name in ("bin", "src", "dst", "params"))
    for folder in (bin_dir, src, params):
        folder.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("rsync", FAKE_RSYNC)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (src / "worker.py").write_text(WORKER)
    hosts = tmp_path / "hosts"
    hosts.write_text("# two machines, both this one\n127.0.0.1\n\n127.0.0.1:22 slots=2\n")
    fake_log = tmp_path / "fake.log"
    env = _base_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(fake_log),
                    GF_PARAMS_OUT=str(params), GF_TRAIN_TOOL=TRAIN)
    # worker.py is run by a relative path after `cd dst`: it must have been synced there
    code, out, err = _run(["-n", "2", "-s", "1", "-H", str(hosts), "--sync-dst-dir", str(dst),
                           "--env", "PYTHONPATH", "--env", f"GF_PARAMS_OUT:{params}",
                           "--env", "GF_TRAIN_TOOL", sys.executable, "worker.py",
                           *_train_args(demo_dir, tmp_path / "run")], env, cwd=src)
    assert code == 0, err[-3000:]
    assert "(ssh)" in err and "scheduler at 127.0.0.1:" in err
    calls = fake_log.read_text().splitlines()
    assert any(c.startswith(f"rsync {src}/ {dst}") for c in calls), calls
    assert sorted(c for c in calls if not c.startswith("rsync")) == ["127.0.0.1"] * 3
    assert (dst / "worker.py").is_file()
    _assert_workers_agree(params, tmp_path / "run", err, ranks_agree)


def test_failed_rsync_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rsync").write_text("#!/bin/sh\nexit 12\n")
    (bin_dir / "rsync").chmod(0o755)
    (tmp_path / "hosts").write_text("127.0.0.1\n")
    env = _base_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, _, err = _run(["-n", "1", "-H", "hosts", "--sync-dst-dir", str(tmp_path / "dst"),
                         "python", "x.py"], env, cwd=tmp_path, timeout=60)
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("launch.py: error: rsync of"), err
    assert "failed with exit code 12" in err


def _leftovers(token):
    """Python processes whose command line holds ``token`` (not their bash wrappers)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(token.encode() in a for a in argv) and b"python" in os.path.basename(argv[0]):
            found.append(pid)
    return found


def test_failing_command_exits_with_its_code(tmp_path):
    start = time.time()
    code, _, err = _run(["-n", "2", "-s", "1", sys.executable, "-c",
                         '"import sys; sys.exit(3)"'], _base_env(), cwd=tmp_path, timeout=60)
    assert code == 3, err
    assert "exited with code 3" in err
    assert time.time() - start < 30


def test_failing_worker_stops_the_waiting_scheduler(tmp_path):
    # the scheduler and server import mxnet and wait for two workers that die first:
    # without the launcher's supervision this hangs forever
    token = uuid.uuid4().hex
    script = tmp_path / f"fail_{token}.py"
    script.write_text("import os, sys\nimport mxnet\n"
                      "sys.exit(5 if os.environ['DMLC_ROLE'] == 'worker' else 0)\n")
    code, _, err = _run(["-n", "2", sys.executable, str(script)], _base_env(), cwd=tmp_path,
                        timeout=90)
    assert code == 5, err
    assert "worker #" in err and "exited with code 5: stopping" in err
    assert _leftovers(token) == []


@pytest.mark.parametrize("inherited, sig", [("default", signal.SIGINT),
                                            ("ignored", signal.SIGINT),
                                            ("default", signal.SIGTERM)])
def test_ctrl_c_stops_every_process(tmp_path, inherited, sig):
    """Ctrl-C stops the job, also when the launcher inherits SIGINT ignored (a background
    job of a non-interactive shell, e.g. a CI script); SIGTERM the same way (exit 143)."""
    token = uuid.uuid4().hex
    script = tmp_path / f"sleep_{token}.py"
    ready = tmp_path / "worker_ready"
    script.write_text(f"import time\nimport mxnet\nopen({str(ready)!r}, 'w').close()\n"
                      "time.sleep(120)\n")
    disposition = signal.SIG_DFL if inherited == "default" else signal.SIG_IGN
    proc = subprocess.Popen([sys.executable, LAUNCH, "-n", "1", sys.executable, str(script)],
                            env=_base_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not ready.exists():  # the worker imported mxnet
            time.sleep(0.2)
        children = [p for p in _leftovers(token) if p != str(proc.pid)]
        assert len(children) == 3  # scheduler, server, worker
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # the test failed early: let the launcher clean up
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            finally:
                proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert ("interrupted" if sig == signal.SIGINT else "terminated") in err
    assert _leftovers(token) == []


@pytest.mark.parametrize("argv, message", [
    (["-n", "2"], "no command to launch"),
    (["-n", "2", "--"], "no command to launch"),
    (["-n", "0", "python", "x.py"], "--num-workers must be at least 1"),
    (["-n", "2", "-s", "0", "python", "x.py"], "--num-servers must be at least 1"),
    (["-n", "two", "python", "x.py"], "invalid int value: 'two'"),
    (["python", "x.py"], "required: -n/--num-workers"),
    (["-n", "2", "--launcher", "mpi", "python", "x.py"], "invalid choice: 'mpi'"),
    (["-n", "2", "--launcher", "ssh", "python", "x.py"], "needs a hosts file"),
    (["-n", "2", "-H", "{missing}", "python", "x.py"], "No such file"),
    (["-n", "2", "-H", "{empty}", "python", "x.py"], "lists no hosts"),
    (["-n", "2", "-H", "{bad}", "python", "x.py"], "line 2: expected 'host'"),
    (["-n", "2", "-H", "{hosts}", "--launcher", "local", "python", "x.py"],
     "-H/--hostfile is for --launcher ssh"),
    (["-n", "2", "--sync-dst-dir", "/tmp/x", "python", "x.py"], "--sync-dst-dir is for"),
    (["-n", "2", "-H", "{hosts}", "python", "-c", "'print(1)'"], "single quote"),
    (["-n", "2", "--env", "NO_SUCH_VARIABLE_GF", "python", "x.py"], "not set"),
    (["-n", "2", "--env", "A:b c", "python", "x.py"], "shell characters"),
    (["-n", "2", "--env", "1A:b", "python", "x.py"], "expected NAME"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    files = {"missing": tmp_path / "missing", "empty": tmp_path / "empty",
             "bad": tmp_path / "bad", "hosts": tmp_path / "hosts"}
    files["empty"].write_text("\n# only a comment\n  \n")
    files["bad"].write_text("node1\nnode2:ssh\n")
    files["hosts"].write_text("127.0.0.1\n")
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("launch.py: error:") and len(err.splitlines()) == 1, err
    assert message in err, err


def test_missing_dmlc_tracker_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dmlc_tracker", None)
    assert launch.main(["-n", "1", "python", "-c", "pass"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dmlc_tracker" in err
    assert "pip install -e .[cpu]" in err


def test_hostfile_forms(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("a\n  # comment\nb:2222\nc slots=4\nd:23 slots=1  # rack 2\n")
    assert launch.read_hostfile(str(hosts)) == [("a", "22"), ("b", "2222"), ("c", "22"),
                                                ("d", "23")]


def test_command_keeps_its_own_options():
    args = launch.build_parser().parse_args(
        ["-n", "2", "python", "train.py", "-n", "5", "--launcher", "x", "-H", "y"])
    assert args.num_workers == 2 and args.launcher is None and args.hostfile is None
    assert args.command == ["python", "train.py", "-n", "5", "--launcher", "x", "-H", "y"]


def test_python_compat_gives_thread_isalive():
    launch._python_compat()
    thread = threading.Thread(target=time.sleep, args=(0.2,))
    thread.start()
    assert thread.isAlive() is True
    thread.join()
    assert thread.isAlive() is False
