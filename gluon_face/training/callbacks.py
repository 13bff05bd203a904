"""What happens around a training step: logging, verification, checkpoints, plots, signals.

:meth:`FaceTrainer.fit <gluon_face.training.FaceTrainer.fit>` is a plain loop over
:meth:`~gluon_face.training.FaceTrainer.train_step`; everything else a run does is a
:class:`Callback` the loop calls at fixed points::

    on_train_begin(trainer, run)
    for each epoch:   on_epoch_begin(trainer, epoch)
        for each step:    train_step(data, label); on_step_end(trainer, info)
        (epoch done)      on_epoch_end(trainer, epoch)
    on_train_end(trainer, run)             # always, also when the run fails

Every hook is called on every callback in list order before the next hook.
The built-in callbacks (:func:`default_callbacks`), in their order:

* :class:`ProgressLog` - the header, a log line every ``log_interval`` steps
  (loss, lr, speed, ETA) and its row in ``metrics.csv``;
* :class:`Verification` - at each evaluation point (end of an epoch, every
  ``verbose`` steps) the ``.bin`` pairs and the open-set identification set,
  their log lines and ``metrics.csv`` row, and the best score;
* :class:`Checkpoints` - ``checkpoints/last`` at each evaluation point and at
  the end of the run, ``checkpoints/best`` when the best score improved;
* :class:`Plots` - ``curves.png`` and ``roc.png`` at each evaluation point;
* :class:`SignalStop` - Ctrl-C or SIGTERM ends the run after the current step
  (the end-of-run checkpoint is still written).

A user's callbacks come after these, so they see the step's metrics row, its
verification results and its checkpoint; :meth:`FaceTrainer.request_stop
<gluon_face.training.FaceTrainer.request_stop>` ends the run after the current step.

Divergence is not a callback: a non-finite loss is caught inside ``train_step``
before the update, non-finite weights inside ``save`` and ``evaluate``, so those
public methods keep refusing a diverged model when they are called without
:meth:`fit`.  The checks are :func:`check_weights_finite`, :func:`diverged` and
:func:`finite_embeddings` here.

Library code never prints: callbacks log through ``trainer.log``.
"""
import contextlib
import dataclasses
import math
import os
import signal
import threading

import numpy as onp

from .._signals import owned_handler
from .checkpoint import copy_checkpoint
from .config import ConfigError
from .run_folder import history_columns

__all__ = ["Callback", "StepInfo", "RunInfo", "default_callbacks", "ProgressLog",
           "Verification", "Checkpoints", "Plots", "SignalStop", "TrainingDiverged",
           "find_val_targets"]

#: Verification sets looked for first (in this order); then every other *.bin, sorted.
PREFERRED_TARGETS = ("lfw", "cfp_fp", "agedb_30", "open_set")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


@dataclasses.dataclass
class StepInfo:
    """A finished step, as :meth:`Callback.on_step_end` receives it.

    Attributes
    ----------
    step : int
        Global steps done, this one included (``trainer.step``).
    epoch : int
        1-based epoch this step belongs to.
    loss : float
        Mean loss of the step's batch.
    seconds : float
        Wall time of the step outside the callbacks: waiting for its batch and
        ``train_step``.  Time spent in callbacks (verification, saving) is not
        training speed, so :class:`ProgressLog` measures with this.
    epoch_end : bool
        The step completed an epoch.
    evaluate : bool
        An evaluation point: the end of an epoch or a multiple of ``verbose``.
    last : bool
        The run's last step (``epochs`` or ``max_steps`` reached).
    new_best : bool
        Set by :class:`Verification` when the best target's accuracy improved at
        this step; :class:`Checkpoints` then writes ``checkpoints/best``.
    """

    step: int
    epoch: int
    loss: float
    seconds: float
    epoch_end: bool
    evaluate: bool
    last: bool
    new_best: bool = False


@dataclasses.dataclass
class RunInfo:
    """One :meth:`fit` call, as :meth:`Callback.on_train_begin` and ``on_train_end`` see it.

    Attributes
    ----------
    start_step : int
        ``trainer.step`` when the run began (non-zero after ``resume``).
    end_step : int
        The step the run ends at: ``epochs`` or ``max_steps``, the smaller.
    total_steps : int
        ``epochs * steps_per_epoch``.
    started : float
        ``time.time()`` at the start.
    first_loss, last_loss : float or None
        Losses of the run's first and latest step (None before any step).
    status : str or None
        None while training; then 'finished', 'max_steps', or the status of the
        stop request ('interrupted', 'terminated', 'stopped', ...).
    error : BaseException or None
        In ``on_train_end``: the exception ending the run, else None.
    """

    start_step: int
    end_step: int
    total_steps: int
    started: float
    first_loss: float = None
    last_loss: float = None
    status: str = None
    error: BaseException = None


