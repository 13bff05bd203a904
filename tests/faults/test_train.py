"""tools/train.py as a careless or hostile user runs it: each case in its own process.

After every failure: the documented exit code, one error line, no traceback, the
earlier run and the inputs byte-identical, no temporary file of ours left behind,
and (for hostile checkpoints) no code run.
"""
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ..training.conftest import make_tiny_data
from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_data(str(tmp_path_factory.mktemp("fault_data")))


def _args(data_dir, out, *extra):
    return ["--data-dir", data_dir, "--output", str(out), "--network", "faceresnet18",
            "--model-kwargs", "channels=[4,4,4,8,8]", "--emb-size", "8", "--batch-size", "8",
            "--epochs", "2", "--lr", "0.05", "--warmup-epochs", "0", "--log-interval", "1",
            "--no-hybridize", *extra]


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished 2-step run; tests copy it before they touch it."""
    out = tmp_path_factory.mktemp("finished") / "base"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"),
                           *_args(data_dir, out, "--max-steps", "2")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _error_tail(proc, code, *fragments):
    """Exit ``code``; the last stderr line is the one error line (log lines may precede it)."""
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = err.splitlines()
    assert lines[-1].startswith("train.py: error: "), err[-3000:]
    assert sum("error" in line.lower() for line in lines) == 1, err[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


class _Hostile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_hostile_trainer_states_runs_no_code(run_copy, data_dir, run_tool, snapshot,
                                               one_line_error, tmp_path):
    """An old-layout checkpoint (optimizer state pickled) whose pickle was tampered with."""
    folder = run_copy / "checkpoints" / "last"
    marker = tmp_path / "code-ran"
    for name in ("optimizer.json", "optimizer.params"):
        (folder / name).unlink()
    (folder / "trainer.states").write_bytes(pickle.dumps(_Hostile(str(marker))))
    before = snapshot(run_copy)
    proc = run_tool("train", *_args(data_dir, run_copy, "--resume", str(run_copy),
                                    "--max-steps", "3"))
    one_line_error(proc, 2, "optimizer state stored as a pickle", "--upgrade-checkpoint",
                   prog="train.py")
    assert snapshot(run_copy) == before
    assert not marker.exists()


def test_a_hostile_head_states_runs_no_code(data_dir, run_tool, snapshot, one_line_error,
                                            tmp_path):
    """A model-parallel head's optimizer state file replaced by a pickle."""
    out = tmp_path / "parallel"
    parallel = ["--model-parallel", "--ctx", "cpu:0,1"]
    proc = run_tool("train", *_args(data_dir, out, "--max-steps", "2", *parallel))
    assert proc.returncode == 0, proc.stderr[-2000:]
    marker = tmp_path / "code-ran"
    (out / "checkpoints" / "last" / "head.states").write_bytes(
        pickle.dumps(_Hostile(str(marker))))
    before = snapshot(out)
    proc = run_tool("train", *_args(data_dir, out, "--resume", str(out), "--max-steps", "3",
                                    *parallel))
    one_line_error(proc, 2, "head.states", prog="train.py")
    assert snapshot(out) == before
    assert not marker.exists()


def test_a_finished_run_is_never_overwritten(run_copy, data_dir, run_tool, snapshot,
                                             one_line_error, stray_temps):
    before = snapshot(run_copy)
    proc = run_tool("train", *_args(data_dir, run_copy, "--max-steps", "2"))
    one_line_error(proc, 2, "already holds a run", "--resume", "--overwrite", prog="train.py")
    assert snapshot(run_copy) == before and stray_temps(run_copy) == []


def test_overwrite_replaces_the_run(run_copy, data_dir, run_tool):
    (run_copy / "checkpoints" / "best").mkdir(exist_ok=True)
    (run_copy / "checkpoints" / "best" / "stale-marker").write_text("x")
    proc = run_tool("train", *_args(data_dir, run_copy, "--max-steps", "1", "--overwrite"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (run_copy / "checkpoints" / "best" / "stale-marker").exists()
    rows = (run_copy / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 2 and "max_steps: 1" in (run_copy / "config.yaml").read_text()


def test_the_default_output_moves_to_the_next_free_name(data_dir, run_tool, tmp_path):
    args = [a for a in _args(data_dir, "x", "--max-steps", "1")]
    i = args.index("--output")
    del args[i:i + 2]
    for _ in range(2):
        proc = run_tool("train", *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "runs" / "default" / "checkpoints" / "last").is_dir()
    assert (tmp_path / "runs" / "default-2" / "checkpoints" / "last").is_dir()
    assert "runs/default-2" in proc.stderr


@pytest.mark.parametrize("case", ["output-is-a-file", "output-in-data", "output-in-checkpoint",
                                  "lr-inf", "wd-nan", "clip-negative",
                                  "prefix-flag", "other-batch-size", "truncated-params",
                                  "truncated-optimizer", "missing-optimizer"])
def test_bad_runs_exit_2_with_one_line(case, run_copy, data_dir, run_tool, snapshot,
                                       one_line_error, stray_temps, tmp_path):
    out = tmp_path / "new"
    resume = ["--resume", str(run_copy), "--max-steps", "3"]
    folder = run_copy / "checkpoints" / "last"
    extra, want = {
        "output-is-a-file": (["--max-steps", "1"], "is a file"),
        "output-in-data": (["--max-steps", "1"], "lies inside data_dir"),
        "output-in-checkpoint": (resume, "lies inside the checkpoint"),
        "lr-inf": (["--lr", "inf"], "lr must be a finite number"),
        "wd-nan": (["--wd", "nan"], "wd must be a finite number"),
        "clip-negative": (["--clip-gradient", "-1"], "clip_gradient must be > 0"),
        "prefix-flag": (["--epoch", "1"], "unrecognized arguments: --epoch"),
        "other-batch-size": (resume + ["--batch-size", "4"], "--batch-size 8"),
        "truncated-params": (resume, "backbone.params: cannot read parameters (Invalid"),
        "truncated-optimizer": (resume, "optimizer.params: unreadable optimizer state"),
        "missing-optimizer": (resume, "optimizer.json is missing"),
    }[case]
    if case == "output-is-a-file":
        out = run_copy / "metrics.csv"
    elif case == "output-in-data":
        out = os.path.join(data_dir, "run")
    elif case == "output-in-checkpoint":
        out = folder
    elif case.startswith("truncated"):
        name = "backbone.params" if case == "truncated-params" else "optimizer.params"
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 3])
    elif case == "missing-optimizer":
        (folder / "optimizer.json").unlink()
    before = snapshot(run_copy)
    args = _args(data_dir, out, *extra)
    if case == "prefix-flag":
        args.remove("--epochs")
        args.remove("2")
    proc = run_tool("train", *args, timeout=120)
    one_line_error(proc, 2, want, prog=None if case == "prefix-flag" else "train.py") \
        if case != "prefix-flag" else None
    if case == "prefix-flag":  # argparse's own usage line comes before its error line
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].endswith(want + " 1")
    assert snapshot(run_copy) == before
    assert stray_temps(tmp_path) == [] and not os.path.exists(os.path.join(data_dir, "run"))


