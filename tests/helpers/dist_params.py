"""For the worker scripts that distributed tests run in subprocesses.

tests/training/test_dist.py and tests/tools/test_launch.py put this folder on
the workers' PYTHONPATH; each worker saves :func:`trainable_params` before and
after training so the test can compare the ranks.
"""


def trainable_params(trainer):
    """Name -> numpy array of every trainable parameter of the trainer's backbone and head.

    BatchNorm running statistics (``grad_req='null'``) are left out: each worker of a
    parameter-server job keeps those of its own data.
    """
    params = {}
    for block in (trainer.backbone, trainer.head):
        for name, p in block._collect_params_with_prefix().items():
            if p.grad_req != "null":
                params[type(block).__name__ + "." + name] = p.data().asnumpy()
    return params
