"""Checkpoints: the full training state in one folder, written atomically.

Layout of ``<output>/checkpoints/last/`` (and ``best/``, a copy taken when the
verification score improves)::

    backbone.params   backbone parameters (gluon save_parameters)
    head.params       head parameters (class centres); a model-parallel head
                      (gluon_face.parallel) writes its gathered centres under
                      fc7_weight, the key of a single-device ArcMarginBlock
    head.states       only with a model-parallel head: its own optimizer state
                      (momentum / moments, update counts) and the Partial FC
                      sampler's generator state
    center.params     center-loss centres (only with --center-loss-weight > 0)
    trainer.states    optimizer state: momentum / Adam moments, the update
                      counter num_update (= the schedule position) and the schedule
    state.json        epoch, step, best_score, model {name, kwargs}, head {name, kwargs},
                      num_classes, image_size, emb_size, rng; head['parallel']
                      = {'sample_rate': r} marks a model-parallel head
    config.yaml       the resolved TrainConfig of the run

A checkpoint is written into a hidden temporary folder beside its destination
and renamed into place; the previous one is renamed away first and deleted
afterwards, so at every instant either the old or the new folder is complete
(:func:`resolve_checkpoint` falls back to the renamed-away copy if a crash hit
between the two renames).

No random state needs saving: data order and flips are functions of
``(seed, epoch)`` (:mod:`.loader`) and MXNet's generator is re-seeded from
``(seed, step)`` before every step.
"""
import json
import os
import shutil

from mxnet.util import use_np

from .._io import make_temp_dir

__all__ = ["save_checkpoint", "load_params", "load_checkpoint_state", "load_model",
           "resolve_checkpoint", "check_compatible", "build_backbone", "copy_checkpoint",
           "CheckpointError", "STATE_VERSION"]

