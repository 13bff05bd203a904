"""Mixed-precision training (``--amp``): a low-precision backbone graph and loss scaling.

MXNet 1.9.1's ``mxnet.contrib.amp.init`` only rewrites the legacy ``mx.nd`` /
``mx.sym`` operator namespaces, so the numpy-mode networks of gluon_face would
stay float32 under it.  Instead the hybridized backbone's cached graph goes
through amp's symbol pass (:func:`gluon_face.graph.precision.to_low_precision`) and
the resulting ``SymbolBlock`` *shares* the backbone's parameters:

* the master weights, their gradients and the optimizer state stay float32;
  ``amp_cast`` nodes inside the graph cast weights and activations, so
  convolutions and the dense layer (and the BatchNorms between them) compute
  in the low precision type; the embedding leaves the graph as float32;
* the head (margin softmax, sharded or not), the cross-entropy and the center
  loss stay float32;
* checkpoints hold the float32 parameters (loadable without ``--amp``).

Which type: ``bfloat16`` on CPU contexts, allowed only when the processor has
AVX-512 BF16 (``avx512_bf16`` in ``/proc/cpuinfo``; MKLDNN has no fast
bfloat16 kernels otherwise); ``float16`` on GPU contexts.  bfloat16 keeps
float32's exponent range, so it needs no loss scaling; float16 does, with
:class:`DynamicLossScaler`.
"""
import math

from .config import ConfigError

__all__ = ["CPUINFO", "cpu_flags", "cpu_has_bf16", "enable_amx", "amp_dtype", "check_amp",
           "DynamicLossScaler", "loss_scaler_for", "grads_finite", "count_skipped_update",
           "low_precision_backbone"]

#: Where the processor's feature flags are read from (Linux).
CPUINFO = "/proc/cpuinfo"
#: The flag a CPU needs for ``--amp`` (bfloat16 dot products in AVX-512).
BF16_FLAG = "avx512_bf16"


def cpu_flags(path=CPUINFO):
    """The feature flags of the first processor listed in ``path`` (a set of str).

    Empty when the file is missing or unreadable (not Linux).
    """
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(path=CPUINFO):
    """True when the processor lists ``avx512_bf16`` among its flags."""
    return BF16_FLAG in cpu_flags(path)


#: oneDNN's switch for its maximum instruction set (read once, at its first primitive).
_ISA_VARS = ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "MKLDNN_MAX_CPU_ISA")
_SYS_ARCH_PRCTL = 158  # x86-64
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def enable_amx(path=CPUINFO):
    """Let MXNet's oneDNN use AMX tiles for bfloat16 convolutions; True if allowed.

    MXNet 1.9.1 ships oneDNN 2.4.4, which uses AMX only when
    ``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX`` is set, and does not ask Linux
    (5.16+) for permission to use the tile registers, so with the variable
    alone its AMX kernels die with SIGILL.  This asks the kernel for that
    permission (``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``) and sets the
    variable only when it was granted.  Without AMX, bfloat16 training on
    AVX-512 is slower than float32; ``tools/benchmark.py --amx auto|off``
    measures both.

    Effective only before oneDNN runs its first primitive in this process
    (oneDNN reads the variable once: this runs one, then removes the
    variable again, as processes started later would not hold the
    permission); a variable the user already set is left alone.  Does
    nothing (False) on processors without ``amx_bf16``, outside Linux
    x86-64, or when the kernel refuses.
    """
    import ctypes
    import os
    import platform

    if any(os.environ.get(v) for v in _ISA_VARS):
        return "AMX" in "".join(os.environ.get(v, "") for v in _ISA_VARS).upper()
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if "amx_bf16" not in cpu_flags(path):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        granted = libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False
    if not granted:
        return False
    # oneDNN reads the variable at its first primitive: make one now, then take the
    # variable away again so that processes started later (exec clears the permission)
    # do not inherit it.
    os.environ["DNNL_MAX_CPU_ISA"] = "AVX512_CORE_AMX"
    try:
        import mxnet as mx

        x = mx.nd.ones((1, 16, 4, 4))
        mx.nd.Convolution(x, mx.nd.ones((16, 16, 3, 3)), kernel=(3, 3), num_filter=16,
                          no_bias=True).wait_to_read()
    finally:
        del os.environ["DNNL_MAX_CPU_ISA"]
    return True


def amp_dtype(ctx_list):
    """``'bfloat16'`` for CPU contexts, ``'float16'`` for GPU contexts.

    Raises
    ------
    ConfigError
        For a mix of CPU and GPU contexts.
    """
    kinds = {c.device_type for c in ctx_list}
    if kinds == {"cpu"}:
        return "bfloat16"
    if kinds == {"gpu"}:
        return "float16"
    raise ConfigError(f"amp: contexts {', '.join(str(c) for c in ctx_list)} mix device kinds; "
                      "use only CPU (bfloat16) or only GPU (float16) contexts")


def check_amp(ctx_list, kvstore="local"):
    """The low-precision type ``--amp`` uses on ``ctx_list``; refuses what cannot work.

    Raises
    ------
    ConfigError
        On CPU contexts when the processor lacks ``avx512_bf16``; for float16
        with the ``dist_async`` kvstore (loss scaling needs the summed gradients
        before the update, which ``dist_async`` applies on the servers).
    """
    dtype = amp_dtype(ctx_list)
    if dtype == "bfloat16" and not cpu_has_bf16():
        raise ConfigError(f"amp: bfloat16 on CPU needs a processor with AVX-512 BF16 "
                          f"({BF16_FLAG} is not among the flags in {CPUINFO}); "
                          "train without --amp")
    if dtype == "float16" and kvstore == "dist_async":
        raise ConfigError("amp: float16 loss scaling needs the reduced gradients before the "
                          "update, which kvstore dist_async does not give; use dist_sync")
    return dtype


