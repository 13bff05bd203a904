"""Checkpoints: the full training state in one folder, written atomically.

Layout of ``<output>/checkpoints/last/`` (and ``best/``, a copy taken when the
verification score improves)::

    backbone.params   backbone parameters (gluon save_parameters)
    head.params       head parameters (class centres); a model-parallel head
                      (gluon_face.parallel) writes its gathered centres under
                      fc7_weight, the key of a single-device ArcMarginBlock
    head.states       only with a model-parallel head: its own optimizer state
                      (momentum / moments, update counts) and the Partial FC
                      sampler's generator state (an MXNet array file)
    center.params     center-loss centres (only with --center-loss-weight > 0)
    optimizer.params  the optimizer's state arrays (momentum / Adam moments),
                      one entry per parameter index and state leaf
    optimizer.json    optimizer kind, the update counter num_update (= the
                      schedule position), per-device update counts and the
                      layout of each parameter's state (which arrays, nested how)
    state.json        epoch, step, best_score, model {name, kwargs}, head {name, kwargs},
                      num_classes, image_size, emb_size, rng; head['parallel']
                      = {'sample_rate': r} marks a model-parallel head
    config.yaml       the resolved TrainConfig of the run

Nothing in a checkpoint is a pickle: ``.params`` and ``.states`` are MXNet array
files and the rest is JSON or YAML text, so loading one cannot run code.  Folders
written before this layout hold ``trainer.states``, a pickle of MXNet's
``Trainer.save_states``; they are refused, naming :func:`upgrade_legacy_states`
to convert one whose origin is trusted.

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

from .._io import TMP_SUFFIX, make_temp_dir
from .._mxnet import error_message
from ..graph import mxnet_compat as compat

__all__ = ["save_checkpoint", "load_params", "load_checkpoint_state", "load_model",
           "resolve_checkpoint", "check_compatible", "build_backbone", "copy_checkpoint",
           "save_optimizer_states", "load_optimizer_states", "upgrade_legacy_states",
           "require_files", "CheckpointError", "STATE_VERSION"]

OPTIMIZER_PARAMS = "optimizer.params"
OPTIMIZER_JSON = "optimizer.json"
LEGACY_STATES = "trainer.states"
_OPTIMIZER_FORMAT = "gluon_face optimizer states 1"

STATE_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the run."""


def build_backbone(name, **kwargs):
    """Backbone ``name`` from the model zoo: :func:`gluon_face.model_zoo.get_model`, the one
    model factory (``channels=[...]`` / ``layers=[...]`` included)."""
    from ..model_zoo import get_model

    return get_model(name, **kwargs)


def _updaters(trainer):
    if compat.updates_on_kvstore(trainer):
        raise CheckpointError("the optimizer state lives on the kvstore servers "
                              "(update_on_kvstore, e.g. kvstore dist_async) and cannot be "
                              "checkpointed")
    return compat.trainer_updaters(trainer)


def _state_layout(state, key, arrays):
    """JSON layout of one parameter's optimizer state; its arrays go into ``arrays``."""
    import mxnet as mx

    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return {"tuple" if isinstance(state, tuple) else "list":
                [_state_layout(s, f"{key}.{i}", arrays) for i, s in enumerate(state)]}
    if isinstance(state, mx.nd.NDArray):
        numpy_kind = isinstance(state, mx.np.ndarray)
        arrays[key] = state if numpy_kind else state.as_np_ndarray()
        return {"array": key, "numpy": numpy_kind}
    if isinstance(state, (bool, int, float)):
        return {"value": state}
    raise CheckpointError(f"cannot save an optimizer state of type {type(state).__name__}")


def _state_from_layout(layout, arrays, where):

    if layout is None:
        return None
    if not isinstance(layout, dict) or len(layout) not in (1, 2):
        raise CheckpointError(f"{where}: malformed state layout {layout!r}")
    if "tuple" in layout or "list" in layout:
        items = [_state_from_layout(x, arrays, where)
                 for x in layout.get("tuple", layout.get("list"))]
        return tuple(items) if "tuple" in layout else items
    if "array" in layout:
        if layout["array"] not in arrays:
            raise CheckpointError(f"{where}: state array {layout['array']!r} is missing")
        value = arrays[layout["array"]].copy()
        return value if layout.get("numpy") else value.as_nd_ndarray()
    if "value" in layout:
        return layout["value"]
    raise CheckpointError(f"{where}: malformed state layout {layout!r}")


