"""The float32 GEMM roof: the best matrix-product rate measured in the same run.

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
    """

    def __init__(self, size=2048, ctx=None):
        self.size = int(size)
        ctx = ctx or mx.cpu()
        rng = onp.random.default_rng(0)
        self._a = np.array(rng.standard_normal((self.size, self.size)).astype("float32"), ctx=ctx)
        self._b = np.array(rng.standard_normal((self.size, self.size)).astype("float32"), ctx=ctx)
        self.samples = []
        self.sample()  # warm-up (allocations, kernel selection), kept out of the median
        self.samples = []

    def sample(self):
        """Time one ``np.dot`` and one ``fully_connected`` of the matrices; keep the faster."""
        flop = 2.0 * self.size ** 3
        t_dot = timed(lambda: np.dot(self._a, self._b), mx.nd.waitall)
        t_fc = timed(lambda: npx.fully_connected(self._a, self._b, no_bias=True,
                                                 num_hidden=self.size), mx.nd.waitall)
        self.samples.append(flop / min(t_dot, t_fc) / 1e9)
        return self.samples[-1]

    @property
    def gflops(self):
        """Best of the samples (GFLOP/s): other load only ever lowers a sample."""
        if not self.samples:
            self.sample()
        return max(self.samples)
