"""MobileFaceNet: the small face-recognition backbone of insightface's ``y1`` configuration.

MobileFaceNets (Chen, Liu, Gao and Han 2018, https://arxiv.org/abs/1804.07573) keep
MobileNetV2's inverted residuals but replace global average pooling by a global
depthwise convolution (GDC): a face crop is aligned, so each position of the last
feature map carries its own weight.  This is insightface's variant
(``recognition/arcface_mxnet/symbol/fmobilefacenet.py``, ``net_output='GDC'``): at
112x112 with the ``y1`` settings (units per stage ``[1, 4, 6, 2]``, 128-d embedding,
PReLU) it has 1,003,264 parameters, the figure insightface publishes.

Layout (child names are the keys of saved parameter files; ``unit`` is a
HybridSequential of Conv2D (no bias), BatchNorm and, except in a linear unit, the
activation)::

    MobileFaceNet
      features   0  unit 3x3 s2, 64 channels                        (conv_1)
                 1  depthwise unit 3x3, 64 channels when layers[0] == 1 (conv_2_dw),
                    else layers[0] DepthwiseResidual units of width 64 (res_2)
                 2  depthwise block, expansion 128, 64 out, stride 2 (dconv_23)
                 3  layers[1] DepthwiseResidual, expansion 128, 64   (res_3)
                 4  depthwise block, expansion 256, 128 out, s2     (dconv_34)
                 5  layers[2] DepthwiseResidual, expansion 256, 128  (res_4)
                 6  depthwise block, expansion 512, 128 out, s2     (dconv_45)
                 7  layers[3] DepthwiseResidual, expansion 256, 128  (res_5)
                 8  unit 1x1, 512 channels                          (conv_6sep)
      output     GDC: depthwise Conv (H/16 x W/16, valid), BatchNorm, Flatten,
                 Dense(emb), BatchNorm with its scale fixed to 1    (conv_6dw7_7, pre_fc1, fc1)

A depthwise block is three units: 1x1 expansion, depthwise 3x3 (the stride), and a
linear 1x1 projection; a DepthwiseResidual adds its input to such a block (stride 1).
The names in brackets are insightface's layer names (see
:mod:`gluon_face.model_zoo.insightface`).  The BatchNorm layers of the units use
MXNet's default epsilon 1e-3, as insightface's symbol does (it does not set one);
the embedding BatchNorm uses 2e-5.
"""
from mxnet.gluon import nn
from mxnet.util import use_np

from .faceresnet import (
    BN_MOMENTUM,
    _activation,
    _check_act_type,
    _check_image_size,
    _check_positive_int,
)
from .registry import MODELS

__all__ = ["MobileFaceNet", "DepthwiseResidual", "mobilefacenet_unit", "depthwise_block",
           "MOBILEFACENET_LAYERS"]

#: Units per stage of insightface's ``y1`` MobileFaceNet (``net_blocks``).
MOBILEFACENET_LAYERS = (1, 4, 6, 2)
#: Epsilon of the units' BatchNorm: MXNet's default, which insightface's symbol keeps.
UNIT_BN_EPS = 1e-3
#: Epsilon of the embedding BatchNorm (insightface's ``fc1``).
EMB_BN_EPS = 2e-5
#: (expansion width, output width) of the stages after the stem, and the widths
#: of the strided depthwise blocks before stages 2-4; insightface's fixed numbers.
_STAGES = ((64, 64), (128, 64), (256, 128), (256, 128))
_DOWN = ((128, 64), (256, 128), (512, 128))
_LAST_CHANNELS = 512


def mobilefacenet_unit(channels, in_channels, kernel=1, stride=1, groups=1, act_type="prelu",
                       linear=False):
    """Conv2D (no bias), BatchNorm (eps 1e-3) and, unless ``linear``, the activation.

    Returns
    -------
    mxnet.gluon.nn.HybridSequential
        Children ``0`` (Conv2D), ``1`` (BatchNorm), ``2`` (activation, absent if
        ``linear``).  Padding keeps the size at stride 1 (``kernel // 2``).
    """
    unit = nn.HybridSequential(prefix="")
    unit.add(nn.Conv2D(channels, kernel_size=kernel, strides=stride, padding=kernel // 2,
                       groups=groups, use_bias=False, in_channels=in_channels),
             nn.BatchNorm(epsilon=UNIT_BN_EPS, momentum=BN_MOMENTUM, in_channels=channels))
    if not linear:
        unit.add(_activation(act_type, channels))
    return unit


def depthwise_block(out_channels, in_channels, expansion, stride, act_type="prelu"):
    """1x1 expansion unit, depthwise 3x3 unit (``stride``), linear 1x1 projection.

    insightface's ``DResidual`` (despite the name, without a shortcut).

    Returns
    -------
    mxnet.gluon.nn.HybridSequential
        ``(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)``.
    """
    block = nn.HybridSequential(prefix="")
    block.add(mobilefacenet_unit(expansion, in_channels, act_type=act_type),
              mobilefacenet_unit(expansion, expansion, kernel=3, stride=stride,
                                 groups=expansion, act_type=act_type),
              mobilefacenet_unit(out_channels, expansion, linear=True))
    return block