def save_optimizer_states(trainer, folder):
    """Write ``trainer``'s optimizer state as ``optimizer.params`` + ``optimizer.json``.

    The arrays go through MXNet's array file format and everything else is JSON,
    so reading them back runs no code (unlike ``Trainer.save_states``, a pickle).
    """
    import mxnet as mx

    updater = _updaters(trainer)[0]
    optimizer = trainer.optimizer
    arrays, layout = {}, {}
    for index in sorted(updater.states, key=str):
        layout[str(index)] = _state_layout(updater.states[index], f"state/{index}", arrays)
    meta = {"format": _OPTIMIZER_FORMAT, "optimizer": type(optimizer).__name__.lower(),
            "num_update": int(optimizer.num_update),
            "begin_num_update": int(optimizer.begin_num_update),
            "index_update_counts": {str(dev): {str(i): int(n) for i, n in counts.items()}
                                    for dev, counts in
                                    compat.update_counts(optimizer).items()},
            "index_is_int": all(isinstance(i, int) for i in updater.states),
            "states": layout}
    with mx.util.np_array(True), mx.util.np_shape(True):
        mx.npx.save(os.path.join(folder, OPTIMIZER_PARAMS), arrays)
    with open(os.path.join(folder, OPTIMIZER_JSON), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def load_optimizer_states(trainer, folder):
    """Restore what :func:`save_optimizer_states` wrote into ``trainer`` (same parameters).

    The optimizer's kind must match; its hyper-parameters are this run's.  Each
    device's updater gets its own copy of the states, moved to the device at its
    first update.

    Raises
    ------
    CheckpointError
        Files missing, unreadable or of another optimizer or parameter count.
    """
    import mxnet as mx

    json_path = os.path.join(folder, OPTIMIZER_JSON)
    params_path = os.path.join(folder, OPTIMIZER_PARAMS)
    require_files(folder, [OPTIMIZER_JSON, OPTIMIZER_PARAMS])
    try:
        with open(json_path) as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("format") != _OPTIMIZER_FORMAT:
            raise ValueError(f"not a {_OPTIMIZER_FORMAT!r} file")
        layout = meta["states"]
        counts = meta["index_update_counts"]
        num_update = int(meta["num_update"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{json_path}: unreadable optimizer state ({error_message(err)})"
                              ) from None
    try:
        with mx.util.np_array(True), mx.util.np_shape(True):
            arrays = mx.npx.load(params_path)
    except (OSError, mx.base.MXNetError) as err:
        raise CheckpointError(f"{params_path}: unreadable optimizer state "
                              f"({error_message(err)})") from None
    optimizer = trainer.optimizer
    kind = type(optimizer).__name__.lower()
    if meta.get("optimizer") != kind:
        raise CheckpointError(f"{json_path}: state of optimizer {meta.get('optimizer')!r}, "
                              f"this run uses {kind!r}")
    trained = compat.trainer_params(trainer)
    num_params = len(trained)

    def index(key):
        return int(key) if meta.get("index_is_int", True) else key

    bad = [k for k in layout if meta.get("index_is_int", True)
           and not (k.lstrip("-").isdigit() and 0 <= int(k) < num_params)]
    if bad:
        raise CheckpointError(f"{json_path}: state for parameter {bad[0]} of a model with "
                              f"{num_params} trained parameters")
    for key, value in arrays.items():  # momentum / moments have their weight's shape
        param = trained[index(key.split("/")[1].split(".")[0])] \
            if meta.get("index_is_int", True) and key.count("/") == 1 else None
        if param is not None and param.shape is not None and \
                tuple(param.shape) != tuple(value.shape):
            raise CheckpointError(f"{params_path}: {key} has shape {tuple(value.shape)}, "
                                  f"parameter {param.name} is {tuple(param.shape)}")
    updaters = _updaters(trainer)
    compat.ensure_trainer_initialized(trainer)
    for updater in updaters:
        updater.states = {index(k): _state_from_layout(v, arrays, params_path)
                          for k, v in layout.items()}
        updater.states_synced = dict.fromkeys(updater.states, False)
        updater.optimizer = optimizer
    optimizer.num_update = num_update
    optimizer.begin_num_update = int(meta.get("begin_num_update", 0))
    compat.set_update_counts(optimizer, {
        int(dev): {index(i): int(n) for i, n in c.items()} for dev, c in counts.items()})


def upgrade_legacy_states(folder, trainer):
    """Convert a checkpoint's pickled ``trainer.states`` into ``optimizer.params/.json``.

    **This unpickles the file**, which runs whatever code it names: call it only
    on checkpoints whose origin you trust.  ``trainer`` is a ``gluon.Trainer`` over
    the checkpoint's parameters with the same optimizer kind; its state is
    replaced by the file's.  ``trainer.states`` is removed once the new files are
    in place.
    """
    legacy = os.path.join(folder, LEGACY_STATES)
    require_files(folder, [LEGACY_STATES])
    trainer.load_states(legacy)
    tmp = make_temp_dir(folder, ".optimizer.")
    try:
        save_optimizer_states(trainer, tmp)
        for name in (OPTIMIZER_PARAMS, OPTIMIZER_JSON):
            os.replace(os.path.join(tmp, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.remove(legacy)


def require_files(folder, names):
    """Raise :class:`CheckpointError` naming the first of ``names`` missing in ``folder``.

    A checkpoint that stores its optimizer state as a pickle (``trainer.states``,
    an older layout) is refused with the way to convert it.
    """
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            continue
        if name in (OPTIMIZER_PARAMS, OPTIMIZER_JSON) and \
                os.path.isfile(os.path.join(folder, LEGACY_STATES)):
            raise CheckpointError(
                f"{os.path.join(folder, LEGACY_STATES)}: optimizer state stored as a pickle "
                "(an older checkpoint layout), which can run code when loaded, so it is not "
                "read; if you trust where it came from, convert it once by resuming with "
                f"--resume {folder} --upgrade-checkpoint")
        raise CheckpointError(f"{folder}: incomplete checkpoint, {name} is missing")



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
        raise CheckpointError(f"{path}: cannot read parameters ({error_message(err)})"
                              ) from None
    params = compat.structural_params(block)
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
        compat.load_parameter(param, value, ctx)


def stale_temp_folders(folder):
    """Temporary folders a killed writer of checkpoint ``folder`` left beside it."""
    folder = os.path.abspath(folder)
    parent, prefix = os.path.dirname(folder), "." + os.path.basename(folder) + "."
    if not os.path.isdir(parent):
        return []
    return sorted(os.path.join(parent, n) for n in os.listdir(parent)
                  if n.startswith(prefix) and n.endswith(TMP_SUFFIX)
                  and os.path.isdir(os.path.join(parent, n)))


def _write_folder(folder, writers):
    """Write files via ``writers`` {name: fn(path)} into ``folder`` atomically.

    Temporary folders of an earlier writer that was killed (``kill -9``) are
    removed first.  A write that fails (disk full) raises :class:`CheckpointError`
    and leaves the previous ``folder`` as it was.
    """
    import mxnet as mx

    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    for stale in stale_temp_folders(folder):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = make_temp_dir(parent, "." + os.path.basename(folder) + ".")
    try:
        try:
            for name, write in writers.items():
                write(os.path.join(tmp, name))
        except (OSError, mx.base.MXNetError) as err:
            raise CheckpointError(f"{folder}: cannot write the checkpoint ("
                                  f"{error_message(err)}; is the disk full?); the previous "
                                  "one is kept") from None
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
        ``head`` may be None for a backbone-only checkpoint (an embedding model
        with no classifier, e.g. converted from insightface): ``state['head']``
        is then None and there is no ``head.params``.
    trainer : mxnet.gluon.Trainer or None
        Its optimizer state becomes ``optimizer.params`` + ``optimizer.json``
        (:func:`save_optimizer_states`).
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

    writers = {"backbone.params": backbone.save_parameters}
    if head is not None:
        writers["head.params"] = head.save_parameters
    if center is not None:
        writers["center.params"] = center.save_parameters
    if trainer is not None:  # writes optimizer.params beside it
        writers[OPTIMIZER_JSON] = lambda path: save_optimizer_states(trainer,
                                                                     os.path.dirname(path))
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
    if state["head"] is None:
        raise CheckpointError(f"cannot resume from {where}: it holds a backbone only (no "
                              "classifier to continue); start a new run from it with "
                              "--pretrained")
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
    head : mxnet.gluon.HybridBlock or None
        ``(emb, labels) -> logits (B, num_classes)``; None for a backbone-only
        checkpoint (``state['head']`` is None).  For a model-parallel
        checkpoint, the single-device :class:`~gluon_face.heads.ArcMarginBlock`
        with the same margins (for ``cosine``/``normface`` and the deprecated
        ``softmax``: the ``cosine`` preset that the parallel head trains),
        holding all the class centres.
    state : dict
        The checkpoint's ``state.json`` (plus ``folder``).
    """
    import mxnet as mx

    from ..heads import ArcMarginBlock, get_head
    from ..heads.margins import DEPRECATED_PRESETS

    state = load_checkpoint_state(path)
    folder = state["folder"]
    ctx = mx.cpu() if ctx is None else ctx
    head_spec = state["head"] or {}
    if head_spec.get("parallel"):
        name = DEPRECATED_PRESETS.get(head_spec["name"], head_spec["name"])  # older checkpoints
        head_spec = dict(head_spec, name=name)
    build_head = ArcMarginBlock.from_preset if head_spec.get("parallel") else get_head
    try:
        backbone = build_backbone(state["model"]["name"], **state["model"].get("kwargs", {}))
        head = None if not head_spec else build_head(
            head_spec["name"], int(state["emb_size"]), int(state["num_classes"]),
            **head_spec.get("kwargs", {}))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{folder}: cannot rebuild its model ({err})") from None
    for block, name in ((backbone, "backbone.params"), (head, "head.params")):
        if block is not None:
            load_params(block, os.path.join(folder, name), ctx)
    return backbone, head, state
