"""The training loop: data-parallel backbone + head over a context list and a kvstore.

One step, for a batch of ``batch_size`` images split evenly over the contexts
(:func:`mxnet.gluon.utils.split_and_load`)::

    emb    = backbone(x_k)                          # (B/K, E) on device k
    logits = head(emb, y_k)                         # (B/K, C)
    loss_k = CE_ls(logits, y_k) [+ w * center(emb, y_k)]    # (B/K,)
    backward(sum_k loss_k); trainer.step(B * num_workers)   # gradient of the batch mean

``gluon.Trainer`` sums the device gradients (and, with ``dist_*`` kvstores, the
machines' gradients) through the kvstore and applies the optimiser on every
device (``update_on_kvstore=False``, so the optimiser state lives beside the
weights and can be checkpointed in every mode but ``dist_async``).

With ``model_parallel`` (or ``sample_rate < 1``) the head is
:func:`gluon_face.parallel.get_parallel_head`'s: the class centres are split
over the same contexts, the cross-entropy is computed exactly across the shards
(Partial FC: over the batch's classes plus sampled negatives), and the head's
own optimizer (same kind, momentum, weight decay and schedule as the backbone's)
updates them::

    emb_k          = backbone(x_k)                                   # data parallel
    losses, grads  = head.forward_backward([emb_k], [y_k])           # model parallel
    backward([emb_k] (+ center losses), grads); trainer.step(B); head.step(B)

With ``amp`` (:mod:`.amp`) the backbone trains through a low-precision copy of
its graph that shares its float32 parameters (bfloat16 on CPUs with AVX-512
BF16, float16 with dynamic loss scaling on GPUs); the head, the losses and the
verification passes (which use the float32 backbone) stay float32::

    emb = lowp_backbone(x_k)                        # bf16/fp16 compute, float32 output
    backward(scale * sum_k loss_k); allreduce; finite? update(B * scale) : skip, scale /= 2

Reproducibility: the batches of a step are a function of ``(seed, epoch)``
(:mod:`.loader`) and, when the network draws random numbers in a step (dropout),
MXNet's generator is re-seeded from ``(seed, step)`` before each step (re-seeding
waits for the engine, so networks without dropout skip it), so a resumed run
repeats the uninterrupted run's losses.

Around the step (:mod:`.callbacks`): :meth:`FaceTrainer.fit` is a short loop of
``train_step`` calls; its log lines and ``metrics.csv`` rows, verification, the
checkpoints, the plots and the Ctrl-C / SIGTERM handling are callbacks, and a
user's own callbacks (``FaceTrainer(..., callbacks=[...])``) run after them.

Library code never prints: progress goes to a :mod:`logging` logger
(``gluon_face.training`` unless one is passed) that the tool configures.
"""
import functools
import logging
import math
import os
import time

import numpy as onp
from mxnet.util import use_np

from .._mxnet import error_message
from ..graph import mxnet_compat
from ..heads import head_keywords
from .callbacks import (
    Callback,
    RunInfo,
    StepInfo,
    TrainingDiverged,
    check_weights_finite,
    default_callbacks,
    diverged,
    find_val_targets,
    load_evaluation_sets,
    run_evaluation,
)
from .checkpoint import (
    LEGACY_STATES,
    OPTIMIZER_JSON,
    OPTIMIZER_PARAMS,
    CheckpointError,
    build_backbone,
    check_compatible,
    load_checkpoint_state,
    load_optimizer_states,
    load_params,
    require_files,
    save_checkpoint,
    upgrade_legacy_states,
)
from .config import ConfigError, TrainConfig
from .loader import EpochBatches, FlipDataset, WorkerBatches, batches_per_epoch
from .optim import build_lr_scheduler, build_optimizer
from .run_folder import (
    METRICS_CSV,
    check_output,
    holds_run,  # noqa: F401  (importable from here as before the move)
    next_free_output,  # noqa: F401
    read_history,
    write_history,
)
from .run_folder import prepare_output as prepare_output_folder

__all__ = ["FaceTrainer", "train", "TrainingDiverged", "find_val_targets", "METRICS_CSV"]

_HEAD_MARGIN_KEYS = ("margin_s", "margin_m", "margin_a", "margin_b", "easy_margin")


def _batchify(samples):
    data = onp.stack([s[0] for s in samples]).astype(onp.float32, copy=False)
    label = onp.asarray([s[1] for s in samples], dtype=onp.float32)
    return data, label


