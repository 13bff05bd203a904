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

Library code never prints: progress goes to a :mod:`logging` logger
(``gluon_face.training`` unless one is passed) that the tool configures.
"""
import contextlib
import csv
import logging
import math
import os
import shutil
import signal
import threading
import time

import numpy as onp
from mxnet.util import use_np

from .._io import atomic_open
from .._mxnet import error_message
from ..heads import head_keywords
from .checkpoint import (
    LEGACY_STATES,
    OPTIMIZER_JSON,
    OPTIMIZER_PARAMS,
    CheckpointError,
    build_backbone,
    check_compatible,
    copy_checkpoint,
    load_checkpoint_state,
    load_optimizer_states,
    load_params,
    require_files,
    save_checkpoint,
    upgrade_legacy_states,
)
from .config import ConfigError, TrainConfig
from .loader import EpochBatches, FlipDataset, batches_per_epoch
from .optim import build_lr_scheduler, build_optimizer

__all__ = ["FaceTrainer", "train", "TrainingDiverged", "find_val_targets", "METRICS_CSV"]

METRICS_CSV = "metrics.csv"
DEFAULT_OUTPUT = TrainConfig().output
#: What a run writes into its output folder (``train.log`` comes from tools/train.py).
RUN_FILES = ("checkpoints", "config.yaml", METRICS_CSV, "curves.png", "roc.png", "train.log")
#: Verification sets looked for first (in this order); then every other *.bin, sorted.
PREFERRED_TARGETS = ("lfw", "cfp_fp", "agedb_30", "open_set")
_HEAD_MARGIN_KEYS = ("margin_s", "margin_m", "margin_a", "margin_b", "easy_margin")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


def find_val_targets(data_dir, names=()):
    """``[(name, path)]`` of the verification ``.bin`` sets to evaluate.

    Parameters
    ----------
    data_dir : str
        Training data folder.
    names : list of str
        Names in ``data_dir`` (``lfw`` for ``lfw.bin``) or paths of ``.bin``
        files; empty: ``lfw``, ``cfp_fp``, ``agedb_30``, ``open_set`` if
        present, then every other ``*.bin`` of ``data_dir`` in name order.

    Raises
    ------
    ConfigError
        If a named set does not exist.
    """
    if names:
        out = []
        for name in names:
            path = name if name.endswith(".bin") else os.path.join(data_dir, name + ".bin")
            if not os.path.isfile(path):
                found = sorted(f[:-4] for f in os.listdir(data_dir) if f.endswith(".bin"))
                raise ConfigError(f"val_targets: {path} does not exist (sets in {data_dir}: "
                                  f"{', '.join(found) or 'none'})")
            out.append((os.path.basename(path)[:-4], path))
        return out
    found = sorted(f[:-4] for f in os.listdir(data_dir) if f.endswith(".bin"))
    ordered = [n for n in PREFERRED_TARGETS if n in found] + \
        [n for n in found if n not in PREFERRED_TARGETS]
    return [(n, os.path.join(data_dir, n + ".bin")) for n in ordered]


def _batchify(samples):
    data = onp.stack([s[0] for s in samples]).astype(onp.float32, copy=False)
    label = onp.asarray([s[1] for s in samples], dtype=onp.float32)
    return data, label


class _StopFlag:
    """SIGINT / SIGTERM handler that asks the loop to stop after the current step.

    SIGTERM is what batch schedulers and service managers send before they kill
    a job, so it is treated like Ctrl-C: the step finishes, the checkpoint is
    saved, the run ends.  A second signal raises :class:`KeyboardInterrupt` at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, previous in self._previous.items():
                signal.signal(s, previous)