@use_np
class DepthwiseResidual(nn.HybridBlock):
    r"""A stride-1 :func:`depthwise_block` plus its input: :math:`y = \mathrm{body}(x) + x`.

    Parameters
    ----------
    channels : int
        Input and output channels.
    expansion : int
        Channels of the depthwise convolution.
    act_type : {'prelu', 'relu'}
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, channels, H, W).  Output: the same shape.  Child: ``body``.
    """

    def __init__(self, channels, expansion, act_type="prelu", **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = depthwise_block(channels, channels, expansion, 1, act_type)

    def hybrid_forward(self, F, x):
        return self.body(x) + x


@use_np
class MobileFaceNet(nn.HybridBlock):
    r"""MobileFaceNet with the GDC output (insightface's ``fmobilefacenet``).

    Parameters
    ----------
    layers : sequence of 4 int, default (1, 4, 6, 2)
        Units per stage (insightface's ``net_blocks``; ``y2`` is ``[2, 8, 16, 4]``).
        A first entry of 1 is one depthwise unit, not a residual one.
    emb_size : int, default 128
        Embedding dimension :math:`E`.
    act_type : {'prelu', 'relu'}, default 'prelu'
    image_size : int or (int, int), default 112
        Input height and width, multiples of 16; the GDC kernel covers the whole
        last map (7x7 at 112, insightface's fixed size).
    in_channels : int, default 3
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, in_channels, H, W) float32, ``(pixel - 127.5) / 128``.
    Output: (B, emb_size), not L2-normalised.  All parameter shapes are declared.
    """

    def __init__(self, layers=MOBILEFACENET_LAYERS, emb_size=128, act_type="prelu",
                 image_size=112, in_channels=3, **kwargs):
        super().__init__(**kwargs)
        layers = [_check_positive_int("layers[%d]" % i, n) for i, n in enumerate(layers)]
        if len(layers) != 4:
            raise ValueError(f"MobileFaceNet has 4 stages: layers needs 4 entries, got "
                             f"{len(layers)}")
        self.layers = layers
        self.emb_size = _check_positive_int("emb_size", emb_size)
        self.act_type = _check_act_type(act_type)
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.image_size = _check_image_size(image_size, 16)
        self.feature_shape = (_LAST_CHANNELS, self.image_size[0] // 16,
                              self.image_size[1] // 16)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(mobilefacenet_unit(64, self.in_channels, kernel=3, stride=2,
                                                 act_type=act_type))
            width = 64
            for i, (expansion, out) in enumerate(_STAGES):
                if i:
                    down_expansion, down_out = _DOWN[i - 1]
                    self.features.add(depthwise_block(down_out, width, down_expansion, 2,
                                                      act_type))
                    width = down_out
                if i == 0 and layers[0] == 1:
                    self.features.add(mobilefacenet_unit(64, 64, kernel=3, groups=64,
                                                         act_type=act_type))
                    continue
                stage = nn.HybridSequential(prefix="")
                for _ in range(layers[i]):
                    stage.add(DepthwiseResidual(out, expansion, act_type, prefix=""))
                self.features.add(stage)
                width = out
            self.features.add(mobilefacenet_unit(_LAST_CHANNELS, width, act_type=act_type))
            _, h, w = self.feature_shape
            self.output = nn.HybridSequential(prefix="")
            # The Dense layer would flatten the (B, 512, 1, 1) maps itself; the explicit
            # Flatten is there because MXNet 1.9.1's oneDNN graph (the fused embedder)
            # fails from its second call on when a grouped convolution + BatchNorm feeds
            # a fully connected layer directly.
            self.output.add(
                nn.Conv2D(_LAST_CHANNELS, kernel_size=(h, w), groups=_LAST_CHANNELS,
                          use_bias=False, in_channels=_LAST_CHANNELS),
                nn.BatchNorm(epsilon=UNIT_BN_EPS, momentum=BN_MOMENTUM,
                             in_channels=_LAST_CHANNELS),
                nn.Flatten(),
                nn.Dense(self.emb_size, in_units=_LAST_CHANNELS),
                nn.BatchNorm(epsilon=EMB_BN_EPS, momentum=BN_MOMENTUM, scale=False,
                             in_channels=self.emb_size))

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


@MODELS.register("mobilefacenet")
def mobilefacenet(layers=None, emb_size=128, use_dropout=False, act_type="prelu", output="GDC",
                  image_size=112, in_channels=3, channels=None, stem=None, **kwargs):
    """MobileFaceNet (insightface ``y1``: units [1, 4, 6, 2], 128-d, PReLU), uninitialised.

    Keywords as :class:`MobileFaceNet`; ``layers=`` replaces the units per stage.
    The registry's ``use_dropout=True``, an ``output`` other than ``'GDC'``,
    ``channels`` and ``stem`` are refused (``ValueError``): the GDC output has no
    dropout, and the widths and the stride-2 3x3 first unit are MobileFaceNet's own.
    """
    if use_dropout not in (False, None):
        raise ValueError("mobilefacenet has no dropout (its GDC output has none): "
                         "use_dropout must be False")
    if output != "GDC":
        raise ValueError(f"mobilefacenet's output is 'GDC', got {output!r}")
    if channels is not None:
        raise ValueError("mobilefacenet does not take channels: its widths are fixed "
                         "(layers= sets the units per stage)")
    if stem is not None:
        raise ValueError("mobilefacenet does not take stem: its first unit is its own "
                         "(3x3, stride 2); stem= is FaceResNet's")
    return MobileFaceNet(MOBILEFACENET_LAYERS if layers is None else layers,
                         emb_size=emb_size, act_type=act_type, image_size=image_size,
                         in_channels=in_channels, **kwargs)
