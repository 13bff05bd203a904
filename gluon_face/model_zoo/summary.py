"""Parameter and multiply-accumulate (MAC) counts of a network, without running it.

:func:`summarize` walks the block tree in forward order and propagates the
per-example input shape through every layer by arithmetic, so it needs neither
initialised parameters nor a forward pass: even FaceResNet-100 is counted
at once, and a classification head of millions of identities is counted
from its declared parameter shapes without allocating it (:func:`count_declared`).

Conventions (those of insightface's published figures):

* **params** are the parameter arrays a checkpoint holds except batch-norm
  running statistics, which are reported apart as **states**; a fixed
  batch-norm scale (``scale=False``) still counts, as it is stored.
* **MACs** are per example: ``H_out * W_out * C_out * (C_in / groups) * k_h * k_w``
  for a convolution and ``in * out`` for a dense layer.  Biases, activations,
  the residual additions and (unless ``bn_macs=True``, then one MAC per
  element) batch norm are not counted.

Layers known to the walker: Conv2D, Dense, BatchNorm, PReLU, Activation,
LeakyReLU, Dropout, Flatten, HybridSequential/Sequential, and the model zoo's
BasicBlockV3, FaceResNet, DepthwiseResidual and MobileFaceNet (grouped and
depthwise convolutions included).  :func:`register_walker` adds others.
"""
import math
from collections import OrderedDict, namedtuple

from mxnet.gluon import nn

from ..graph import mxnet_compat
from .faceresnet import BasicBlockV3, FaceResNet
from .mobilefacenet import DepthwiseResidual, MobileFaceNet

#: One layer of a walk: ``path`` is the parameter-file key prefix
#: (``features.3.0.body.1``), ``kind`` the class name, shapes exclude the batch
#: axis, ``params`` / ``states`` / ``macs`` as in the module docstring.
LayerStats = namedtuple("LayerStats", "path kind in_shape out_shape params states macs")

#: Totals of a group of layers (a row of :meth:`ModelSummary.groups`).
GroupStats = namedtuple("GroupStats", "name out_shape params states macs")

_WALKERS = OrderedDict()


def register_walker(cls):
    """Decorator: ``fn(block, in_shape, path, ctx) -> out_shape`` walks blocks of class ``cls``.

    The function appends :class:`LayerStats` rows with ``ctx.add(...)`` and
    walks children with ``ctx.walk(child, shape, path)``.  The most derived
    registered class wins.
    """
    def wrap(fn):
        _WALKERS[cls] = fn
        return fn
    return wrap


class _Walk:
    def __init__(self, bn_macs):
        self.bn_macs = bn_macs
        self.rows = []

    def walk(self, block, shape, path):
        for cls in type(block).__mro__:
            if cls in _WALKERS:
                return _WALKERS[cls](block, tuple(shape), path, self)
        raise TypeError(f"cannot count {type(block).__name__} at {path or '<root>'!r}: no "
                        f"walker registered (gluon_face.model_zoo.summary.register_walker)")

    def add(self, block, path, in_shape, out_shape, param_shapes, state_shapes=(), macs=0):
        """Record a leaf after checking the shapes it declares against the walk's."""
        declared = {name: p.shape for name, p in mxnet_compat.declared_params(block).items()}
        expected = dict(param_shapes)
        expected.update(state_shapes)
        if set(declared) != set(expected):
            raise TypeError(f"{path}: {type(block).__name__} declares parameters "
                            f"{sorted(declared)}, the walker expects {sorted(expected)}")
        for name, shape in expected.items():
            have = declared[name]
            if len(have) != len(shape) or any(0 < d != s for d, s in zip(have, shape)):
                raise ValueError(f"{path}: {name} is declared with shape {have} but an input "
                                 f"of shape {in_shape} needs {shape}: does the input size "
                                 f"match the model's?")
        self.rows.append(LayerStats(
            path, type(block).__name__, tuple(in_shape), tuple(out_shape),
            sum(math.prod(s) for _, s in param_shapes),
            sum(math.prod(s) for _, s in state_shapes), int(macs)))
        return tuple(out_shape)