def loss_scaler_for(dtype):
    """A fresh :class:`DynamicLossScaler` for ``'float16'``; None for ``'bfloat16'``.

    bfloat16 has float32's 8-bit exponent: gradients neither overflow nor
    flush to zero more than in float32, so scaling would only cost time.
    """
    return DynamicLossScaler() if dtype == "float16" else None


def low_precision_backbone(net, example, dtype, split_prelu=True):
    """A block training ``net`` in ``dtype``: its graph converted, its parameters shared.

    ``net`` must be initialised on every context the returned block will be
    called on; it is hybridized as a side effect (the graph is traced from it).

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
    example : mxnet.np.ndarray, shape (B, 3, H, W)
        One device's slice of a training batch (the shape the block is fed).
    dtype : {'bfloat16', 'float16'}
    split_prelu : bool, default True
        Split PReLU into oneDNN operators that run in ``dtype``
        (:func:`gluon_face.graph.precision.to_low_precision`); otherwise PReLU runs
        in float32 between casts.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        ``block(x)`` -> float32 embeddings; gradients land in ``net``'s
        parameters (float32).
    """
    from ..graph.precision import to_low_precision

    return to_low_precision(net, example, dtype=dtype, share_params=True,
                            split_prelu=split_prelu)


def grads_finite(params, ctx):
    """True when every gradient of ``params`` on ``ctx`` is finite (no inf, no NaN).

    One ``multi_all_finite`` reduction per 200 arrays on the device, one
    host read.

    Parameters
    ----------
    params : iterable of mxnet.gluon.Parameter
        Parameters with ``grad_req != 'null'`` are checked.
    ctx : mxnet.Context
    """
    import mxnet as mx
    from mxnet import autograd

    grads = [p.grad(ctx).as_nd_ndarray() for p in params if p.grad_req != "null"]
    if not grads:
        return True
    with autograd.pause():
        flag = mx.nd.ones((1,), ctx=ctx)
        for start in range(0, len(grads), 200):
            chunk = grads[start:start + 200]
            mx.nd.multi_all_finite(*chunk, num_arrays=len(chunk), init_output=False,
                                           out=flag)
        return bool(flag.asscalar() > 0)


def count_skipped_update(optimizer):
    """Advance ``optimizer``'s update counters as if it had applied one update.

    A skipped step (overflow) still consumed its batch; advancing the counters
    keeps the learning-rate schedule (driven by ``num_update``) aligned with
    the global step, as without loss scaling.  Adam-style bias corrections
    read the same counters.
    """
    from ..graph import mxnet_compat

    mxnet_compat.advance_update_counts(optimizer)
    optimizer.num_update += 1


class DynamicLossScaler:
    """Loss scaling for float16 training: scale up while clean, back off on overflow.

    The loss is multiplied by :attr:`scale` before the backward pass, so small
    float16 gradients do not flush to zero; the optimizer divides it out again
    (``trainer.update(batch_size * scale)``).  After each backward pass
    :meth:`update` is told whether all gradients were finite:

    * not finite: the step must be skipped, ``scale *= backoff_factor``
      (never below ``min_scale``), the clean-step count restarts;
    * finite: the step is applied; after ``growth_interval`` clean steps in a
      row ``scale *= growth_factor`` (never above ``max_scale``).

    Powers of two keep the scaling exact: ``(g * 2**k) / 2**k == g``.

    Parameters
    ----------
    init_scale : float, default 2**16
    growth_factor : float, default 2
    backoff_factor : float, default 0.5
    growth_interval : int, default 2000
        Clean steps before the scale grows.
    min_scale, max_scale : float, default 1 and 2**24
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, min_scale=1.0, max_scale=2.0 ** 24):
        if not init_scale > 0 or not math.isfinite(init_scale):
            raise ValueError(f"init_scale must be a positive finite number, got {init_scale}")
        if not growth_factor > 1:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor}")
        if not 0 < backoff_factor < 1:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor}")
        if int(growth_interval) < 1:
            raise ValueError(f"growth_interval must be >= 1, got {growth_interval}")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.scale = float(init_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.clean_steps = 0
        self.skipped = 0

    def update(self, finite):
        """Record one backward pass; True when its step should be applied."""
        if not finite:
            self.scale = max(self.min_scale, self.scale * self.backoff_factor)
            self.clean_steps = 0
            self.skipped += 1
            return False
        self.clean_steps += 1
        if self.clean_steps >= self.growth_interval:
            self.scale = min(self.max_scale, self.scale * self.growth_factor)
            self.clean_steps = 0
        return True

    def state_dict(self):
        """JSON-serialisable state (all settings and counters)."""
        return {"scale": self.scale, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "min_scale": self.min_scale, "max_scale": self.max_scale,
                "clean_steps": self.clean_steps, "skipped": self.skipped}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output.

        Raises
        ------
        ValueError
            For a missing key or a non-positive scale.
        """
        try:
            scale = float(state["scale"])
            clean = int(state["clean_steps"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"loss scaler state needs 'scale' and 'clean_steps', got "
                             f"{state!r}") from None
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"loss scaler state: scale must be positive, got {scale}")
        for key in ("growth_factor", "backoff_factor", "min_scale", "max_scale"):
            if key in state:
                setattr(self, key, float(state[key]))
        if "growth_interval" in state:
            self.growth_interval = int(state["growth_interval"])
        self.scale, self.clean_steps = scale, clean
        self.skipped = int(state.get("skipped", 0))

    def __repr__(self):
        return (f"DynamicLossScaler(scale={self.scale:g}, clean_steps={self.clean_steps}, "
                f"growth_interval={self.growth_interval}, skipped={self.skipped})")
