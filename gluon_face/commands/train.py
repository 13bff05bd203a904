"""Train a face-recognition model: ``python tools/train.py [--loss cosface] [...]``.

With no arguments it trains the default job (gluon_face/configs/default.yaml) on
the built-in glyph identities (built on first use) and reports verification
accuracy on identities it never saw, TAR at FAR over all their pairs and rank-1
identification.
``--config FILE_OR_PRESET`` replaces the defaults, flags override both; every
flag is a key of :class:`gluon_face.training.TrainConfig`.

Exit codes: 0 done, 2 bad arguments, data or checkpoint, 3 the loss diverged,
130 interrupted with Ctrl-C, 143 stopped by SIGTERM (in both cases after the
current step, with a checkpoint saved: continue with --resume; a second signal
stops at once, keeping the last checkpoint).

A run is never overwritten: an --output folder that already holds one is
refused (continue it with --resume, replace it with --overwrite), except the
default runs/default, which moves on to runs/default-2, -3, ...

Several machines (parameter-server kvstore), e.g. 2 workers and 2 servers on the
hosts of an ssh hosts file, with this repository's launcher (MXNet's command line;
the wheel's own launcher dies on Python >= 3.9, see the README)::

    python tools/launch.py -n 2 -s 2 -H hosts \\
        python tools/train.py --kvstore dist_sync --data-dir /data/faces_emore --ctx gpu:0,1

``python tools/launch.py -n 2 -s 1 python tools/train.py --kvstore dist_sync`` tries
it on this machine (127.0.0.1).
"""
import argparse
import logging
import os
import sys


def _progress_factory():
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        return None

    def make(total, desc):
        return tqdm(total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())
    return make


def _configure_logging(verbosity):
    logger = logging.getLogger("gluon_face")
    logger.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger


def _add_file_log(logger, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return handler


def build_parser():
    from gluon_face.training.config import add_arguments

    parser = argparse.ArgumentParser(
        prog="train.py", allow_abbrev=False,
        description="Train a backbone + margin head on insightface-format data (default: the "
        "built-in glyph identities). Every flag is a TrainConfig key.")
    add_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --output (default: refuse, or the "
                        "next free name for the default output)")
    parser.add_argument("--upgrade-checkpoint", action="store_true",
                        help="with --resume: convert a checkpoint of the older layout, whose "
                        "optimizer state is a pickle (this unpickles it: trusted sources only)")
    parser.add_argument("-v", "--debug", action="count", default=0, help="more log output")
    return parser


def main(argv=None) -> int:
    try:
        parser = build_parser()
    except ImportError as err:  # MXNet missing or numpy too new
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    debug, overwrite, upgrade = args.debug, args.overwrite, args.upgrade_checkpoint
    del args.debug, args.overwrite, args.upgrade_checkpoint
    from gluon_face._cli import install_stop_signals
    from gluon_face.commands._report import stopped

    install_stop_signals()  # outside the training loop, which handles both itself
    try:
        return _run(args, debug, overwrite, upgrade)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM before or after the loop
        return stopped("train.py", err, "the last saved checkpoint is kept")


def _run(args, debug, overwrite, upgrade):
    import mxnet as mx

    from gluon_face._mxnet import error_message
    from gluon_face.data import RecordFormatError
    from gluon_face.training import (
        CheckpointError,
        ConfigError,
        FaceTrainer,
        TrainingDiverged,
    )
    from gluon_face.training.config import config_from_args

    try:
        config = config_from_args(args)
    except ConfigError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    logger = _configure_logging(debug)
    log = logging.getLogger("gluon_face.training")
    bad_input = (ConfigError, CheckpointError, RecordFormatError, ValueError, OSError,
                 mx.base.MXNetError)
    try:
        trainer = FaceTrainer(config, log=log, progress=_progress_factory(),
                              overwrite=overwrite, upgrade_checkpoint=upgrade)
    except bad_input as err:
        print(f"train.py: error: {error_message(err)}", file=sys.stderr)
        return 2
    file_handler = None
    try:
        trainer.prepare_output()
        if trainer.is_writer:
            file_handler = _add_file_log(logger, os.path.join(trainer.config.output,
                                                              "train.log"))
        summary = trainer.fit()
    except TrainingDiverged as err:
        log.error("%s", err)
        print(f"train.py: error: {err}", file=sys.stderr)
        return 3
    except bad_input as err:
        print(f"train.py: error: {error_message(err)}", file=sys.stderr)
        return 2
    finally:
        if file_handler is not None:
            logger.removeHandler(file_handler)
            file_handler.close()
    if not trainer.is_writer:
        return 0
    if summary["first_loss"] is None:
        print(f"nothing to train: the run is already at step {summary['step']} "
              f"({summary['epoch']:.2f} epochs); raise --epochs to continue")
    else:
        print(f"{summary['status']} after {summary['step']} steps ({summary['epoch']:.2f} "
              f"epochs) in {summary['seconds']:.0f} s; loss {summary['first_loss']:.4f} -> "
              f"{summary['last_loss']:.4f}")
    for name, acc in summary["verification"].items():
        print(f"verification accuracy {name}: {acc:.4f}")
    ident = summary.get("identification")
    if ident:
        print(f"open-set identities: TAR {ident['tar_at_far'][1e-3]:.4f} @ FAR 1e-3 over all "
              f"pairs, rank-1 {ident['rank1']:.4f}, rank-5 {ident['rank5']:.4f}")
    if summary["best_score"] is not None:
        print(f"best {summary['best_target']}: {summary['best_score']:.4f}")
    print(f"outputs in {summary['output']} (checkpoints/last, checkpoints/best, metrics.csv, "
          "curves.png, roc.png, config.yaml, train.log)")
    return {"interrupted": 130, "terminated": 143}.get(summary["status"], 0)

