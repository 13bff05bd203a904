"""The GEMM roofs: the best float32 (and bfloat16) matrix-product rates of the same run.

A workload's roof fraction is its median achieved GFLOP/s over this rate.
Sampling it between the workloads' repeats lets it see the same machine load.
"""
import mxnet as mx
import numpy as onp
from mxnet import np, npx
from mxnet.util import use_np

from .timing import timed

__all__ = ["GemmRoof"]


@use_np
class GemmRoof:
    """Measured float32 GEMM rate (GFLOP/s); call :meth:`sample` between workloads.

    Parameters
    ----------
    size : int
        Side ``n`` of the square product (``2 n^3`` FLOP).
    ctx : Context
    bf16 : bool
        Also sample the bfloat16 rate (the same product through oneDNN's
        bfloat16 ``FullyConnected``, float32 accumulation; with AMX where
        :func:`~gluon_face.training.amp.enable_amx` allowed it): the roof of
        the ``bf16`` and ``int8`` rows.  Only on CPUs with AVX-512 BF16.
    """

    def __init__(self, size=2048, ctx=None, bf16=False):
        self.size = int(size)
        ctx = ctx or mx.cpu()
        rng = onp.random.default_rng(0)
        self._a = np.array(rng.standard_normal((self.size, self.size)).astype("float32"), ctx=ctx)
        self._b = np.array(rng.standard_normal((self.size, self.size)).astype("float32"), ctx=ctx)
        self._a16 = self._b16 = None
        if bf16:
            from ..graph.precision import bfloat16_dtype

            self._a16 = mx.nd.amp_cast(self._a.as_nd_ndarray(), dtype=bfloat16_dtype())
            self._b16 = mx.nd.amp_cast(self._b.as_nd_ndarray(), dtype=bfloat16_dtype())
        self.samples, self.bf16_samples = [], []
        self.sample()  # warm-up (allocations, kernel selection), kept out of the median
        self.samples, self.bf16_samples = [], []

    def sample(self):
        """Time one ``np.dot`` and one ``fully_connected`` of the matrices; keep the faster."""
        flop = 2.0 * self.size ** 3
        t_dot = timed(lambda: np.dot(self._a, self._b), mx.nd.waitall)
        t_fc = timed(lambda: npx.fully_connected(self._a, self._b, no_bias=True,
                                                 num_hidden=self.size), mx.nd.waitall)
        self.samples.append(flop / min(t_dot, t_fc) / 1e9)
        if self._a16 is not None:
            t16 = min(timed(lambda: mx.nd.FullyConnected(self._a16, self._b16, no_bias=True,
                                                         num_hidden=self.size), mx.nd.waitall)
                      for _ in range(2))
            self.bf16_samples.append(flop / t16 / 1e9)
        return self.samples[-1]

    @property
    def bf16_gflops(self):
        """Best bfloat16 sample (GFLOP/s), or None when not sampled (``bf16=False``)."""
        return max(self.bf16_samples) if self.bf16_samples else None

    @property
    def gflops(self):
        """Best of the samples (GFLOP/s): other load only ever lowers a sample."""
        if not self.samples:
            self.sample()
        return max(self.samples)