class Callback:
    """Base class of the loop's callbacks: every hook does nothing.

    Override the hooks needed and pass instances as ``FaceTrainer(...,
    callbacks=[...])``.  Hooks run on every worker of a distributed run; what
    only rank 0 should do is guarded by ``trainer.is_writer``.  A hook may call
    ``trainer.request_stop(reason)`` to end the run after the current step.
    """

    def on_train_begin(self, trainer, run):
        """Before the first step of :meth:`fit`, once ``prepare_output`` ran.

        Parameters
        ----------
        trainer : FaceTrainer
        run : RunInfo
        """

    def on_epoch_begin(self, trainer, epoch):
        """Before the first step of ``epoch`` (1-based), also of one resumed part-way."""

    def on_step_end(self, trainer, info):
        """After each step.

        Parameters
        ----------
        trainer : FaceTrainer
            ``trainer.step`` is ``info.step``.
        info : StepInfo
        """

    def on_epoch_end(self, trainer, epoch):
        """After the ``on_step_end`` hooks of the step that completed ``epoch`` (1-based).

        Not called for an epoch cut short by ``max_steps`` or a stop request.
        """

    def on_train_end(self, trainer, run):
        """Once, when the loop is over, like a ``finally`` clause.

        On a normal end (``run.error`` is None) ``run.status`` is final.  When
        the run fails (divergence, an error in a hook, a second Ctrl-C)
        ``run.error`` holds the exception, which propagates after every
        callback's ``on_train_end`` has run.
        """


def default_callbacks():
    """The built-in callbacks of a run, in order (see the module doc)."""
    return [ProgressLog(), Verification(), Checkpoints(), Plots(), SignalStop()]


# ----------------------------------------------------------------------------- log lines
class ProgressLog(Callback):
    """The run's header, and every ``log_interval`` steps (and at the last step) a
    log line and a ``metrics.csv`` row: loss and speed averaged since the last line."""

    def on_train_begin(self, trainer, run):
        cfg = trainer.config
        self._end = run.end_step
        self._steps, self._loss, self._seconds = 0, 0.0, 0.0
        extra = ", ".join(f"{k}={v}" for k, v in sorted(cfg.model_kwargs.items()))
        trainer.log.info(
            "training %s%s + %s on %s: %d images, %d classes, %dx%d, batch %d on %s "
            "(kvstore %s, worker %d/%d), %d steps/epoch, %d epochs", cfg.network,
            f"({extra})" if extra else "", cfg.loss,
            trainer.data_dir, len(trainer.dataset), trainer.num_classes,
            trainer.image_size[0], trainer.image_size[1], cfg.batch_size,
            ",".join(str(c) for c in trainer.ctx), cfg.kvstore, trainer.rank,
            trainer.num_workers, trainer.steps_per_epoch, cfg.epochs)
        if trainer.parallel:
            trainer.log.info("model-parallel head: %r", trainer.head)
        if trainer.amp_dtype is not None:
            trainer.log.info("amp: the backbone computes in %s%s (float32 master weights)%s; "
                             "head, loss and verification (float32 backbone) in float32",
                             trainer.amp_dtype, " (AMX allowed)" if trainer.amx else "",
                             f", {trainer.loss_scaler!r}"
                             if trainer.loss_scaler is not None else "")

    def on_step_end(self, trainer, info):
        cfg = trainer.config
        self._steps += 1
        self._loss += info.loss
        self._seconds += info.seconds
        if info.step % cfg.log_interval and not info.last:
            return
        seconds = max(self._seconds, 1e-9)
        speed = self._steps * cfg.batch_size / seconds
        eta = (self._end - info.step) * seconds / self._steps
        lr = trainer.trainer.learning_rate
        loss = self._loss / self._steps
        trainer.log.info("epoch %d/%d step %d/%d | loss %.4f | lr %.5f | %.1f samples/s | "
                         "ETA %s", info.epoch, cfg.epochs, info.step, self._end, loss, lr,
                         speed, _fmt_seconds(eta))
        trainer.record({"step": info.step, "epoch": info.step / trainer.steps_per_epoch,
                        "lr": lr, "loss": loss, "samples_per_sec": speed})
        self._steps, self._loss, self._seconds = 0, 0.0, 0.0


