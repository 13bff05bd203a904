"""Face-ResNet: the insightface IR-ResNet backbones (r18/r34/r50/r100) as Gluon HybridBlocks.

The chapter's network (d2l, :label:`sec_facerecognition_arcface`), made hybridizable,
in numpy mode, and checked against insightface's published sizes: FaceResNet-50 at
112x112 with a 512-d embedding has 43.59 M parameters and costs 6.31 GMAC per image;
FaceResNet-100 has 65.16 M and 12.09 GMAC (ArcFace, Deng et al. 2019,
https://arxiv.org/abs/1801.07698, and the insightface model zoo).

Layout (these child names are the keys of saved parameter files)::

    FaceResNet
      features   HybridSequential: stem (Conv3x3 s1, or Conv7x7 s2 with
                 ``stem='7x7'``; BN, act) then one HybridSequential per
                 stage, each a list of BasicBlockV3
                   BasicBlockV3.body        BN, Conv3x3, BN, act, Conv3x3(stride), BN
                   BasicBlockV3.downsample  Conv1x1(stride), BN (first unit of a stage)
      output     the insightface "E" output: BN, [Dropout(0.4)], Dense(emb), BN

Every convolution declares its input channels and the Dense layer its input size,
so all parameter shapes are known before initialisation (no deferred shapes):
counting parameters needs neither memory nor a forward pass.
"""
import numbers

import mxnet as mx
from mxnet.gluon import nn
from mxnet.util import use_np

from .registry import MODELS

#: Batch-norm settings of insightface (epsilon 2e-5, momentum 0.9).
BN_EPS = 2e-5
BN_MOMENTUM = 0.9
#: Dropout rate of the "E" output when ``use_dropout`` is on (insightface's 0.4).
DROPOUT_RATE = 0.4
ACT_TYPES = ("prelu", "relu")
OUTPUT_TYPES = ("E",)
#: Stem convolutions: insightface's ``net_input`` 1 ('3x3', stride 1, padding 1) and
#: ``net_input`` 0 ('7x7', stride 2, padding 3), as (kernel, stride, padding).
STEMS = {"3x3": (3, 1, 1), "7x7": (7, 2, 3)}


def _batch_norm(channels, scale=True):
    return nn.BatchNorm(epsilon=BN_EPS, momentum=BN_MOMENTUM, scale=scale, in_channels=channels)


def _conv3x3(channels, stride, in_channels):
    return nn.Conv2D(channels, kernel_size=3, strides=stride, padding=1, use_bias=False,
                     in_channels=in_channels)