STATE_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the run."""


def build_backbone(name, **kwargs):
    """Backbone ``name`` from the model zoo; ``channels=[...]`` / ``layers=[...]`` override
    the widths / the units per stage of a FaceResNet.

    ``channels`` (stem + one per stage, e.g. ``[16, 16, 32, 64, 128]``) and
    ``layers`` (units per stage, e.g. ``[1, 1, 1, 1]``) build a
    :class:`gluon_face.model_zoo.FaceResNet` from the named depth's spec with
    those changed; other keywords go to ``get_model``.
    """
    from ..model_zoo import get_model

    kwargs = dict(kwargs)
    channels = kwargs.pop("channels", None)
    layers = kwargs.pop("layers", None)
    if channels is None and layers is None:
        return get_model(name, **kwargs)
    from ..model_zoo import BasicBlockV3, FaceResNet, faceresnet_spec, list_models
    from ..model_zoo.faceresnet import DEMO_CHANNELS, DEMO_LAYERS

    specs = {"faceresnet%d" % d: spec for d, spec in faceresnet_spec.items()}
    specs.update({n: (BasicBlockV3, list(units), list(DEMO_CHANNELS))
                  for n, units in DEMO_LAYERS.items()})
    if name not in list_models() or name not in specs:
        raise ValueError(f"channels= and layers= only apply to faceresnet networks, not "
                         f"{name!r}; valid names: {', '.join(list_models())}")
    block, spec_layers, spec_channels = specs[name]
    return FaceResNet(block, [int(n) for n in (spec_layers if layers is None else layers)],
                      [int(c) for c in (spec_channels if channels is None else channels)],
                      **kwargs)


@use_np
def load_params(block, path, ctx):
    """Load ``block.save_parameters`` output into ``block`` on ``ctx`` (numpy mode).

    Gluon's own ``load_parameters`` falls back to a legacy loader (legacy
    ``NDArray`` values, which numpy-mode parameters refuse) when no parameter
    name contains a dot, e.g. a head whose only parameter is ``fc7_weight``;
    this loads by structural name in every case.

    Raises
    ------
    CheckpointError
        If the file is unreadable or its names/shapes do not match ``block``.
    """
    import mxnet as mx

    try:
        loaded = mx.npx.load(path)
    except (OSError, mx.base.MXNetError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot read parameters ({msg})") from None
    params = block._collect_params_with_prefix()
    missing = sorted(set(params) - set(loaded))
    extra = sorted(set(loaded) - set(params))
    if missing or extra:
        raise CheckpointError(f"{path}: parameters do not match the model (missing: "
                              f"{', '.join(missing[:5]) or 'none'}; unexpected: "
                              f"{', '.join(extra[:5]) or 'none'})")
    for name, param in params.items():
        value = loaded[name]
        if param.shape is not None and any(param.shape) and \
                tuple(param.shape) != tuple(value.shape) and 0 not in param.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the model "
                                  f"expects {tuple(param.shape)}")
        param._load_init(value, ctx)


def _write_folder(folder, writers):
    """Write files via ``writers`` {name: fn(path)} into ``folder`` atomically."""
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(parent, "." + os.path.basename(folder) + ".")
    try:
        for name, write in writers.items():
            write(os.path.join(tmp, name))
        old = folder + ".old"
        if os.path.isdir(old):
            shutil.rmtree(old)
        if os.path.isdir(folder):
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(folder, backbone, head, trainer, state, config_yaml, center=None,
                    head_states=False):
    """Write a complete checkpoint into ``folder`` (replacing it atomically).

    Parameters
    ----------
    folder : str
        Destination, e.g. ``<output>/checkpoints/last``.
    backbone, head : mxnet.gluon.Block
    trainer : mxnet.gluon.Trainer or None
        Its ``save_states`` output becomes ``trainer.states``.
    state : dict
        JSON-serialisable metadata (see module doc).
    config_yaml : str
        The resolved configuration as YAML text.
    center : mxnet.gluon.Block, optional
        Center-loss block whose centres are saved as ``center.params``.
    head_states : bool, default False
        ``head`` owns its optimizer (a :class:`gluon_face.parallel.ShardedMarginHead`):
        its ``save_states`` output becomes ``head.states``.
    """
    def dump_json(path):
        with open(path, "w") as f:
            json.dump(dict(state, version=STATE_VERSION), f, indent=2, sort_keys=True)

    def dump_text(path):
        with open(path, "w") as f:
            f.write(config_yaml)

    writers = {"backbone.params": backbone.save_parameters,
               "head.params": head.save_parameters}
    if center is not None:
        writers["center.params"] = center.save_parameters
    if trainer is not None:
        writers["trainer.states"] = trainer.save_states
    if head_states:
        writers["head.states"] = head.save_states
    writers["config.yaml"] = dump_text
    writers["state.json"] = dump_json  # last: its presence marks a complete folder
    _write_folder(folder, writers)


def copy_checkpoint(src, dst):
    """Copy the checkpoint folder ``src`` to ``dst`` atomically (for ``best``)."""
    names = sorted(os.listdir(src))
    names.sort(key=lambda n: n == "state.json")
    _write_folder(dst, {n: (lambda p, n=n: shutil.copyfile(os.path.join(src, n), p))
                        for n in names})


def resolve_checkpoint(path):
    """The checkpoint folder meant by ``path``.

    ``path`` may be a checkpoint folder (holding ``state.json``), an output
    folder (its ``checkpoints/last`` is used) or a ``checkpoints`` folder.

    Raises
    ------
    CheckpointError
        If no complete checkpoint is found there.
    """
    path = os.path.abspath(os.fspath(path))
    candidates = [path, os.path.join(path, "last"), os.path.join(path, "checkpoints", "last")]
    for c in list(candidates):
        candidates.append(c + ".old")  # a crash between the two renames of _write_folder
    for c in candidates:
        if os.path.isfile(os.path.join(c, "state.json")):
            return c
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint folder")
    raise CheckpointError(f"{path}: no complete checkpoint (state.json) in it, in last/ or "
                          "in checkpoints/last/")


def load_checkpoint_state(folder):
    """``state.json`` of the checkpoint ``folder`` (after :func:`resolve_checkpoint`)."""
    folder = resolve_checkpoint(folder)
    path = os.path.join(folder, "state.json")
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint state ({err})") from None
    for key in ("step", "epoch", "model", "head", "num_classes", "emb_size"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint state lacks {key!r}")
    state["folder"] = folder
    return state


def check_compatible(state, model, head, num_classes):
    """Raise :class:`CheckpointError` unless the checkpoint fits this run.

    Parameters
    ----------
    state : dict
        From :func:`load_checkpoint_state`.
    model, head : dict
        ``{'name': ..., 'kwargs': {...}}`` of this run.
    num_classes : int
        Identities of this run's training set.
    """
    where = state.get("folder", "checkpoint")
    problems = []
    if state["model"] != model:
        problems.append(f"network {_describe(state['model'])} vs {_describe(model)}")
    if state["head"]["name"] != head["name"]:
        problems.append(f"loss {state['head']['name']!r} vs {head['name']!r}")
    if bool(state["head"].get("parallel")) != bool(head.get("parallel")):
        kinds = {True: "model-parallel head", False: "single-device head"}
        problems.append(f"{kinds[bool(state['head'].get('parallel'))]} vs "
                        f"{kinds[bool(head.get('parallel'))]}")
    if int(state["num_classes"]) != int(num_classes):
        problems.append(f"{state['num_classes']} classes vs {num_classes}")
    if problems:
        raise CheckpointError(f"cannot resume from {where}: it was trained with a different "
                              f"setup (checkpoint vs this run: {'; '.join(problems)})")


def _describe(model):
    kw = ", ".join(f"{k}={v}" for k, v in sorted(model.get("kwargs", {}).items()))
    return f"{model['name']}({kw})"


@use_np
def load_model(path, ctx=None):
    """Rebuild the backbone and head of a checkpoint and load their parameters.

    Parameters
    ----------
    path : str
        Checkpoint folder, or an output folder (uses ``checkpoints/last``).
    ctx : mxnet.Context or list of Context, optional
        Where to load the parameters; default ``mx.cpu()``.

    Returns
    -------
    backbone : mxnet.gluon.HybridBlock
        ``(B, 3, H, W) -> (B, emb_size)``; ``state['image_size']`` is its input size.
    head : mxnet.gluon.HybridBlock
        ``(emb, labels) -> logits (B, num_classes)``.  For a model-parallel
        checkpoint, the single-device :class:`~gluon_face.heads.ArcMarginBlock`
        with the same margins (for ``softmax``/``normface``: the cosine-softmax
        preset that the parallel head trains), holding all the class centres.
    state : dict
        The checkpoint's ``state.json`` (plus ``folder``).
    """
    import mxnet as mx

    from ..heads import ArcMarginBlock, get_head

    state = load_checkpoint_state(path)
    folder = state["folder"]
    ctx = mx.cpu() if ctx is None else ctx
    head_spec = state["head"]
    build_head = ArcMarginBlock.from_preset if head_spec.get("parallel") else get_head
    try:
        backbone = build_backbone(state["model"]["name"], **state["model"].get("kwargs", {}))
        head = build_head(head_spec["name"], int(state["emb_size"]), int(state["num_classes"]),
                          **head_spec.get("kwargs", {}))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{folder}: cannot rebuild its model ({err})") from None
    for block, name in ((backbone, "backbone.params"), (head, "head.params")):
        load_params(block, os.path.join(folder, name), ctx)
    return backbone, head, state
