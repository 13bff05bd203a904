"""dist_sync on loopback: a scheduler, one server and two workers train a few steps and
end with identical trainable parameters.

BatchNorm running statistics (``grad_req='null'``) are not communicated: each
worker keeps those of its own data, as in any MXNet parameter-server job, so
only the trainable parameters are compared.
"""
import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHONPATH = os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "helpers")])

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


@pytest.mark.slow
def test_dist_sync_workers_hold_identical_parameters(tiny_data, tmp_path, ranks_agree):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, OMP_NUM_THREADS="1",
               DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(_free_port()),
               DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="2", PS_VERBOSE="0")
    procs = []
    try:
        for role in ("scheduler", "server"):
            procs.append(subprocess.Popen([sys.executable, "-c", "import mxnet"],
                                          env=dict(env, DMLC_ROLE=role),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        workers = [subprocess.Popen([sys.executable, str(script), tiny_data, str(tmp_path)],
                                    env=dict(env, DMLC_ROLE="worker"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [w.communicate(timeout=90) for w in workers]
        for w, (_, err) in zip(workers, outputs):
            assert w.returncode == 0, err[-2000:]
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs + locals().get("workers", []):
            if p.poll() is None:
                p.kill()
    lines = sorted(line for out, _ in outputs for line in out.splitlines()
                   if line.startswith("rank"))
    assert lines == ["rank 0 of 2 step 4", "rank 1 of 2 step 4"]
    ranks_agree(tmp_path)
    assert (tmp_path / "checkpoints" / "last" / "state.json").is_file()  # rank 0 writes
