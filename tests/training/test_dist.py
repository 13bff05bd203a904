"""dist_sync on loopback: a scheduler, one server and two workers train a few steps and
end with identical trainable parameters, and one dist_sync step equals one step of a
single process on the two workers' batches together.

BatchNorm running statistics (``grad_req='null'``) are not communicated: each
worker keeps those of its own data, as in any MXNet parameter-server job, so
only the trainable parameters are compared.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as onp
import pytest

from gluon_face.training import FaceTrainer, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHONPATH = os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "helpers")])


def _load_helper(name):
    """A module of tests/helpers in this process (the workers find it on PYTHONPATH)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "tests", "helpers", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


trainable_params = _load_helper("dist_params").trainable_params

WORKER = textwrap.dedent("""
    import sys
    import numpy as onp
    from mxnet import npx
    npx.set_np()
    from dist_params import trainable_params  # tests/helpers, on PYTHONPATH
    from gluon_face.training import FaceTrainer, TrainConfig

    data_dir, out = sys.argv[1], sys.argv[2]
    cfg = TrainConfig(data_dir=data_dir, output=out, network="faceresnet18",
                      model_kwargs={"channels": [4, 4, 4, 8, 8]}, emb_size=8, batch_size=8,
                      epochs=2, lr=0.05, warmup_epochs=0.0, log_interval=1, hybridize=False,
                      kvstore="dist_sync", max_steps=4, val_targets=[])
    trainer = FaceTrainer(cfg)

    onp.savez(f"{out}/init_rank{trainer.rank}.npz", **trainable_params(trainer))
    summary = trainer.fit()
    onp.savez(f"{out}/params_rank{trainer.rank}.npz", **trainable_params(trainer))
    print("rank", trainer.rank, "of", trainer.num_workers, "step", summary["step"])
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_dist_job(script, args, timeout=90):
    """Scheduler + 1 server + 2 workers of ``script`` on 127.0.0.1; the workers' stdouts.

    Fails the test with a worker's stderr if one exits non-zero.
    """
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, OMP_NUM_THREADS="1",
               DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(_free_port()),
               DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="2", PS_VERBOSE="0")
    procs, workers = [], []
    try:
        for role in ("scheduler", "server"):
            procs.append(subprocess.Popen([sys.executable, "-c", "import mxnet"],
                                          env=dict(env, DMLC_ROLE=role),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        workers = [subprocess.Popen([sys.executable, str(script)] + [str(a) for a in args],
                                    env=dict(env, DMLC_ROLE="worker"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [w.communicate(timeout=timeout) for w in workers]
        for w, (_, err) in zip(workers, outputs):
            assert w.returncode == 0, err[-2000:]
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs + workers:
            if p.poll() is None:
                p.kill()
    return [out for out, _ in outputs]


@pytest.mark.slow
def test_dist_sync_workers_hold_identical_parameters(tiny_data, tmp_path, ranks_agree):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    outputs = _run_dist_job(script, [tiny_data, tmp_path])
    lines = sorted(line for out in outputs for line in out.splitlines()
                   if line.startswith("rank"))
    assert lines == ["rank 0 of 2 step 4", "rank 1 of 2 step 4"]
    ranks_agree(tmp_path)
    assert (tmp_path / "checkpoints" / "last" / "state.json").is_file()  # rank 0 writes


STEP_WORKER = textwrap.dedent("""
    import json
    import sys
    import mxnet as mx
    import numpy as onp
    from mxnet import npx
    npx.set_np()
    from dist_params import trainable_params  # tests/helpers, on PYTHONPATH
    from gluon_face.training import FaceTrainer, TrainConfig

    out = sys.argv[1]
    settings = json.loads(sys.argv[2])
    trainer = FaceTrainer(TrainConfig(output=out, kvstore="dist_sync", **settings))
    rank = trainer.rank
    batches = onp.load(f"{out}/batches.npz")
    onp.savez(f"{out}/init_rank{rank}.npz", **trainable_params(trainer))
    loss = trainer.train_step(batches[f"data{rank}"], batches[f"label{rank}"])
    onp.savez(f"{out}/params_rank{rank}.npz", **trainable_params(trainer))
    mx.nd.waitall()  # no pushes may be queued when a worker leaves
    print("rank", rank, "of", trainer.num_workers, "loss", repr(loss))
""")

#: The 2-worker step's per-worker batch: each worker's BatchNorm, and each of the single
#: process's two devices, normalise over B = 8 samples.
PER_WORKER = 8


def _step_settings(data_dir):
    """One SGD step whose update is all gradient: constant lr, no momentum state yet
    (the first step), no weight decay, so a wrong gradient scale moves every weight
    by the same wrong factor."""
    return dict(data_dir=data_dir, network="faceresnet18",
                model_kwargs={"channels": [4, 4, 4, 8, 8]}, emb_size=8, act_type="prelu",
                loss="cosface", batch_size=PER_WORKER, epochs=1, lr=0.1, lr_mode="constant",
                warmup_epochs=0.0, momentum=0.9, wd=0.0, hybridize=False, val_targets=[],
                seed=3)


@pytest.mark.slow
def test_dist_sync_step_equals_one_process_on_the_global_batch(tiny_data, tmp_path):
    """dist_sync, 2 workers x B images, one step == one process, 2 devices x B images.

    ``trainer.step`` must rescale the kvstore's sum of both machines' gradients by
    the global batch ``B * num_workers``: with ``B`` every weight moves twice as far
    and the two runs part.  Two CPU contexts in the reference give each device's
    BatchNorm the same B samples (worker 0's batch on cpu(0), worker 1's on cpu(1):
    ``split_and_load`` cuts the global batch in order) that a worker's sees.
    """
    rng = onp.random.default_rng(11)
    batches = {}
    for rank in range(2):
        batches[f"data{rank}"] = rng.standard_normal(
            (PER_WORKER, 3, 16, 16)).astype(onp.float32)
        batches[f"label{rank}"] = rng.permutation(
            onp.arange(PER_WORKER) % 4).astype(onp.float32)
    onp.savez(tmp_path / "batches.npz", **batches)
    settings = _step_settings(tiny_data)

    script = tmp_path / "step_worker.py"
    script.write_text(STEP_WORKER)
    outputs = _run_dist_job(script, [tmp_path, json.dumps(settings)])
    lines = sorted(line.split() for out in outputs for line in out.splitlines()
                   if line.startswith("rank"))
    assert [line[:5] for line in lines] == [["rank", "0", "of", "2", "loss"],
                                            ["rank", "1", "of", "2", "loss"]]
    worker_losses = [float(line[5]) for line in lines]

    ref_cfg = dict(settings, batch_size=2 * PER_WORKER, ctx="cpu:0,1", kvstore="device",
                   output=str(tmp_path / "one_process"))
    ref = FaceTrainer(TrainConfig(**ref_cfg))
    assert ref.steps_per_epoch == 3  # as each worker's: the same (constant) schedule
    init = trainable_params(ref)
    ref_loss = ref.train_step(onp.concatenate([batches["data0"], batches["data1"]]),
                              onp.concatenate([batches["label0"], batches["label1"]]))
    after = trainable_params(ref)
    # the same forward passes: the global batch's mean loss is the workers' mean
    assert ref_loss == pytest.approx(sum(worker_losses) / 2, rel=1e-5)

    for rank in range(2):
        # the same seed gave both jobs the same initial weights
        start = onp.load(tmp_path / f"init_rank{rank}.npz")
        assert sorted(start.files) == sorted(init) and len(init) > 10
        for key in init:
            onp.testing.assert_array_equal(start[key], init[key], err_msg=key)
    dist, other = (onp.load(tmp_path / f"params_rank{rank}.npz") for rank in range(2))
    # the length of the whole step: B instead of B * num_workers makes it 2.0
    step_dist = onp.sqrt(sum(((dist[k] - init[k]) ** 2).sum() for k in init))
    step_ref = onp.sqrt(sum(((after[k] - init[k]) ** 2).sum() for k in init))
    assert step_ref > 0.1 and step_dist / step_ref == pytest.approx(1.0, abs=1e-3)
    for key in init:
        onp.testing.assert_array_equal(dist[key], other[key], err_msg=key)
        onp.testing.assert_allclose(dist[key], after[key], rtol=1e-4, atol=1e-6, err_msg=key)
        # each weight's own step agrees too, also where it is small beside the weight
        onp.testing.assert_allclose(dist[key] - init[key], after[key] - init[key],
                                    rtol=1e-2, atol=1e-5, err_msg=key)