def _fmt_seconds(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------- verification
class Verification(Callback):
    """At each evaluation point: :meth:`FaceTrainer.evaluate`, its ``metrics.csv`` row
    (``<set>_acc``, ``<set>_acc_noflip``, ``open_tar_far1e-3``, ``open_rank1``) and
    the best score of ``trainer.best_target`` (``trainer.best_score``).

    The sets are the trainer's ``val_sets`` and ``identification``, loaded with it
    (:func:`load_evaluation_sets`) on rank 0 only; the other workers skip this.
    """

    def on_step_end(self, trainer, info):
        if not info.evaluate:
            return
        results = trainer.evaluate() if trainer.val_sets else {}
        row = {"step": info.step, "epoch": info.step / trainer.steps_per_epoch}
        for name, res in results.items():
            row[f"{name}_acc"] = res["score"].accuracy
            row[f"{name}_acc_noflip"] = res["noflip"].accuracy
        if trainer.last_identification is not None:
            pairs = trainer.last_identification["all_pairs"]
            row["open_tar_far1e-3"] = pairs.tar_at_far[1e-3]
            row["open_rank1"] = trainer.last_identification["identification"].rank[1]
        if len(row) > 2:
            trainer.record(row)
        target = trainer.best_target
        if target in results:
            score = results[target]["score"].accuracy
            if trainer.best_score is None or score > trainer.best_score:
                trainer.best_score, info.new_best = score, True


def load_evaluation_sets(config, data_dir, image_size):
    """The verification pairs and the identification set a run evaluates on.

    Loaded when the trainer is built, so a missing or broken set fails before
    any training.

    Parameters
    ----------
    config : TrainConfig
        ``val_targets``, ``val_identification`` (resolved) and ``best_target``.
    data_dir : str
        The training data folder, where the ``.bin`` sets are looked for.
    image_size : tuple of int
        ``(H, W)`` the images are resized to.

    Returns
    -------
    val_sets : dict
        name -> ``(images, issame)``, in :func:`find_val_targets` order.
    identification : tuple or None
        ``(path, images, labels)`` (:func:`load_identification`).

    Raises
    ------
    ConfigError
        For a missing set, or a ``best_target`` that is not one of the sets.
    """
    from ..data import load_bin

    val_sets = {}
    for name, path in find_val_targets(data_dir, config.val_targets):
        images, issame = load_bin(path, image_size=image_size)
        val_sets[name] = (images, issame)
    identification = None
    if config.val_identification not in (None, "none"):
        identification = load_identification(config.val_identification, image_size)
    if config.best_target is not None and config.best_target not in val_sets:
        raise ConfigError(f"best_target {config.best_target!r} is not a verification set "
                          f"of this run ({', '.join(val_sets) or 'none'})")
    return val_sets, identification


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


def load_identification(path, image_size):
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


def run_evaluation(trainer):
    """What :meth:`FaceTrainer.evaluate` does; see there."""
    from ..evaluation import evaluate_bin

    results = {}
    if trainer.val_sets or trainer.identification is not None:
        check_weights_finite(trainer)
    embedder, ctx_list = _embedder(trainer)
    cache = {}
    trainer.last_identification = None
    if trainer.identification is not None:
        trainer.last_identification = _evaluate_identification(trainer, embedder, ctx_list,
                                                               cache)
    cfg = trainer.config
    per_image = 2 if cfg.flip_test else 1
    for name, (images, issame) in trainer.val_sets.items():
        bar = None
        if trainer.progress is not None:
            bar = trainer.progress(total=2 * per_image * len(issame), desc=f"verify {name}")
        with finite_embeddings(trainer, name):
            try:
                res = evaluate_bin(embedder, images, issame, ctx_list=ctx_list,
                                   batch_size=cfg.eval_batch_size,
                                   progress=bar.update if bar is not None else None,
                                   flip_test=cfg.flip_test, cache=cache)
            finally:
                if bar is not None:
                    bar.close()
        results[name] = res
        score = res["score"]
        extra = f"no flip {res['noflip'].accuracy:.4f}" if res["flip_test"] else \
            "no flip test"
        trainer.log.info("verify %s (%d pairs): accuracy %.4f +- %.4f (%s), "
                         "VAL %.4f @ FAR %.4f, AUC %.4f", name, res["pairs"], score.accuracy,
                         score.accuracy_std, extra, score.val, score.far, score.auc)
    if trainer.last_identification is not None:
        _log_identification(trainer.log, trainer.last_identification)
    trainer.last_results = results
    return results


def _embedder(trainer):
    """The block verification embeds with, and the devices it runs on.

    On CPU contexts of a hybridized run: a fused inference copy of the
    backbone (BatchNorm folded, oneDNN fusion; the same embeddings to float32
    rounding, made afresh each round from the current weights) on the first
    context only: CPU contexts share the same cores, and one fused graph is
    several times faster than the plain backbone on each.  Otherwise (GPUs,
    or a run that is not hybridized) the backbone itself on every context.
    """
    from mxnet import np

    from ..graph.embedder import prepare_embedder

    cfg = trainer.config
    ctx = trainer.ctx
    if not (cfg.hybridize and all(c.device_type == "cpu" for c in ctx)):
        return trainer.backbone, ctx
    example = np.zeros((cfg.eval_batch_size, 3) + tuple(trainer.image_size), ctx=ctx[0])
    return prepare_embedder(trainer.backbone, example, mode="fused"), ctx[:1]


def _evaluate_identification(trainer, embedder, ctx_list, cache):
    """All-pairs TAR at FAR and 1:N identification on the open-set ``.rec``."""
    from ..evaluation import evaluate_identities

    cfg = trainer.config
    path, images, labels = trainer.identification
    bar = None
    if trainer.progress is not None:
        bar = trainer.progress(total=len(images) * (2 if cfg.flip_test else 1),
                               desc="identify")
    with finite_embeddings(trainer, os.path.basename(path)):
        try:
            res = evaluate_identities(embedder, images, labels, ctx_list=ctx_list,
                                      batch_size=cfg.eval_batch_size,
                                      flip_test=cfg.flip_test, cache=cache,
                                      progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    res["path"] = path
    return res


def _log_identification(log, res):
    pairs, ident = res["all_pairs"], res["identification"]
    log.info("open set %s (%d images, %d identities): TAR %.4f @ FAR 1e-3 over %d "
             "pairs, rank-1 %.4f, rank-5 %.4f, TPIR %.4f @ FPIR 1e-2",
             res["path"], res["images"], res["identities"], pairs.tar_at_far[1e-3],
             pairs.num_genuine + pairs.num_impostor, ident.rank[1], ident.rank[5],
             ident.tpir_at_fpir.get(1e-2, float("nan")))


# ----------------------------------------------------------------------------- checkpoints
class Checkpoints(Callback):
    """``checkpoints/last`` at each evaluation point and at the end of the run (unless
    the last step was just saved); ``checkpoints/best``, a copy of it, when
    :class:`Verification` found a new best.  Rank 0 only.

    Nothing is written when the run fails: the last good checkpoint stays.
    """

    def __init__(self):
        self._saved_step = None

    def on_train_begin(self, trainer, run):
        self._saved_step = None

    def on_step_end(self, trainer, info):
        if not info.evaluate:
            return
        if trainer.is_writer:
            last = trainer.save("last")
            if info.new_best:
                best = os.path.join(trainer.config.output, "checkpoints", "best")
                copy_checkpoint(last, best)
                trainer.log.info("new best %s accuracy %.4f: saved %s", trainer.best_target,
                                 trainer.best_score, best)
        self._saved_step = info.step

    def on_train_end(self, trainer, run):
        if run.error is None and trainer.is_writer and self._saved_step != trainer.step:
            trainer.save("last")


# ----------------------------------------------------------------------------- plots
class Plots(Callback):
    """``curves.png`` (the ``metrics.csv`` columns) and ``roc.png`` (the latest
    verification) at each evaluation point; rank 0 only.  A plot that cannot be
    drawn is a warning, never the end of the run."""

    def on_step_end(self, trainer, info):
        if not (info.evaluate and trainer.is_writer):
            return
        from ..evaluation import plot_curves, plot_roc

        cfg = trainer.config
        results = trainer.last_results
        try:
            if trainer.history:
                plot_curves(history_columns(trainer.history),
                            path=os.path.join(cfg.output, "curves.png"),
                            title=f"{cfg.network} + {cfg.loss}")
            if results:
                plot_roc({k: v["score"] for k, v in results.items()},
                         path=os.path.join(cfg.output, "roc.png"),
                         title=f"ROC at step {info.step}")
        except (ValueError, OSError) as err:
            trainer.log.warning("could not draw the plots: %s", err)


# ----------------------------------------------------------------------------- signals
class _StopFlag:
    """SIGINT / SIGTERM handler that asks the loop to stop after the current step.

    SIGTERM is what batch schedulers and service managers send before they kill
    a job, so it is treated like Ctrl-C: the step finishes, the checkpoint is
    saved, the run ends.  A second signal raises :class:`KeyboardInterrupt` at once.

    Parameters
    ----------
    on_request : callable, optional
        ``on_request(signum)``, called by the first signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_request=None):
        self.requested = False
        self.signum = None
        self._on_request = on_request
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        if self._on_request is not None:
            self._on_request(signum)

    @contextlib.contextmanager
    def installed(self):
        # signal.signal only works in the main thread; elsewhere the caller's
        # handlers stay in charge
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        # owned: a data-loader worker forked during the run must still die of the
        # SIGTERM its pool ends it with
        handle = owned_handler(self._handle)
        self._previous = {s: signal.signal(s, handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, previous in self._previous.items():
                signal.signal(s, previous)


class SignalStop(Callback):
    """Ctrl-C (status 'interrupted') or SIGTERM ('terminated') ends the run after the
    current step, with the usual end-of-run checkpoint; a second signal stops at once.

    The handlers are installed from ``on_train_begin`` to ``on_train_end``, so
    callbacks before this one save their end-of-run state with them still in place.
    """

    STATUS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

    def __init__(self):
        self._installed = None

    def on_train_begin(self, trainer, run):
        def request(signum):
            trainer.request_stop(signal.Signals(signum).name, status=self.STATUS[signum])

        self._installed = contextlib.ExitStack()
        self._installed.enter_context(_StopFlag(request).installed())

    def on_train_end(self, trainer, run):
        installed, self._installed = self._installed, None
        if installed is not None:
            installed.close()
        if run.error is None and run.status in self.STATUS.values():
            cfg = trainer.config
            trainer.log.warning("%s at step %d: saved %s; continue with --resume %s",
                                run.status, trainer.step,
                                os.path.join(cfg.output, "checkpoints", "last"), cfg.output)


# ----------------------------------------------------------------------------- divergence
def _weight_sums(trainer):
    """``(name, sum)`` of every weight array (a NaN or inf anywhere shows in the sum)."""
    blocks = [trainer.backbone] if trainer.parallel else [trainer.backbone, trainer.head]
    for block in blocks:
        for name, param in block.collect_params().items():
            yield name, param.data(trainer.ctx[0]).sum()
    if trainer.parallel:
        for k, shard in enumerate(trainer.head.shards):
            yield f"fc7_weight shard {k} ({shard.ctx})", shard.weight.sum()


def check_weights_finite(trainer):
    """Raise :class:`TrainingDiverged` if any weight of ``trainer`` is NaN or infinite."""
    for name, total in _weight_sums(trainer):
        if not math.isfinite(float(total.item())):
            epoch = trainer.epoch_of(trainer.step - 1)
            raise diverged(trainer, f"weights are not finite ({name}) after step "
                                    f"{trainer.step} (epoch {epoch}); not saved")


def diverged(trainer, problem):
    """:class:`TrainingDiverged` for ``problem``, naming the checkpoint that is kept."""
    return TrainingDiverged(f"{problem}; {_kept(trainer)}. Try a lower --lr or a longer "
                            "--warmup-epochs")


def _kept(trainer):
    last = os.path.join(trainer.config.output, "checkpoints", "last")
    return f"last good checkpoint: {last}" if os.path.isdir(last) else \
        "no checkpoint was saved yet"


@contextlib.contextmanager
def finite_embeddings(trainer, name):
    """Turn an evaluation's "not finite" error into :class:`TrainingDiverged`."""
    try:
        yield
    except ValueError as err:
        if "NaN" not in str(err) and "infinite" not in str(err):
            raise
        raise TrainingDiverged(
            f"the embeddings of {name} are not finite after step {trainer.step} (epoch "
            f"{trainer.epoch_of(trainer.step - 1)}); not saved; {_kept(trainer)}. Try a "
            "lower --lr or a longer --warmup-epochs") from None
