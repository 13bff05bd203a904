"""Embeddings without a network, the floor every trained model must clear."""
from mxnet.gluon import nn
from mxnet.util import use_np

__all__ = ["RawPixels"]


@use_np
class RawPixels(nn.HybridBlock):
    r"""Raw pixels as the embedding: the "no network" baseline of verification tables.

    The normalised image ``x = (pixel - 127.5) / 128`` is flattened and its own
    mean is subtracted, so that the cosine of two embeddings is the correlation
    of the two images' pixels (without the centring, the background level of a
    photo would decide most of the cosine):

    .. math:: e = \operatorname{vec}(x) - \operatorname{mean}(x)

    It has no parameters and needs no initialisation; it hybridizes.

    Inputs: ``x`` (B, C, H, W) float32.  Output: (B, C * H * W), not normalised.
    """

    def hybrid_forward(self, F, x):
        flat = F.npx.reshape(x, (-2, -1))  # (B, C * H * W)
        return flat - F.np.mean(flat, axis=1, keepdims=True)
