#!/usr/bin/env python
"""Train a face-recognition model: ``python tools/train.py [--loss cosface] [...]``.

With no arguments it trains the default job (gluon_face/configs/default.yaml) on
the built-in glyph identities (built on first use) and reports verification
accuracy on identities it never saw, TAR at FAR over all their pairs and rank-1
identification.
``--config FILE_OR_PRESET`` replaces the defaults, flags override both; every
flag is a key of :class:`gluon_face.training.TrainConfig`.

Exit codes: 0 done, 2 bad arguments or data, 3 the loss diverged,
130 interrupted with Ctrl-C (a checkpoint was saved: continue with --resume).

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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        prog="train.py", description="Train a backbone + margin head on insightface-format "
        "data (default: the built-in glyph identities). Every flag is a TrainConfig key.")
    add_arguments(parser)
    parser.add_argument("-v", "--debug", action="count", default=0, help="more log output")
    return parser


def main(argv=None) -> int:
    try:
        parser = build_parser()
    except ImportError as err:  # MXNet missing or numpy too new
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    debug = args.debug
    del args.debug

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
    try:
        trainer = FaceTrainer(config, log=log, progress=_progress_factory())
    except (ConfigError, CheckpointError, RecordFormatError, ValueError, OSError) as err:
        print(f"train.py: error: {_one_line(err)}", file=sys.stderr)
        return 2
    file_handler = _add_file_log(logger, os.path.join(config.output, "train.log")) \
        if trainer.is_writer else None
    try:
        summary = trainer.fit()
    except TrainingDiverged as err:
        log.error("%s", err)
        print(f"train.py: error: {err}", file=sys.stderr)
        return 3
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
    return 130 if summary["status"] == "interrupted" else 0


def _one_line(err):
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