def _join(path, name):
    return f"{path}.{name}" if path else str(name)


@register_walker(nn.Sequential)
@register_walker(nn.HybridSequential)
def _walk_sequential(block, shape, path, ctx):
    for name, child in mxnet_compat.block_children(block).items():
        shape = ctx.walk(child, shape, _join(path, name))
    return shape


@register_walker(nn.Conv2D)
def _walk_conv2d(block, shape, path, ctx):
    kw = mxnet_compat.operator_kwargs(block)
    if kw["layout"] != "NCHW" or len(shape) != 3:
        raise ValueError(f"{path}: only NCHW convolutions on (C, H, W) inputs are counted, "
                         f"got layout {kw['layout']} and input {shape}")
    c_in, h, w = shape
    groups, c_out = kw["num_group"], kw["num_filter"]
    if c_in % groups:
        raise ValueError(f"{path}: {c_in} input channels do not split into {groups} groups")
    (kh, kw_), (sh, sw), (ph, pw), (dh, dw) = kw["kernel"], kw["stride"], kw["pad"], kw["dilate"]
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw_ - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"{path}: input {shape} is too small for the convolution")
    params = [("weight", (c_out, c_in // groups, kh, kw_))]
    if not kw["no_bias"]:
        params.append(("bias", (c_out,)))
    macs = h_out * w_out * c_out * (c_in // groups) * kh * kw_
    return ctx.add(block, path, shape, (c_out, h_out, w_out), params, macs=macs)


@register_walker(nn.Dense)
def _walk_dense(block, shape, path, ctx):
    units, flatten = mxnet_compat.dense_config(block)
    if flatten:
        lead, in_units = (), math.prod(shape)
    else:
        lead, in_units = shape[:-1], shape[-1]
    params = [("weight", (units, in_units))]
    if block.bias is not None:
        params.append(("bias", (units,)))
    return ctx.add(block, path, shape, lead + (units,), params,
                   macs=math.prod(lead) * in_units * units)


@register_walker(nn.BatchNorm)
def _walk_batch_norm(block, shape, path, ctx):
    # The walk's shapes have no batch axis, the operator's axis counts it.
    channels = shape[mxnet_compat.operator_kwargs(block)["axis"] - 1]
    vec = (channels,)
    return ctx.add(block, path, shape, shape, [("gamma", vec), ("beta", vec)],
                   [("running_mean", vec), ("running_var", vec)],
                   macs=math.prod(shape) if ctx.bn_macs else 0)


@register_walker(nn.PReLU)
def _walk_prelu(block, shape, path, ctx):
    slopes = block.alpha.shape[0]
    if slopes not in (1, shape[0]):
        raise ValueError(f"{path}: PReLU with {slopes} slopes on {shape[0]} channels")
    return ctx.add(block, path, shape, shape, [("alpha", (slopes,))])


@register_walker(nn.Activation)
@register_walker(nn.LeakyReLU)
@register_walker(nn.Dropout)
def _walk_elementwise(block, shape, path, ctx):
    return ctx.add(block, path, shape, shape, [])


@register_walker(nn.Flatten)
def _walk_flatten(block, shape, path, ctx):
    return ctx.add(block, path, shape, (math.prod(shape),), [])


@register_walker(BasicBlockV3)
def _walk_basic_block(block, shape, path, ctx):
    out = ctx.walk(block.body, shape, _join(path, "body"))
    shortcut = shape if block.downsample is None else \
        ctx.walk(block.downsample, shape, _join(path, "downsample"))
    if out != shortcut:
        raise ValueError(f"{path}: body gives {out} but the shortcut {shortcut}")
    return out


@register_walker(DepthwiseResidual)
def _walk_depthwise_residual(block, shape, path, ctx):
    out = ctx.walk(block.body, shape, _join(path, "body"))
    if out != shape:
        raise ValueError(f"{path}: body gives {out} but the shortcut {shape}")
    return out


@register_walker(MobileFaceNet)
@register_walker(FaceResNet)
def _walk_faceresnet(block, shape, path, ctx):
    shape = ctx.walk(block.features, shape, _join(path, "features"))
    return ctx.walk(block.output, shape, _join(path, "output"))


class ModelSummary:
    """Per-layer counts of a network for one input shape (see :func:`summarize`).

    Attributes
    ----------
    layers : list of LayerStats
        Leaves in forward order.
    input_shape, output_shape : tuple of int
        Per example, without the batch axis.
    """

    def __init__(self, layers, input_shape, output_shape, group_of):
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self._group_of = group_of

    @property
    def params(self):
        """Parameters, batch-norm running statistics excluded."""
        return sum(r.params for r in self.layers)

    @property
    def states(self):
        """Batch-norm running statistics (means and variances)."""
        return sum(r.states for r in self.layers)

    @property
    def macs(self):
        """Multiply-accumulates per example."""
        return sum(r.macs for r in self.layers)

    def groups(self):
        """Totals per group (for FaceResNet: stem, stage1..N, output), in forward order.

        Returns
        -------
        list of GroupStats
            ``out_shape`` is the output shape of the group's last layer.
        """
        totals = OrderedDict()
        for row in self.layers:
            name = self._group_of(row.path)
            params, states, macs, _ = totals.get(name, (0, 0, 0, None))
            totals[name] = (params + row.params, states + row.states, macs + row.macs,
                            row.out_shape)
        return [GroupStats(name, shape, p, s, m) for name, (p, s, m, shape) in totals.items()]


def _group_function(net):
    if isinstance(net, FaceResNet):
        stem = net.num_stem_layers

        def group_of(path):
            parts = path.split(".")
            if parts[0] == "features":
                index = int(parts[1])
                return "stem" if index < stem else "stage%d" % (index - stem + 1)
            return parts[0]
        return group_of
    if isinstance(net, MobileFaceNet):  # one group per child of features, then the GDC output
        return lambda path: ".".join(path.split(".")[:2]) if path.startswith("features.") \
            else path.split(".")[0]
    return lambda path: path.split(".")[0]


def summarize(net, input_shape=None, bn_macs=False):
    """Count the parameters and MACs of ``net`` layer by layer, without running it.

    Parameters
    ----------
    net : mxnet.gluon.Block
        Any block built from the layers the walker knows (see the module
        docstring); initialised or not.
    input_shape : tuple of int, optional
        Shape of one example without the batch axis, e.g. ``(3, 112, 112)``.
        Default for a :class:`FaceResNet` or :class:`MobileFaceNet` (any block with
        ``in_channels`` and ``image_size`` attributes): ``(in_channels, *image_size)``.
    bn_macs : bool, default False
        Count one MAC per batch-norm output element (inference, scale and
        shift folded).

    Returns
    -------
    ModelSummary
        ``.params``, ``.states``, ``.macs`` totals, ``.layers`` and ``.groups()``.

    Raises
    ------
    TypeError
        A block type the walker does not know.
    ValueError
        ``input_shape`` does not fit the declared parameter shapes (e.g. an
        image size other than the one the model was built for).
    """
    if input_shape is None:
        if not (hasattr(net, "in_channels") and hasattr(net, "image_size")):
            raise ValueError(f"input_shape is needed for a {type(net).__name__}")
        input_shape = (net.in_channels,) + net.image_size
    walk = _Walk(bn_macs)
    out = walk.walk(net, tuple(int(d) for d in input_shape), "")
    return ModelSummary(walk.rows, input_shape, out, _group_function(net))


def count_declared(block):
    """Total size of the parameters ``block`` declares, read from shapes, never allocated.

    Lets a classification head with millions of identities be counted without
    initialising it.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        Some parameter shape is still unknown (deferred until a forward pass).
    """
    total = 0
    for name, p in block.collect_params().items():
        if p.shape is None or any(d <= 0 for d in p.shape):
            raise ValueError(f"parameter {name} has no complete shape yet ({p.shape})")
        total += math.prod(p.shape)
    return total