def test_a_failing_resume_exits_the_same_way_every_time(run_copy, data_dir, tmp_path):
    """Ten runs, two at a time: never 134 (abort at exit) and never a hang."""
    folder = run_copy / "checkpoints" / "last"
    data = (folder / "backbone.params").read_bytes()
    (folder / "backbone.params").write_bytes(data[:len(data) // 3])
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"),
           *_args(data_dir, tmp_path / "out", "--resume", str(run_copy), "--max-steps", "3")]
    codes = []
    for _ in range(5):
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=dict(os.environ, OMP_NUM_THREADS="1"))
                 for _ in range(2)]
        for p in procs:
            try:
                p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                codes.append("hang")
                continue
            codes.append(p.returncode)
    assert codes == [2] * 10


@pytest.mark.parametrize("job", [False, True], ids=["process", "job-with-data-workers"])
def test_sigterm_saves_at_a_step_boundary_and_exits_143(job, data_dir, tmp_path, stray_temps):
    # job: SIGTERM to the whole process group, as a scheduler stopping the job sends
    # it, with two data-worker processes in the group
    out = tmp_path / "term"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"),
           *_args(data_dir, out, "--epochs", "500", *(["--num-workers", "2"] if job else []))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=job)
    deadline = time.time() + 120
    log = out / "train.log"
    while time.time() < deadline:
        if log.is_file() and log.read_text().count("samples/s") >= 3:
            break
        time.sleep(0.2)
    if job:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated at step" in stderr and "--resume" in stderr
    from gluon_face.training.checkpoint import load_checkpoint_state

    assert load_checkpoint_state(str(out))["step"] >= 3
    assert stray_temps(tmp_path) == []
    if job:  # no worker left behind
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)


def test_stale_temp_folders_of_a_killed_save_are_removed(run_copy, data_dir, run_tool,
                                                         stray_temps):
    stale = run_copy / "checkpoints" / ".last.k9x2ab.tmp"  # what kill -9 mid-save leaves
    stale.mkdir()
    (stale / "backbone.params").write_bytes(b"half")
    proc = run_tool("train", *_args(data_dir, run_copy, "--resume", str(run_copy),
                                    "--max-steps", "3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert stray_temps(run_copy) == []


def _limit_file_size():
    # "disk full" for files above 20 kB: writes fail with EFBIG instead of killing us
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(run_copy, data_dir, run_tool,
                                                               snapshot, stray_temps):
    folder = run_copy / "checkpoints" / "last"
    assert (folder / "backbone.params").stat().st_size > 20_000
    before = snapshot(folder)
    proc = run_tool("train", *_args(data_dir, run_copy, "--resume", str(run_copy),
                                    "--max-steps", "3"), preexec_fn=_limit_file_size)
    line = _error_tail(proc, 2, "cannot write the checkpoint", "previous one is kept")
    assert str(folder) in line
    assert snapshot(folder) == before and stray_temps(run_copy) == []


def test_a_corrupt_image_mid_epoch_is_one_line(tmp_path, run_tool, stray_temps):
    data = make_tiny_data(str(tmp_path / "data"), corrupt=17)
    proc = run_tool("train", *_args(data, tmp_path / "out", "--max-steps", "20"))
    _error_tail(proc, 2, "train.rec")
    assert stray_temps(tmp_path) == []


def test_without_mxnet_train_py_says_what_to_install(tmp_path, run_tool, one_line_error):
    shadow = tmp_path / "mxnet"  # an mxnet that cannot be imported, ahead of the real one
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named mxnet')\n")
    proc = run_tool("train", env={"PYTHONPATH": str(tmp_path)})
    one_line_error(proc, 2, "needs MXNet 1.9.1", "gluon_face[cpu]", prog="train.py")