@use_np
class FaceTrainer:
    """Builds everything a run needs from a :class:`TrainConfig`; :meth:`fit` trains.

    Attributes after construction: ``backbone``, ``head``, ``trainer``
    (:class:`mxnet.gluon.Trainer`), ``ctx`` (list of contexts), ``dataset``,
    ``num_classes``, ``steps_per_epoch``, ``step`` (global steps done),
    ``val_sets`` (name -> (images, issame)).

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

    Raises
    ------
    ConfigError, ValueError, CheckpointError
        For bad settings (unknown network or loss, missing data, batch size not
        divisible by the number of devices, a resume checkpoint that does not fit).
    """

    def __init__(self, config, log=None, progress=None, overwrite=False,
                 upgrade_checkpoint=False):
        import mxnet as mx

        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config.validate()
        self.log = log or logging.getLogger("gluon_face.training")
        self.progress = progress
        self.overwrite = bool(overwrite)
        self._upgrade_checkpoint = bool(upgrade_checkpoint)
        self._output_ready = False
        self._check_output()
        cfg = self.config

        from .embed import parse_ctx

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

    # ------------------------------------------------------------------ setup
    def _check_output(self):
        """Never destroy a run: see ``overwrite`` in the class doc."""
        cfg = self.config
        output = os.path.abspath(os.path.expanduser(cfg.output))
        if os.path.exists(output) and not os.path.isdir(output):
            raise ConfigError(f"output {output} is a file, not a folder")
        if cfg.data_dir is not None and _inside(output, cfg.data_dir):
            raise ConfigError(f"output {output} lies inside data_dir {cfg.data_dir}; a run "
                              "must not write into its training data")
        folder = None
        if cfg.resume:
            try:
                folder = load_checkpoint_state(cfg.resume)["folder"]
            except CheckpointError:
                folder = None  # reported by the resume itself
        if folder is not None and _inside(output, folder):
            raise ConfigError(f"output {output} lies inside the checkpoint {folder} it resumes "
                              "from; use the run's folder (the one holding checkpoints/)")
        if self.overwrite or not holds_run(output):
            return
        if cfg.resume and (folder is None or _inside(folder, output)):
            return  # continuing the run in its own folder
        if cfg.output == DEFAULT_OUTPUT:
            free = next_free_output(cfg.output)
            self.log.info("%s holds an earlier run (continue it with --resume %s); this run "
                          "goes to %s", cfg.output, cfg.output, free)
            self.config = cfg.replace(output=free)
            return
        raise ConfigError(f"output {output} already holds a run (config.yaml, metrics.csv or "
                          f"checkpoints/); continue it with --resume {cfg.output}, replace it "
                          "with --overwrite, or pick another --output")

    def prepare_output(self):
        """Create the output folder and write ``config.yaml`` (rank 0; :meth:`fit` calls it).

        With ``overwrite``, what an earlier run wrote there (:data:`RUN_FILES`) is
        removed first.  Done once; nothing is touched before it.
        """
        if self._output_ready or not self.is_writer:
            return
        if self.overwrite:
            for name in RUN_FILES:
                path = self._out(name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    os.remove(path)
        os.makedirs(self.config.output, exist_ok=True)
        self.config.to_yaml(self._out("config.yaml"))
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
        from ..data import FaceRecordDataset, FaceTransform, load_bin, read_dataset_info

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
        self.val_sets = {}
        if self.is_writer:
            for name, path in find_val_targets(data_dir, cfg.val_targets):
                images, issame = load_bin(path, image_size=self.image_size)
                self.val_sets[name] = (images, issame)
        self.identification = None
        if self.is_writer and cfg.val_identification not in (None, "none"):
            self.identification = _load_identification(cfg.val_identification,
                                                       self.image_size)
        if cfg.best_target is not None and self.is_writer \
                and cfg.best_target not in self.val_sets:
            raise ConfigError(f"best_target {cfg.best_target!r} is not a verification set "
                              f"of this run ({', '.join(self.val_sets) or 'none'})")

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
                    block._kwargs["use_global_stats"] = True
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
        (:func:`gluon_face.inference.to_split_prelu`); else the backbone itself.
        """
        from mxnet import np

        from ..inference import to_split_prelu
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
        with the gradients (seen as the workers' heads ~100x apart in about 1 run in 8).
        Broadcasting here, after the backward pass, and waiting for it keeps the pulls
        ahead of the pushes (also after ``--resume``).
        """
        if not self.config.kvstore.startswith("dist"):
            return
        trainer = self.trainer
        if not trainer._kv_initialized:
            trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
            _wait_all()

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
        self.history = [row for row in _read_history(self._out(METRICS_CSV))
                        if _as_int(row.get("step")) <= self.step]
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

    # ------------------------------------------------------------------ helpers
    def _out(self, *parts):
        return os.path.join(self.config.output, *parts)

    def _state(self):
        return {"epoch": self.step // self.steps_per_epoch, "step": self.step,
                "best_score": self.best_score,
                "best_target": self._best_target(),
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

    def _best_target(self):
        if self.config.best_target:
            return self.config.best_target
        return next(iter(self.val_sets), None)

    def _weight_sums(self):
        """``(name, sum)`` of every weight array (a NaN or inf anywhere shows in the sum)."""
        blocks = [self.backbone] if self.parallel else [self.backbone, self.head]
        for block in blocks:
            for name, param in block.collect_params().items():
                yield name, param.data(self.ctx[0]).sum()
        if self.parallel:
            for k, shard in enumerate(self.head.shards):
                yield f"fc7_weight shard {k} ({shard.ctx})", shard.weight.sum()

    def _check_weights_finite(self):
        """Raise :class:`TrainingDiverged` if any weight is NaN or infinite."""
        for name, total in self._weight_sums():
            if not math.isfinite(float(total.item())):
                raise self._diverged(f"weights are not finite ({name}) after step {self.step} "
                                     f"(epoch {self.epoch_of(self.step - 1)}); not saved")

    def _diverged(self, problem):
        """:class:`TrainingDiverged` for ``problem``, naming the checkpoint that is kept."""
        last = self._out("checkpoints", "last")
        kept = f"last good checkpoint: {last}" if os.path.isdir(last) else \
            "no checkpoint was saved yet"
        return TrainingDiverged(f"{problem}; {kept}. Try a lower --lr or a longer "
                                "--warmup-epochs")

    def save(self, which="last"):
        """Write the full state to ``<output>/checkpoints/<which>``; returns the folder.

        Raises
        ------
        TrainingDiverged
            If a weight is not finite (nothing is written then).
        """
        self._check_weights_finite()
        folder = self._out("checkpoints", which)
        state = self._state()
        save_checkpoint(folder, self.backbone, self.head, self.trainer, _jsonable(state),
                        self.config.to_yaml(), center=self.center, head_states=self.parallel)
        return folder

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
            raise self._diverged(f"loss is {value} at step {self.step + 1} (epoch "
                                 f"{self.epoch_of(self.step)}); stopped before updating the "
                                 "weights")
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

    def evaluate(self):
        """Verification on every ``.bin`` set: name -> evaluate_bin result dict.

        With an identification set (``val_identification``) its open-set metrics
        go to ``last_identification``.  Every distinct image is embedded once per
        round: the pair sets and the identification images share one cache.
        """
        from .embed import evaluate_bin

        results = {}
        if self.val_sets or self.identification is not None:
            self._check_weights_finite()
        embedder = self._embedder()
        cache = {}
        self.last_identification = None
        if self.identification is not None:
            self.last_identification = self._evaluate_identification(embedder, cache)
        per_image = 2 if self.config.flip_test else 1
        for name, (images, issame) in self.val_sets.items():
            bar = None
            if self.progress is not None:
                bar = self.progress(total=2 * per_image * len(issame), desc=f"verify {name}")
            with self._finite_embeddings(name):
                try:
                    res = evaluate_bin(embedder, images, issame, ctx_list=self._eval_ctx,
                                       batch_size=self.config.eval_batch_size,
                                       progress=bar.update if bar is not None else None,
                                       flip_test=self.config.flip_test, cache=cache)
                finally:
                    if bar is not None:
                        bar.close()
            results[name] = res
            score = res["score"]
            extra = f"no flip {res['noflip'].accuracy:.4f}" if res["flip_test"] else \
                "no flip test"
            self.log.info("verify %s (%d pairs): accuracy %.4f +- %.4f (%s), "
                          "VAL %.4f @ FAR %.4f, AUC %.4f", name, res["pairs"], score.accuracy,
                          score.accuracy_std, extra, score.val, score.far, score.auc)
        if self.last_identification is not None:
            self._log_identification(self.last_identification)
        self.last_results = results
        return results

    def _embedder(self):
        """The block verification embeds with, and ``self._eval_ctx``, its devices.

        On one CPU context of a hybridized run: a fused inference copy of the
        backbone (BatchNorm folded, oneDNN fusion; the same embeddings to float32
        rounding, made afresh each round from the current weights).  Otherwise the
        backbone itself on every context.
        """
        from mxnet import np

        from ..inference import prepare_embedder

        cfg = self.config
        self._eval_ctx = self.ctx
        if not (cfg.hybridize and len(self.ctx) == 1 and self.ctx[0].device_type == "cpu"):
            return self.backbone
        example = np.zeros((cfg.eval_batch_size, 3) + tuple(self.image_size), ctx=self.ctx[0])
        return prepare_embedder(self.backbone, example, mode="fused")

    @contextlib.contextmanager
    def _finite_embeddings(self, name):
        """Turn the evaluation's "not finite" error into :class:`TrainingDiverged`."""
        try:
            yield
        except ValueError as err:
            if "NaN" not in str(err) and "infinite" not in str(err):
                raise
            last = self._out("checkpoints", "last")
            kept = f"last good checkpoint: {last}" if os.path.isdir(last) else \
                "no checkpoint was saved yet"
            raise TrainingDiverged(
                f"the embeddings of {name} are not finite after step {self.step} (epoch "
                f"{self.epoch_of(self.step - 1)}); not saved; {kept}. Try a lower --lr "
                "or a longer --warmup-epochs") from None

    def _evaluate_identification(self, embedder, cache):
        """All-pairs TAR at FAR and 1:N identification on the open-set ``.rec``."""
        from .embed import evaluate_identities

        path, images, labels = self.identification
        bar = None
        if self.progress is not None:
            bar = self.progress(total=len(images) * (2 if self.config.flip_test else 1),
                                desc="identify")
        with self._finite_embeddings(os.path.basename(path)):
            try:
                res = evaluate_identities(embedder, images, labels, ctx_list=self._eval_ctx,
                                          batch_size=self.config.eval_batch_size,
                                          flip_test=self.config.flip_test, cache=cache,
                                          progress=bar.update if bar is not None else None)
            finally:
                if bar is not None:
                    bar.close()
        res["path"] = path
        return res

    def _log_identification(self, res):
        pairs, ident = res["all_pairs"], res["identification"]
        self.log.info("open set %s (%d images, %d identities): TAR %.4f @ FAR 1e-3 over %d "
                      "pairs, rank-1 %.4f, rank-5 %.4f, TPIR %.4f @ FPIR 1e-2",
                      res["path"], res["images"], res["identities"], pairs.tar_at_far[1e-3],
                      pairs.num_genuine + pairs.num_impostor, ident.rank[1], ident.rank[5],
                      ident.tpir_at_fpir.get(1e-2, float("nan")))

    def _record(self, row):
        self.history.append(row)
        if self.is_writer:
            _write_history(self._out(METRICS_CSV), self.history)

    def _evaluate_and_save(self):
        results = self.evaluate() if self.val_sets else {}
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch}
        for name, res in results.items():
            row[f"{name}_acc"] = res["score"].accuracy
            row[f"{name}_acc_noflip"] = res["noflip"].accuracy
        if self.last_identification is not None:
            pairs = self.last_identification["all_pairs"]
            row["open_tar_far1e-3"] = pairs.tar_at_far[1e-3]
            row["open_rank1"] = self.last_identification["identification"].rank[1]
        if len(row) > 2:
            self._record(row)
        improved = False
        target = self._best_target()
        if target in results:
            score = results[target]["score"].accuracy
            if self.best_score is None or score > self.best_score:
                self.best_score, improved = score, True
        if self.is_writer:
            last = self.save("last")
            if improved:
                copy_checkpoint(last, self._out("checkpoints", "best"))
                self.log.info("new best %s accuracy %.4f: saved %s", target, self.best_score,
                              self._out("checkpoints", "best"))
            self._plot(results)
        return results

    def _plot(self, results):
        from ..evaluation import plot_curves, plot_roc

        try:
            if self.history:
                plot_curves(_columns(self.history), path=self._out("curves.png"),
                            title=f"{self.config.network} + {self.config.loss}")
            if results:
                plot_roc({k: v["score"] for k, v in results.items()}, path=self._out("roc.png"),
                         title=f"ROC at step {self.step}")
        except (ValueError, OSError) as err:  # a figure never stops training
            self.log.warning("could not draw the plots: %s", err)

    # ------------------------------------------------------------------ loop
    def fit(self):
        """Train until ``epochs`` (or ``max_steps``) are done, Ctrl-C, or divergence.

        Returns
        -------
        dict
            ``status`` ('finished', 'max_steps', 'interrupted' (SIGINT) or
            'terminated' (SIGTERM)), ``step``,
            ``epoch``, ``first_loss``, ``last_loss``, ``best_score``,
            ``best_target``, ``verification`` {name: accuracy}, ``seconds``,
            ``output``, ``checkpoint``.

        Raises
        ------
        TrainingDiverged
            On a NaN or infinite loss (the last good checkpoint is kept).
        """
        from mxnet import gluon

        cfg = self.config
        self.prepare_output()
        spe = self.steps_per_epoch
        total = cfg.epochs * spe
        end = min(total, cfg.max_steps) if cfg.max_steps else total
        extra = ", ".join(f"{k}={v}" for k, v in sorted(cfg.model_kwargs.items()))
        self.log.info(
            "training %s%s + %s on %s: %d images, %d classes, %dx%d, batch %d on %s "
            "(kvstore %s, worker %d/%d), %d steps/epoch, %d epochs", cfg.network,
            f"({extra})" if extra else "", cfg.loss,
            self.data_dir, len(self.dataset), self.num_classes, self.image_size[0],
            self.image_size[1], cfg.batch_size, ",".join(str(c) for c in self.ctx), cfg.kvstore,
            self.rank, self.num_workers, spe, cfg.epochs)
        if self.parallel:
            self.log.info("model-parallel head: %r", self.head)
        if self.amp_dtype is not None:
            self.log.info("amp: the backbone computes in %s%s (float32 master weights)%s; "
                          "head, loss and verification (float32 backbone) in float32",
                          self.amp_dtype, " (AMX allowed)" if self.amx else "",
                          f", {self.loss_scaler!r}" if self.loss_scaler is not None else "")
        dataset = FlipDataset(self.dataset, self.transform)
        stop = _StopFlag()
        status = "finished"
        first_loss = last_loss = None
        started = time.time()
        window_start, window_steps, window_loss = time.time(), 0, 0.0
        saved_at = None
        with stop.installed():
            try:
                while self.step < end:
                    epoch = self.step // spe
                    sampler = EpochBatches(len(self.dataset), cfg.batch_size, epoch,
                                           seed=cfg.seed, flip=cfg.flip,
                                           start=self.step - epoch * spe,
                                           part=self.rank, num_parts=self.num_workers)
                    # num_workers=0: decode in one background thread, overlapped with
                    # the step (the decoders release the GIL); else worker processes
                    loader = gluon.data.DataLoader(dataset, batch_sampler=sampler,
                                                   batchify_fn=_batchify,
                                                   num_workers=cfg.num_workers or 1,
                                                   thread_pool=not cfg.num_workers)
                    for data, label in loader:
                        loss = self.train_step(data, label)
                        first_loss = loss if first_loss is None else first_loss
                        last_loss = loss
                        window_steps += 1
                        window_loss += loss
                        if self.step % cfg.log_interval == 0 or self.step == end:
                            now = time.time()
                            elapsed = max(now - window_start, 1e-9)
                            speed = window_steps * cfg.batch_size / elapsed
                            eta = (end - self.step) * (now - window_start) / window_steps
                            lr = self.trainer.learning_rate
                            self.log.info("epoch %d/%d step %d/%d | loss %.4f | lr %.5f | "
                                          "%.1f samples/s | ETA %s",
                                          self.epoch_of(self.step - 1), cfg.epochs, self.step,
                                          end, window_loss / window_steps, lr, speed,
                                          _fmt_seconds(eta))
                            self._record({"step": self.step, "epoch": self.step / spe,
                                          "lr": lr, "loss": window_loss / window_steps,
                                          "samples_per_sec": speed})
                            window_start, window_steps, window_loss = time.time(), 0, 0.0
                        epoch_end = self.step % spe == 0
                        if epoch_end or (cfg.verbose and self.step % cfg.verbose == 0):
                            self._evaluate_and_save()
                            saved_at = self.step
                            # evaluation time is not training speed
                            window_start = time.time()
                        if stop.requested or self.step >= end:
                            break
                    if stop.requested:
                        status = "terminated" if stop.signum == signal.SIGTERM \
                            else "interrupted"
                        break
                if status == "finished" and end < total:
                    status = "max_steps"
            finally:
                # A distributed worker must not leave (or save) with pushes still queued:
                # MXNet 1.9.1 then waits forever at exit and rank 0 in its final save.
                _wait_all()
            if self.is_writer and saved_at != self.step:
                self.save("last")
        if status in ("interrupted", "terminated"):
            self.log.warning("%s at step %d: saved %s; continue with --resume %s", status,
                             self.step, self._out("checkpoints", "last"), cfg.output)
        summary = {
            "status": status, "step": self.step, "epoch": self.step / spe,
            "first_loss": first_loss, "last_loss": last_loss,
            "best_score": self.best_score, "best_target": self._best_target(),
            "verification": {k: v["score"].accuracy for k, v in self.last_results.items()},
            "identification": None if self.last_identification is None else {
                "tar_at_far": dict(self.last_identification["all_pairs"].tar_at_far),
                "rank1": self.last_identification["identification"].rank[1],
                "rank5": self.last_identification["identification"].rank[5]},
            "seconds": time.time() - started, "output": os.path.abspath(cfg.output),
            "checkpoint": self._out("checkpoints", "last") if self.is_writer else None,
        }
        return summary


def _load_identification(path, image_size):
    """``(path, images (N, H, W, 3) uint8, labels (N,))`` of an identification ``.rec``."""
    from ..data import FaceRecordDataset
    from ..data._image import resize_image

    if not os.path.exists(path):
        raise ConfigError(f"val_identification {path}: no such file or folder")
    dataset = FaceRecordDataset(path)
    rec = dataset.rec_path
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        if image.shape[:2] != tuple(image_size):
            image = resize_image(image, tuple(image_size))
        images.append(image)
        labels.append(label)
    if not images:
        raise ConfigError(f"val_identification {rec}: no images")
    return rec, onp.stack(images), onp.asarray(labels, dtype=onp.int64)


def _wait_all():
    import mxnet as mx

    mx.nd.waitall()


def train(config, log=None, progress=None):
    """Train with ``config``; see :class:`FaceTrainer` and :meth:`FaceTrainer.fit`.

    Returns the summary dict of :meth:`FaceTrainer.fit`.
    """
    return FaceTrainer(config, log=log, progress=progress).fit()


# ----------------------------------------------------------------------------- utilities
def _has_prelu(block):
    from mxnet.gluon import nn

    return any(isinstance(b, nn.PReLU) for b in _walk(block))


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


def _fmt_seconds(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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


def _columns(rows):
    keys = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return {k: [row.get(k) for row in rows] for k in keys}


def _write_history(path, rows):
    keys = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in keys})


def _read_history(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            if v in ("", None):
                continue
            try:
                parsed[k] = float(v)
            except ValueError:
                parsed[k] = v
        out.append(parsed)
    return out


def _as_int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def holds_run(folder):
    """Whether ``folder`` holds (part of) a training run: config.yaml, metrics.csv or
    checkpoints/."""
    return os.path.isdir(folder) and any(
        os.path.lexists(os.path.join(folder, name))
        for name in ("config.yaml", METRICS_CSV, "checkpoints"))


def next_free_output(folder):
    """``folder-2``, ``folder-3``, ...: the first that does not hold a run."""
    n = 2
    while holds_run(f"{folder}-{n}") or os.path.isfile(f"{folder}-{n}"):
        n += 1
    return f"{folder}-{n}"


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def split_prelu_for(ctx_list):
    """``split_prelu``'s automatic value for the devices ``ctx_list``: on for CPUs only.

    The split is a CPU workaround (MXNet 1.9.1's CPU PReLU has no oneDNN kernel);
    on a GPU PReLU is a native kernel and the split graph only holds extra buffers.
    """
    return all(ctx.device_type == "cpu" for ctx in ctx_list)