@use_np
class FaceTrainer:
    """Builds everything a run needs from a :class:`TrainConfig`; :meth:`fit` trains.

    Attributes after construction: ``backbone``, ``head``, ``trainer``
    (:class:`mxnet.gluon.Trainer`), ``ctx`` (list of contexts), ``dataset``,
    ``num_classes``, ``steps_per_epoch``, ``step`` (global steps done),
    ``val_sets`` (name -> (images, issame)), ``callbacks`` (the built-in
    callbacks, then the user's), ``history`` (the ``metrics.csv`` rows),
    ``best_score``, ``last_results`` and ``last_identification`` (the latest
    :meth:`evaluate`).

    Parameters
    ----------
    config : TrainConfig
    log : logging.Logger, optional
        Default ``logging.getLogger('gluon_face.training')``.
    progress : callable, optional
        ``progress(total, desc) -> bar`` with ``bar.update(n)`` and ``bar.close()``
        (e.g. ``tqdm``) for the evaluation passes; default: none.
    overwrite : bool, default False
        Replace a run already in ``config.output``.  Without it a run there is
        never touched: training into it needs ``resume`` pointing at it (to
        continue it), the default output folder moves on to the next free name
        (``runs/default-2``, ...), and any other folder is refused.
    upgrade_checkpoint : bool, default False
        With ``resume``: convert a checkpoint of the older layout, whose
        optimizer state is a pickle, before loading it
        (:func:`~gluon_face.training.checkpoint.upgrade_legacy_states`; this
        unpickles it, so only for checkpoints from a trusted source).
    callbacks : list of Callback, optional
        Called by :meth:`fit` after the built-in ones
        (:func:`~gluon_face.training.callbacks.default_callbacks`: log lines,
        verification, checkpoints, plots, signals), in list order.  The
        ``callbacks`` attribute may be edited before :meth:`fit`.

    Raises
    ------
    ConfigError, ValueError, CheckpointError
        For bad settings (unknown network or loss, missing data, batch size not
        divisible by the number of devices, a resume checkpoint that does not fit).
    TypeError
        If ``config`` is not a :class:`TrainConfig` or a callback not a
        :class:`~gluon_face.training.callbacks.Callback`.
    """

    def __init__(self, config, log=None, progress=None, overwrite=False,
                 upgrade_checkpoint=False, callbacks=None):
        import mxnet as mx

        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        callbacks = list(callbacks or ())
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks must be Callback instances, got "
                                f"{type(callback).__name__}")
        self.callbacks = default_callbacks() + callbacks
        self.config = config.validate()
        self.log = log or logging.getLogger("gluon_face.training")
        self.progress = progress
        self.overwrite = bool(overwrite)
        self._upgrade_checkpoint = bool(upgrade_checkpoint)
        self._output_ready = False
        self._stop = None
        self.config = cfg = check_output(self.config, self.overwrite, self.log)

        from ..devices import parse_ctx

        self.ctx = parse_ctx(cfg.ctx)
        if cfg.split_prelu is None:
            self.config = cfg = cfg.replace(split_prelu=split_prelu_for(self.ctx))
        self.amp_dtype = None
        self.loss_scaler = None
        self.amx = False
        if cfg.amp:
            self._init_amp()
        if cfg.batch_size % len(self.ctx):
            raise ConfigError(f"batch_size {cfg.batch_size} does not split evenly over the "
                              f"{len(self.ctx)} devices of --ctx {cfg.ctx}; use a multiple of "
                              f"{len(self.ctx)}")
        self.kvstore, self.rank, self.num_workers = self._make_kvstore()
        self.is_writer = self.rank == 0

        self._open_data()
        self._build_model(mx)
        self.scheduler = None
        self._build_trainer()
        self.step = 0
        self.best_score = None
        self.history = []
        self.last_results = {}
        self.last_identification = None
        if cfg.resume:
            self._resume(cfg.resume)

    # ------------------------------------------------------------ setup: output, kvstore, data
    def prepare_output(self):
        """Create the output folder and write ``config.yaml`` (rank 0; :meth:`fit` calls it).

        With ``overwrite``, what an earlier run wrote there
        (:data:`~gluon_face.training.run_folder.RUN_FILES`) is removed first.  Done
        once; nothing is touched before it.
        """
        if self._output_ready or not self.is_writer:
            return
        prepare_output_folder(self.config, self.overwrite)
        self._output_ready = True

    def _make_kvstore(self):
        import mxnet as mx

        kind = self.config.kvstore
        if not kind.startswith("dist"):
            return kind, 0, 1
        if "DMLC_ROLE" not in os.environ:
            raise ConfigError(f"kvstore {kind} needs the DMLC_* environment of a distributed "
                              "launch (tools/launch.py); DMLC_ROLE is not set")
        kv = mx.kv.create(kind)
        return kv, kv.rank, kv.num_workers

    def _open_data(self):
        from ..data import FaceRecordDataset, FaceTransform, read_dataset_info

        cfg = self.config
        if cfg.data_dir is None:
            data_dir = self._glyph_data()
        else:
            data_dir = os.path.abspath(os.path.expanduser(cfg.data_dir))
        if not os.path.isdir(data_dir):
            raise ConfigError(f"data_dir {data_dir}: no such folder")
        rec = os.path.join(data_dir, "train.rec")
        if not os.path.isfile(rec):
            raise ConfigError(f"data_dir {data_dir} has no train.rec (expected insightface's "
                              "layout: train.rec, train.idx, property, *.bin)")
        self.data_dir = data_dir
        self._resolve_from_data(read_dataset_info(data_dir))
        cfg = self.config
        self.dataset = FaceRecordDataset(rec)
        self.num_classes = int(self.dataset.num_classes)
        data_size = tuple(int(s) for s in self.dataset.image_size)
        self.image_size = (cfg.image_size, cfg.image_size) if cfg.image_size else data_size
        resize = self.image_size if self.image_size != data_size else None
        self.transform = FaceTransform(flip=False, image_size=resize)
        self.steps_per_epoch = batches_per_epoch(len(self.dataset), cfg.batch_size,
                                                 self.num_workers)
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch_size {cfg.batch_size} is larger than the "
                              f"{len(self.dataset) // self.num_workers} training images "
                              f"per worker in {rec}")
        self.val_sets, self.identification = {}, None
        if self.is_writer:  # only rank 0 verifies
            self.val_sets, self.identification = load_evaluation_sets(cfg, data_dir,
                                                                      self.image_size)

    def _glyph_data(self):
        """The built-in glyph identities, built (with a log line and a bar) on first use."""
        from ..data import glyph_data_dir
        from ..data._cache import cache_root
        from ..data.glyphs import GLYPHS_VERSION, verify_glyph_data

        folder = os.path.join(cache_root(), GLYPHS_VERSION)
        if verify_glyph_data(folder) is None:
            return folder
        self.log.info("building the glyph identities in %s (first use: about half a minute)",
                      folder)

        def progress(items, total):
            bar = self.progress(total=total, desc="glyph identities") if self.progress else None
            for item in items:
                yield item
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()

        return glyph_data_dir(progress=progress)

    def _resolve_from_data(self, info):
        """Fill the settings the data folder decides (``dataset.json``) into the config.

        ``flip`` and ``flip_test`` left unset follow the data (true for faces, false
        for data that is not mirror-symmetric); ``val_identification`` left unset is
        the folder's open-set identification ``.rec``, if it names one.  The resolved
        values are what ``config.yaml`` and the checkpoints record.
        """
        cfg = self.config
        changes = {}
        for key in ("flip", "flip_test"):
            if getattr(cfg, key) is None:
                changes[key] = bool(info.get(key, True))
        ident = cfg.val_identification
        if ident is None and info.get("identification"):
            ident = os.path.join(self.data_dir, *str(info["identification"]).split("/"))
        if ident is not None and ident.lower() == "none":
            ident = "none"
        changes["val_identification"] = ident
        self.config = cfg.replace(**changes)

    # ------------------------------------------------------------ setup: model, optimizer
    def _model_spec(self):
        cfg = self.config
        size = self.image_size[0] if self.image_size[0] == self.image_size[1] \
            else list(self.image_size)
        kwargs = dict(emb_size=cfg.emb_size, use_dropout=cfg.use_dropout,
                      act_type=cfg.act_type, image_size=size)
        kwargs.update(cfg.model_kwargs)
        head_kwargs = {k: getattr(cfg, k) for k in _HEAD_MARGIN_KEYS
                       if getattr(cfg, k) is not None}
        if "margin_s" not in head_keywords(cfg.loss):
            head_kwargs.pop("margin_s", None)  # documented: heads without a fixed scale
        head_kwargs.update(cfg.head_kwargs)
        return {"name": cfg.network, "kwargs": kwargs}, {"name": cfg.loss, "kwargs": head_kwargs}

    def _build_model(self, mx):
        from mxnet import gluon

        from ..heads import CenterLoss, SoftmaxCrossEntropyLoss, get_head

        cfg = self.config
        self.model_spec, self.head_spec = self._model_spec()
        self.parallel = cfg.parallel_head
        self.backbone = build_backbone(cfg.network, **self.model_spec["kwargs"])
        if self.parallel:
            self.head_spec["parallel"] = {"sample_rate": cfg.sample_rate}
            self.head = self._build_parallel_head()
        else:
            self.head = get_head(cfg.loss, cfg.emb_size, self.num_classes,
                                 **self.head_spec["kwargs"])
        mx.random.seed(cfg.seed)
        self.backbone.initialize(
            mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2), ctx=self.ctx)
        if cfg.pretrained:
            self._load_pretrained(cfg.pretrained)
        if self.parallel:
            self._init_parallel_head(mx)
        else:
            self.head.initialize(mx.init.Normal(0.01), ctx=self.ctx)
        self.loss_fn = SoftmaxCrossEntropyLoss(ls_eps=cfg.label_smoothing)
        self.center = None
        if cfg.center_loss_weight > 0:
            self.center = CenterLoss(self.num_classes, cfg.emb_size, alpha=cfg.center_loss_alpha)
            self.center.initialize(ctx=self.ctx)
        if cfg.freeze_bn:
            for block in _walk(self.backbone):
                if isinstance(block, gluon.nn.BatchNorm):
                    mxnet_compat.set_operator_kwarg(block, "use_global_stats", True)
        self._warm_up_shapes()
        if cfg.hybridize:
            self.backbone.hybridize(static_alloc=True, static_shape=True)
            if not self.parallel:  # the parallel head runs imperative operators per shard
                self.head.hybridize(static_alloc=True, static_shape=True)
            self.loss_fn.hybridize()
        self.train_backbone = self._build_train_graph()
        self._draws_random = any(isinstance(b, gluon.nn.Dropout)
                                 for net in (self.backbone, self.head)
                                 if isinstance(net, gluon.Block) for b in _walk(net))

    def _build_parallel_head(self):
        from ..parallel import get_parallel_head

        cfg = self.config
        kwargs = dict(self.head_spec["kwargs"])
        if cfg.loss == "softmax":  # the cosine head's former model-parallel name
            self.log.warning("--loss softmax with --model-parallel is deprecated: it trains the "
                             "margin-free cosine head, --loss cosine (at s = 64: softmax "
                             "ignores --margin-s)")
        try:
            return get_parallel_head(cfg.loss, cfg.emb_size, self.num_classes,
                                     ctx_list=self.ctx, sample_rate=cfg.sample_rate,
                                     seed=cfg.seed, ls_eps=cfg.label_smoothing, **kwargs)
        except TypeError as err:  # a head_kwargs key the parallel head does not take
            raise ConfigError(f"model_parallel: bad head keyword ({err})") from None
        except ValueError as err:
            raise ConfigError(f"model_parallel: {err}") from None

    def _init_parallel_head(self, mx):
        """Class centres drawn as the single-device head draws them, then sharded.

        ``Normal(0.01)`` fills one (C, E) array on the CPU, consuming MXNet's
        generator exactly as ``head.initialize`` does in the single-device run,
        so the same seed gives the same centres (and backbone) in both modes.
        """
        from mxnet import np

        weight = np.zeros((self.num_classes, self.config.emb_size), ctx=mx.cpu())
        mx.init.Normal(0.01)(mx.init.InitDesc("fc7_weight"), weight)
        self.head.set_weight(weight)
        del weight

    def _init_amp(self):
        """Pick the low-precision type (see :mod:`.amp`); float16 gets a loss scaler."""
        from . import amp

        # mxnet.contrib.amp.init() would leave our numpy-mode operators in float32;
        # the backbone's graph is converted instead (_build_low_precision).
        self.amp_dtype = amp.check_amp(self.ctx, self.config.kvstore)
        self.loss_scaler = amp.loss_scaler_for(self.amp_dtype)
        # bfloat16 convolutions are only faster than float32 here with AMX tiles
        self.amx = self.amp_dtype == "bfloat16" and amp.enable_amx()

    def _build_train_graph(self):
        """The block the backbone trains through, sharing its parameters.

        ``amp``: its graph in ``amp_dtype``; ``hybridize`` + ``split_prelu``: its
        float32 graph with PReLU split into oneDNN operators
        (:func:`gluon_face.graph.prelu.to_split_prelu`); else the backbone itself.
        """
        from mxnet import np

        from ..graph.prelu import to_split_prelu
        from .amp import low_precision_backbone

        cfg = self.config
        if self.amp_dtype is None and not (cfg.hybridize and cfg.split_prelu
                                           and _has_prelu(self.backbone)):
            # Nothing to split: the rewritten graph of a ReLU network is only slower.
            return self.backbone
        per_device = cfg.batch_size // len(self.ctx)
        example = np.zeros((per_device, 3) + tuple(self.image_size), ctx=self.ctx[0])
        if self.amp_dtype is None:
            return to_split_prelu(self.backbone, example)
        block = low_precision_backbone(self.backbone, example, self.amp_dtype,
                                       split_prelu=cfg.split_prelu)
        if not cfg.hybridize:  # the converted graph is static; the backbone needs not be
            self.backbone.hybridize(active=False)
        return block

    def _warm_up_shapes(self):
        """Finish deferred initialisation with one forward pass per device."""
        from mxnet import np

        for ctx in self.ctx:
            x = np.zeros((2, 3) + tuple(self.image_size), ctx=ctx)
            emb = self.backbone(x)
            if not self.parallel:
                self.head(emb, np.zeros((2,), ctx=ctx))
            if self.center is not None:
                self.center(emb, np.zeros((2,), ctx=ctx))

    def _params(self):
        params = list(self.backbone.collect_params().values())
        if not self.parallel:  # the parallel head updates its centres itself
            params += list(self.head.collect_params().values())
        return [p for p in params if p.grad_req != "null"]

    def _build_trainer(self):
        from mxnet import gluon

        cfg = self.config
        name, opt_params = build_optimizer(cfg, self.steps_per_epoch)
        self.scheduler = opt_params["lr_scheduler"]
        update_on_kvstore = None if cfg.kvstore == "dist_async" else False
        self.trainer = gluon.Trainer(self._params(), name, opt_params, kvstore=self.kvstore,
                                     update_on_kvstore=update_on_kvstore)
        if self.parallel:
            # Same optimizer kind and hyper-parameters, with its own instance of the same
            # schedule: both optimizers count one update per step, so their lr agree.
            _, head_params = build_optimizer(cfg, self.steps_per_epoch)
            self.head.init_optimizer(name, head_params)

    def _sync_kvstore(self):
        """Finish the first broadcast of the weights before any gradient is pushed.

        With a ``dist_*`` kvstore Gluon's Trainer broadcasts the weights lazily inside
        the first ``step`` and queues the weight pulls and the gradient pushes together;
        a server replaces a key's value by the summed gradients once every worker has
        pushed, so a weight pull the engine sends after its gradient push comes back
        with the gradients (seen as workers whose heads drift far apart in some runs).
        Broadcasting here, after the backward pass, and waiting for it keeps the pulls
        ahead of the pushes (also after ``--resume``).
        """
        if not self.config.kvstore.startswith("dist"):
            return
        trainer = self.trainer
        if mxnet_compat.ensure_trainer_initialized(trainer):
            _wait_all()

    # ------------------------------------------------------------ setup: resume
    def _load_pretrained(self, path):
        """The backbone of the checkpoint ``path`` as this run's starting point.

        Only the network's name is compared up front: the settings that change
        the weights (embedding size, activation, units, widths) show as missing,
        unexpected or differently shaped arrays, which :func:`load_params` names.
        """
        state = load_checkpoint_state(path)
        folder = state["folder"]
        name = state["model"].get("name")
        if name != self.config.network:
            raise CheckpointError(f"cannot start from {folder}: its backbone is {name!r}, "
                                  f"this run trains {self.config.network!r}")
        require_files(folder, ["backbone.params"])
        load_params(self.backbone, os.path.join(folder, "backbone.params"), self.ctx)
        self.log.info("backbone from %s (%s, step %d of its run); head and optimizer start "
                      "fresh", folder, name, int(state.get("step", 0)))

    def _resume(self, path):
        cfg = self.config
        state = load_checkpoint_state(path)
        check_compatible(state, self.model_spec, self.head_spec, self.num_classes)
        folder = state["folder"]
        saved_batch = state.get("batch_size")
        if saved_batch is not None and (int(saved_batch), int(state.get("num_workers", 1))) \
                != (cfg.batch_size, self.num_workers):
            raise CheckpointError(
                f"cannot resume from {folder}: it was trained with batch size {saved_batch} "
                f"on {state.get('num_workers', 1)} worker(s), this run uses {cfg.batch_size} "
                f"on {self.num_workers}; the saved position counts batches, so resume with "
                f"--batch-size {saved_batch}")
        needed = ["backbone.params", "head.params"]
        needed += ["head.states"] if self.parallel else []
        needed += ["center.params"] if self.center is not None else []
        if self._upgrade_checkpoint and os.path.isfile(os.path.join(folder, LEGACY_STATES)):
            upgrade_legacy_states(folder, self.trainer)
            self.log.warning("converted %s to optimizer.params + optimizer.json",
                             os.path.join(folder, LEGACY_STATES))
        require_files(folder, needed + [OPTIMIZER_JSON, OPTIMIZER_PARAMS])
        load_params(self.backbone, os.path.join(folder, "backbone.params"), self.ctx)
        if self.parallel:
            self._resume_parallel_head(folder)
        else:
            load_params(self.head, os.path.join(folder, "head.params"), self.ctx)
        if self.center is not None:
            load_params(self.center, os.path.join(folder, "center.params"), self.ctx)
        load_optimizer_states(self.trainer, folder)
        optimizer = self.trainer.optimizer
        # the schedule comes from this run's config; its position from the saved counter
        optimizer.lr_scheduler = build_lr_scheduler(cfg, self.steps_per_epoch)
        self.scheduler = optimizer.lr_scheduler
        self.step = int(state["step"])
        if optimizer.num_update != self.step:
            self.log.warning("optimizer update count %d differs from the checkpoint's step "
                             "%d; using the step", optimizer.num_update, self.step)
            optimizer.num_update = self.step
        if self.parallel:
            head_opt = self.head.optimizer
            head_opt.lr_scheduler = build_lr_scheduler(cfg, self.steps_per_epoch)
            head_opt.num_update = self.step
        saved_scaler = (state.get("amp") or {}).get("loss_scaler")
        if self.loss_scaler is not None and saved_scaler:
            try:
                self.loss_scaler.load_state_dict(saved_scaler)
            except ValueError as err:
                raise CheckpointError(f"cannot resume from {folder}: {err}") from None
        self.best_score = state.get("best_score")
        self.history = read_history(self._out(METRICS_CSV), up_to_step=self.step)
        self.log.info("resumed from %s at step %d (epoch %d)", folder, self.step,
                      self.step // self.steps_per_epoch)

    def _resume_parallel_head(self, folder):
        import mxnet as mx

        params = os.path.join(folder, "head.params")
        states = os.path.join(folder, "head.states")
        try:
            self.head.load_parameters(params)
            self.head.load_states(states)
        except (ValueError, OSError, KeyError, mx.base.MXNetError) as err:
            raise CheckpointError(f"cannot resume from {folder}: {error_message(err)}"
                                  ) from None

    # ------------------------------------------------------------ one step
    def _step_seed(self):
        return (self.config.seed * 1000003 + self.step) % (2 ** 31 - 1)

    def train_step(self, data, label):
        """One optimisation step on a host batch; returns the mean loss (float).

        Raises
        ------
        TrainingDiverged
            If the loss is not finite; no update is applied then.
        """
        import mxnet as mx
        from mxnet import autograd
        from mxnet.gluon.utils import split_and_load

        if self._draws_random:
            mx.random.seed(self._step_seed())
        xs = split_and_load(data, self.ctx, even_split=True)
        ys = split_and_load(label, self.ctx, even_split=True)
        scale = self.loss_scaler.scale if self.loss_scaler is not None else 1.0
        if self.parallel:
            losses = self._parallel_forward_backward(xs, ys, scale)
        else:
            weight = self.config.center_loss_weight
            losses, scaled = [], []
            with autograd.record():
                for x, y in zip(xs, ys):
                    emb = self.train_backbone(x)
                    loss = self.loss_fn(self.head(emb, y), y)
                    if self.center is not None:
                        loss = loss + weight * self.center(emb, y)
                    losses.append(loss)
                    if scale != 1.0:
                        scaled.append(loss * scale)
            autograd.backward(scaled or losses)
        total = sum(float(l.sum().item()) for l in losses)
        value = total / len(data)
        if not math.isfinite(value):
            raise diverged(self, f"loss is {value} at step {self.step + 1} (epoch "
                           f"{self.epoch_of(self.step)}); stopped before updating the weights")
        batch = len(data) * self.num_workers
        self._sync_kvstore()
        if self.loss_scaler is None:
            self.trainer.step(batch)
        else:
            self._scaled_update(batch, scale)
        if self.parallel:
            # the sharded head's gradients are float32 and unscaled: always applied
            self.head.step(batch)
        self.step += 1
        return value

    def _scaled_update(self, batch, scale):
        """Loss-scaled update: reduce, check, then unscale in the optimizer or skip.

        The check runs on the reduced gradients (the kvstore's sum over devices
        and machines), so every worker takes the same decision.
        """
        from .amp import count_skipped_update, grads_finite

        self.trainer.allreduce_grads()
        finite = grads_finite(self._params(), self.ctx[0])
        if self.loss_scaler.update(finite):
            self.trainer.update(batch * scale)
            return
        count_skipped_update(self.trainer.optimizer)
        self.log.info("amp: non-finite gradients at step %d (loss scale %g): update skipped, "
                      "loss scale now %g", self.step + 1, scale, self.loss_scaler.scale)

    def _parallel_forward_backward(self, xs, ys, scale=1.0):
        """Backbone forward per device, the sharded head's loss and embedding gradients,
        and the backbone's backward pass (gradients times ``scale``); per-device losses
        (B/K,)."""
        from mxnet import autograd, np

        weight = self.config.center_loss_weight
        with autograd.record():
            embs = [self.train_backbone(x) for x in xs]
            ce, grads = self.head.forward_backward(embs, ys)
            centers = [weight * self.center(e, y) for e, y in zip(embs, ys)] \
                if self.center is not None else []
        heads, head_grads = list(embs), list(grads)
        for c in centers:
            heads.append(c)
            head_grads.append(np.ones_like(c))
        if scale != 1.0:
            head_grads = [g * scale for g in head_grads]
        autograd.backward(heads, head_grads)
        if not centers:
            return ce
        return [a + b.detach() for a, b in zip(ce, centers)]

    def epoch_of(self, step):
        """1-based epoch that global step ``step + 1`` belongs to."""
        return step // self.steps_per_epoch + 1

    # ------------------------------------------------------------ the loop
    def fit(self):
        """Train until ``epochs`` (or ``max_steps``) are done, Ctrl-C, or divergence.

        A loop of :meth:`train_step` calls; what surrounds the steps is done by
        ``self.callbacks`` (see :mod:`gluon_face.training.callbacks`).

        Returns
        -------
        dict
            ``status`` ('finished', 'max_steps', 'interrupted' (SIGINT),
            'terminated' (SIGTERM) or the status a callback's
            :meth:`request_stop` gave, 'stopped' by default), ``step``,
            ``epoch``, ``first_loss``, ``last_loss``, ``best_score``,
            ``best_target``, ``verification`` {name: accuracy}, ``seconds``,
            ``output``, ``checkpoint``.

        Raises
        ------
        TrainingDiverged
            On a NaN or infinite loss (the last good checkpoint is kept).
        """
        self.prepare_output()
        total = self.config.epochs * self.steps_per_epoch
        end = min(total, self.config.max_steps) if self.config.max_steps else total
        run = RunInfo(start_step=self.step, end_step=end, total_steps=total,
                      started=time.time())
        self._stop = None
        try:
            self._call("on_train_begin", run)
            try:
                self._loop(run)
            finally:
                # A distributed worker must not leave (or save) with pushes still queued:
                # MXNet 1.9.1 then waits forever at exit and rank 0 in its final save.
                _wait_all()
            if self._stop is not None:
                run.status, reason = self._stop
                if run.status == "stopped":
                    self.log.info("stopped at step %d%s", self.step,
                                  f": {reason}" if reason else "")
            else:
                run.status = "max_steps" if end < total else "finished"
        except BaseException as err:
            run.error = err
            raise
        finally:
            self._train_end(run)
        return self._summary(run)

    def _loop(self, run):
        """The steps from ``self.step`` to ``run.end_step``, each followed by the callbacks."""
        dataset = FlipDataset(self.dataset, self.transform)
        while self.step < run.end_step:
            self._call("on_epoch_begin", self.epoch_of(self.step))
            loader, close = self._epoch_loader(dataset)
            try:
                self._epoch_steps(run, loader)
            finally:
                # its decoding threads or processes end here, not at some later
                # garbage collection: one still decoding when the program exits
                # aborts it (exit 134)
                close()
            if self._stop is not None:
                break

    def _epoch_steps(self, run, loader):
        """The steps of one epoch's ``loader``, until it ends, a stop or ``run.end_step``."""
        spe, verbose = self.steps_per_epoch, self.config.verbose
        ready = time.time()
        for data, label in loader:
            loss = self.train_step(data, label)
            step = self.step
            info = StepInfo(step=step, epoch=self.epoch_of(step - 1), loss=loss,
                            seconds=time.time() - ready, epoch_end=step % spe == 0,
                            evaluate=step % spe == 0 or bool(verbose and step % verbose == 0),
                            last=step == run.end_step)
            run.first_loss = loss if run.first_loss is None else run.first_loss
            run.last_loss = loss
            self._call("on_step_end", info)
            if info.epoch_end:
                self._call("on_epoch_end", info.epoch)
            if self._stop is not None or step >= run.end_step:
                break
            ready = time.time()

    def _epoch_loader(self, dataset):
        """``(batches, close)``: the batches of the current epoch from ``self.step`` on
        (this worker's share), and the function that ends their decoding threads or
        processes."""
        from mxnet import gluon

        cfg = self.config
        epoch = self.step // self.steps_per_epoch
        sampler = EpochBatches(len(self.dataset), cfg.batch_size, epoch, seed=cfg.seed,
                               flip=cfg.flip, start=self.step - epoch * self.steps_per_epoch,
                               part=self.rank, num_parts=self.num_workers)
        if cfg.num_workers:
            loader = WorkerBatches(dataset, sampler, _batchify, cfg.num_workers)
            return loader, loader.close
        # no workers: decode in one background thread, overlapped with the step
        # (the decoders release the GIL)
        loader = gluon.data.DataLoader(dataset, batch_sampler=sampler, batchify_fn=_batchify,
                                       num_workers=1, thread_pool=True)
        return loader, functools.partial(mxnet_compat.close_data_loader, loader)

    def _call(self, hook, arg):
        for callback in self.callbacks:
            getattr(callback, hook)(self, arg)

    def _train_end(self, run):
        """Every callback's ``on_train_end``, also after one of them failed.

        The first error raised by a hook of a run that was ending normally becomes
        ``run.error`` (later hooks see it) and is raised once all have run; one
        raised while the run is already failing is logged, so it does not hide
        the error that ended the run.
        """
        failure = None
        for callback in self.callbacks:
            try:
                callback.on_train_end(self, run)
            except BaseException as err:
                if run.error is None:
                    run.error = failure = err
                else:
                    self.log.warning("%s.on_train_end failed after an earlier error: %s",
                                     type(callback).__name__, err)
        if failure is not None:
            raise failure

    def request_stop(self, reason=None, status="stopped"):
        """Ask :meth:`fit` to end after the current step, as Ctrl-C does.

        The usual end-of-run checkpoint is written and :meth:`fit` returns with
        ``status``.  The first request of a run wins.  With the default status
        the loop logs ``stopped at step N: reason``; a caller passing its own
        status reports the stop itself (as the signal handler does).  With a
        ``dist_*`` kvstore every worker must ask at the same step: a worker that
        stops alone leaves the others waiting for its gradients.

        Parameters
        ----------
        reason : str, optional
            Why, for the log.
        status : str, default 'stopped'
            The ``status`` of :meth:`fit`'s summary.
        """
        if self._stop is None:
            self._stop = (status, reason)

    def _summary(self, run):
        ident = self.last_identification
        return {
            "status": run.status, "step": self.step, "epoch": self.step / self.steps_per_epoch,
            "first_loss": run.first_loss, "last_loss": run.last_loss,
            "best_score": self.best_score, "best_target": self.best_target,
            "verification": {k: v["score"].accuracy for k, v in self.last_results.items()},
            "identification": None if ident is None else {
                "tar_at_far": dict(ident["all_pairs"].tar_at_far),
                "rank1": ident["identification"].rank[1],
                "rank5": ident["identification"].rank[5]},
            "seconds": time.time() - run.started, "output": os.path.abspath(self.config.output),
            "checkpoint": self._out("checkpoints", "last") if self.is_writer else None,
        }

    # ------------------------------------------------------------ state, saving, evaluation
    def record(self, row):
        """Append ``row`` (a dict with ``step`` and ``epoch``) to ``history`` and rewrite
        ``metrics.csv`` (rank 0); a new key becomes a new column."""
        self.history.append(row)
        if self.is_writer:
            write_history(self._out(METRICS_CSV), self.history)

    @property
    def best_target(self):
        """The verification set whose accuracy picks ``checkpoints/best``: ``best_target``
        of the config, else the first set (None without sets)."""
        if self.config.best_target:
            return self.config.best_target
        return next(iter(self.val_sets), None)

    def _out(self, *parts):
        return os.path.join(self.config.output, *parts)

    def _state(self):
        return {"epoch": self.step // self.steps_per_epoch, "step": self.step,
                "best_score": self.best_score,
                "best_target": self.best_target,
                "model": self.model_spec, "head": self.head_spec,
                "num_classes": self.num_classes, "emb_size": self.config.emb_size,
                "image_size": list(self.image_size), "steps_per_epoch": self.steps_per_epoch,
                "batch_size": self.config.batch_size, "num_workers": self.num_workers,
                "rng": {"seed": self.config.seed,
                        "scheme": "data order from (seed, epoch); mxnet seeded from "
                                  "(seed, step) before each step"},
                "amp": None if self.amp_dtype is None else {
                    "dtype": self.amp_dtype,
                    "loss_scaler": None if self.loss_scaler is None
                    else self.loss_scaler.state_dict()},
                "verification": {k: v["score"].as_dict() if hasattr(v["score"], "as_dict")
                                 else None for k, v in self.last_results.items()}}

    def save(self, which="last"):
        """Write the full state to ``<output>/checkpoints/<which>``; returns the folder.

        Raises
        ------
        TrainingDiverged
            If a weight is not finite (nothing is written then).
        """
        check_weights_finite(self)
        folder = self._out("checkpoints", which)
        state = self._state()
        save_checkpoint(folder, self.backbone, self.head, self.trainer, _jsonable(state),
                        self.config.to_yaml(), center=self.center, head_states=self.parallel)
        return folder

    def evaluate(self):
        """Verification on every ``.bin`` set: name -> evaluate_bin result dict.

        With an identification set (``val_identification``) its open-set metrics
        go to ``last_identification``.  Every distinct image is embedded once per
        round: the pair sets and the identification images share one cache.
        The results are logged and kept in ``last_results``.

        Raises
        ------
        TrainingDiverged
            If a weight or an embedding is not finite.
        """
        return run_evaluation(self)


def _wait_all():
    import mxnet as mx

    mx.nd.waitall()


def train(config, log=None, progress=None, callbacks=None):
    """Train with ``config``; see :class:`FaceTrainer` (``log``, ``progress``,
    ``callbacks``) and :meth:`FaceTrainer.fit`.

    Returns the summary dict of :meth:`FaceTrainer.fit`.
    """
    return FaceTrainer(config, log=log, progress=progress, callbacks=callbacks).fit()


# ----------------------------------------------------------------------------- utilities
def _has_prelu(block):
    from mxnet.gluon import nn

    return any(isinstance(b, nn.PReLU) for b in _walk(block))


def _walk(block):
    yield block
    for child in mxnet_compat.block_children(block).values():
        yield from _walk(child)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, onp.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, onp.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split_prelu_for(ctx_list):
    """``split_prelu``'s automatic value for the devices ``ctx_list``: on for CPUs only.

    The split is a CPU workaround (MXNet 1.9.1's CPU PReLU has no oneDNN kernel);
    on a GPU PReLU is a native kernel and the split graph only holds extra buffers.
    """
    return all(ctx.device_type == "cpu" for ctx in ctx_list)