def conv_output_size(size, kernel, stride, padding):
    """Output side of MXNet's convolution (no dilation): ``(size + 2 p - k) // s + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def feature_side(size, num_stages, stem="3x3"):
    """Side of FaceResNet's last map for an input side ``size``.

    The stem, then one stride-2 stage each (its 3x3 convolution with padding 1
    and its 1x1 shortcut both give ``ceil(side / 2)``), with MXNet's arithmetic:
    ``size / 2 ** num_stages`` for the '3x3' stem on a multiple of
    ``2 ** num_stages``, ``ceil(size / 2 ** (num_stages + 1))`` for '7x7'
    (insightface's 112 -> 56 -> 28 -> 14 -> 7 -> 4).
    """
    side = conv_output_size(size, *STEMS[stem])
    for _ in range(num_stages):
        side = conv_output_size(side, 3, 2, 1)
    return side


def _activation(act_type, channels):
    # One PReLU slope per channel, as insightface (the book's nn.PReLU() has one in all).
    if act_type == "prelu":
        return nn.PReLU(in_channels=channels)
    return nn.Activation(act_type)


def _check_act_type(act_type):
    if act_type not in ACT_TYPES:
        raise ValueError(f"act_type must be one of {', '.join(ACT_TYPES)}, got {act_type!r}")
    return act_type


def _check_positive_int(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < (0 if allow_zero else 1):
        what = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {what} integer, got {value!r}")
    return int(value)


def _check_image_size(image_size, factor):
    if isinstance(image_size, numbers.Integral):
        size = (image_size, image_size)
    else:
        try:
            size = tuple(image_size)
        except TypeError:
            size = ()
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral)
                             or s <= 0 or s % factor for s in size):
        raise ValueError(f"image_size must be an int or (height, width), each a positive "
                         f"multiple of {factor}, got {image_size!r}")
    return tuple(int(s) for s in size)


@use_np
class BasicBlockV3(nn.HybridBlock):
    r"""The "improved residual" unit of ArcFace (insightface's IR unit).

    .. math:: y = \mathrm{BN}(\mathrm{Conv}_{s}(\mathrm{act}(\mathrm{BN}(
              \mathrm{Conv}(\mathrm{BN}(x)))))) + \mathrm{shortcut}(x)

    with no activation after the addition.  The shortcut is the identity, or,
    when ``downsample``, a strided 1x1 convolution followed by batch norm.

    Parameters
    ----------
    channels : int
        Output channels :math:`C_{out}`.
    stride : int
        Stride of the second 3x3 convolution (and of the shortcut): 1 or 2.
    downsample : bool, default False
        Use the convolutional shortcut (needed when the stride or the number of
        channels changes; insightface uses it for the first unit of every stage).
    in_channels : int, default 0
        Input channels :math:`C_{in}`; 0 defers them to the first forward pass.
    act_type : {'prelu', 'relu'}, default 'prelu'
        The activation inside the body; PReLU has one slope per channel.
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, C_in, H, W).  Output: (B, C_out, ceil(H/s), ceil(W/s)).
    Children: ``body`` and, if ``downsample``, ``downsample`` (else ``None``).
    """

    def __init__(self, channels, stride, downsample=False, in_channels=0, act_type="prelu",
                 **kwargs):
        super().__init__(**kwargs)
        channels = _check_positive_int("channels", channels)
        stride = _check_positive_int("stride", stride)
        in_channels = _check_positive_int("in_channels", in_channels, allow_zero=True)
        self.act_type = _check_act_type(act_type)
        if not downsample and in_channels and in_channels != channels:
            raise ValueError(f"an identity shortcut needs in_channels == channels, got "
                             f"{in_channels} and {channels}: use downsample=True")
        if not downsample and stride != 1:
            raise ValueError(f"an identity shortcut needs stride 1, got {stride}: "
                             f"use downsample=True")
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(_batch_norm(in_channels),
                          _conv3x3(channels, 1, in_channels),
                          _batch_norm(channels),
                          _activation(act_type, channels),
                          _conv3x3(channels, stride, channels),
                          _batch_norm(channels))
            if downsample:
                self.downsample = nn.HybridSequential(prefix="")
                self.downsample.add(nn.Conv2D(channels, kernel_size=1, strides=stride,
                                              use_bias=False, in_channels=in_channels),
                                    _batch_norm(channels))
            else:
                self.downsample = None

    def hybrid_forward(self, F, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.body(x) + shortcut


_BLOCKS = {"basic_block": BasicBlockV3}


@use_np
class FaceResNet(nn.HybridBlock):
    r"""Face-ResNet backbone: aligned face crops to (unnormalised) embeddings.

    A 3x3 stride-1 stem keeps the full resolution of the small face crop
    (insightface's ``net_input`` 1; ``stem='7x7'`` is its ``net_input`` 0, a 7x7
    stride-2 convolution that halves it once more); each stage halves it; the
    "E" output flattens the last maps (position on an aligned face carries
    identity, so no global pooling) into the embedding:
    BN, Dropout(0.4) if ``use_dropout``, Dense(``emb_size``), BN (with its
    scale fixed to 1, as insightface).

    Parameters
    ----------
    block : type or str
        The residual unit class, :class:`BasicBlockV3` (the string
        ``'basic_block'`` of the book's spec table also names it).
    layers : sequence of int
        Units per stage, e.g. ``[3, 4, 14, 3]`` for FaceResNet-50.
    channels : sequence of int
        Stem channels followed by the channels of each stage (one more entry
        than ``layers``), e.g. ``[64, 64, 128, 256, 512]``.
    emb_size : int, default 512
        Embedding dimension :math:`E`.
    use_dropout : bool, default False
        Dropout(0.4) before the fully connected layer.
    act_type : {'prelu', 'relu'}, default 'prelu'
        Activation of the stem and of every unit.
    output : {'E'}, default 'E'
        Output type (insightface's names; only "E" is implemented).
    image_size : int or (int, int), default 112
        Input height and width, each a multiple of ``2 ** len(layers)`` (16 for
        four stages): it fixes the Dense layer's input size
        ``channels[-1] * h * w``, the last map being ``H / 16`` by ``W / 16``
        with the '3x3' stem and ``ceil(H / 32)`` by ``ceil(W / 32)`` with the
        '7x7' one (4x4 at 112, as insightface).
    in_channels : int, default 3
        Input image channels.
    stem : {'3x3', '7x7'}, default '3x3'
        The first convolution: 3x3 stride 1 padding 1 (insightface's
        ``net_input`` 1), or 7x7 stride 2 padding 3 (``net_input`` 0).  Both
        are ``features.0``; the parameter names do not change.
    **kwargs
        ``prefix`` / ``params`` of :class:`mxnet.gluon.HybridBlock`.

    Inputs: ``x`` (B, in_channels, H, W) float32, RGB normalised as
    insightface, ``(pixel - 127.5) / 128``.  Output: (B, emb_size), not
    L2-normalised.  Construction does not initialise; all parameter shapes are
    declared, so ``initialize`` allocates them at once.
    """

    def __init__(self, block, layers, channels, emb_size=512, use_dropout=False,
                 act_type="prelu", output="E", image_size=112, in_channels=3, stem="3x3",
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(block, str):
            if block not in _BLOCKS:
                raise ValueError(f"unknown block {block!r}; valid: {', '.join(_BLOCKS)}")
            block = _BLOCKS[block]
        layers = [_check_positive_int("layers[%d]" % i, n) for i, n in enumerate(layers)]
        channels = [_check_positive_int("channels[%d]" % i, c) for i, c in enumerate(channels)]
        if not layers or len(channels) != len(layers) + 1:
            raise ValueError(f"channels needs one entry more than layers (the stem's), got "
                             f"{len(channels)} channels for {len(layers)} stages")
        self.emb_size = _check_positive_int("emb_size", emb_size)
        if not isinstance(use_dropout, bool):
            raise ValueError(f"use_dropout must be True or False, got {use_dropout!r}")
        self.act_type = _check_act_type(act_type)
        if output not in OUTPUT_TYPES:
            raise ValueError(f"output must be one of {', '.join(OUTPUT_TYPES)}, got {output!r}")
        if not isinstance(stem, str) or stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        self.in_channels = _check_positive_int("in_channels", in_channels)
        # Every size is computable with the ceil arithmetic; multiples of 2 ** stages
        # keep the 3x3 stem's maps exact halves and include insightface's 112.
        self.image_size = _check_image_size(image_size, 2 ** len(layers))
        self.block, self.layers, self.channels = block, layers, channels
        self.use_dropout, self.output_type, self.stem = use_dropout, output, stem
        self.feature_shape = (channels[-1],) + tuple(
            feature_side(s, len(layers), stem) for s in self.image_size)
        kernel, stride, padding = STEMS[stem]
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(channels[0], kernel_size=kernel, strides=stride,
                                        padding=padding, use_bias=False,
                                        in_channels=self.in_channels),
                              _batch_norm(channels[0]),
                              _activation(act_type, channels[0]))
            for i, num_units in enumerate(layers):
                self.features.add(self._make_stage(block, i + 1, num_units, channels[i],
                                                   channels[i + 1]))
            self.output = nn.HybridSequential(prefix="")
            self.output.add(_batch_norm(channels[-1]))
            if use_dropout:
                self.output.add(nn.Dropout(DROPOUT_RATE))
            c, h, w = self.feature_shape
            self.output.add(nn.Dense(self.emb_size, in_units=c * h * w),
                            _batch_norm(self.emb_size, scale=False))

    def _make_stage(self, block, index, num_units, in_channels, channels):
        stage = nn.HybridSequential(prefix="stage%d_" % index)
        with stage.name_scope():
            stage.add(block(channels, 2, True, in_channels=in_channels,
                            act_type=self.act_type, prefix=""))
            for _ in range(num_units - 1):
                stage.add(block(channels, 1, False, in_channels=channels,
                                act_type=self.act_type, prefix=""))
        return stage

    @property
    def num_stem_layers(self):
        """Number of children of ``features`` before the first stage."""
        return len(self.features) - len(self.layers)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


#: The book's table: depth -> (unit, units per stage, [stem, stage channels]),
#: with insightface's IR-ResNet unit counts.
faceresnet_spec = {
    18: (BasicBlockV3, [2, 2, 2, 2], [64, 64, 128, 256, 512]),
    34: (BasicBlockV3, [3, 4, 6, 3], [64, 64, 128, 256, 512]),
    50: (BasicBlockV3, [3, 4, 14, 3], [64, 64, 128, 256, 512]),
    100: (BasicBlockV3, [3, 13, 30, 3], [64, 64, 128, 256, 512]),
}


def get_faceresnet(num_layers, num_classes=None, emb_size=None, use_dropout=False, ctx=None,
                   **kwargs):
    """Build and initialise a FaceResNet of ``num_layers`` layers (the book's factory).

    The book's second argument, ``num_classes``, is in fact the embedding size:
    ``get_faceresnet(50, 512)`` builds FaceResNet-50 with 512-d embeddings.  New
    code should say ``emb_size=512``; both spellings work.

    Parameters
    ----------
    num_layers : int
        18, 34, 50 or 100 (keys of :data:`faceresnet_spec`).
    num_classes : int, optional
        The book's name for ``emb_size`` (kept for its positional call).
    emb_size : int, optional
        Embedding dimension; default 512.  Giving both names with different
        values is an error.
    use_dropout : bool, default False
    ctx : Context or list of Context, optional
        Where to initialise the parameters; default ``mx.cpu()``.
    **kwargs
        More :class:`FaceResNet` keywords: ``act_type``, ``output``,
        ``image_size``, ``in_channels``, ``stem``, ``prefix``.

    Returns
    -------
    FaceResNet
        Initialised as the book did: ``Xavier(rnd_type='gaussian',
        factor_type='out', magnitude=2)`` for convolution and dense weights
        (batch norm, PReLU and biases keep their own initialisers).
    """
    if num_layers not in faceresnet_spec:
        raise ValueError(f"invalid number of layers {num_layers!r}; options are "
                         f"{', '.join(str(k) for k in sorted(faceresnet_spec))}")
    if num_classes is not None and emb_size is not None and num_classes != emb_size:
        raise ValueError(f"num_classes ({num_classes}) is the book's name for emb_size "
                         f"({emb_size}): give one of them")
    size = emb_size if emb_size is not None else num_classes
    net = FaceResNet(*faceresnet_spec[num_layers], emb_size=512 if size is None else size,
                     use_dropout=use_dropout, **kwargs)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2),
                   ctx=ctx if ctx is not None else mx.cpu())
    return net


def _spec_factory(name, units, widths, doc):
    """A registry factory for a FaceResNet of ``units`` per stage and ``widths``;
    ``layers=`` / ``channels=`` replace them (e.g. a narrower network for tests)."""
    def build(layers=None, channels=None, **kwargs):
        return FaceResNet(BasicBlockV3, [int(n) for n in (units if layers is None else layers)],
                          [int(c) for c in (widths if channels is None else channels)],
                          **kwargs)

    build.__name__ = name.replace("-", "_")
    build.__doc__ = doc + (" Uninitialised; keywords as :class:`FaceResNet` (emb_size, "
                           "use_dropout, act_type, output, image_size, in_channels, stem), "
                           "and ``layers=`` / ``channels=`` to replace the units per stage / "
                           "the widths (stem, stage 1..4).")
    MODELS.register(name)(build)
    return build


for _depth in sorted(faceresnet_spec):
    _spec_factory("faceresnet%d" % _depth, faceresnet_spec[_depth][1],
                  faceresnet_spec[_depth][2], f"FaceResNet-{_depth} (insightface r{_depth}).")

#: Widths (stem, stage 1..4) of the ``-demo`` networks: a quarter of the usual ones.
DEMO_CHANNELS = (16, 16, 32, 64, 128)

#: Units per stage of the ``-demo`` networks (their widths are :data:`DEMO_CHANNELS`).
DEMO_LAYERS = {"faceresnet18-demo": (2, 2, 2, 2), "faceresnet10-demo": (1, 1, 1, 1)}

faceresnet18_demo = _spec_factory(
    "faceresnet18-demo", DEMO_LAYERS["faceresnet18-demo"], DEMO_CHANNELS,
    "FaceResNet-18 at a quarter of the width (channels 16-16-32-64-128); 0.77 M parameters "
    "at 32x32.")

faceresnet10_demo = _spec_factory(
    "faceresnet10-demo", DEMO_LAYERS["faceresnet10-demo"], DEMO_CHANNELS,
    "One residual unit per stage at a quarter of the width (channels 16-16-32-64-128): the "
    "default training job's backbone, 1 + 4 x 2 convolutions and the embedding layer, "
    "0.45 M parameters at 32x32; on a CPU such small layers are bound by the number of "
    "operators rather than by arithmetic, so it is about twice as fast per image as "
    "faceresnet18-demo.")
