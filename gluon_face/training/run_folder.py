"""A run's output folder: what it holds, never clobbering an earlier run, ``metrics.csv``.

A run writes ``config.yaml``, ``metrics.csv`` (one row per log line and per
verification, see :mod:`.callbacks`), ``checkpoints/last`` and ``checkpoints/best``,
the plots and (from the tool) ``train.log`` into ``config.output``.  A folder
holding any of the first three is a run: :func:`check_output` refuses to train
into it unless the run is being continued or replaced on purpose.
"""
import csv
import os
import shutil

from .._io import atomic_open
from .checkpoint import CheckpointError, load_checkpoint_state
from .config import ConfigError, TrainConfig

__all__ = ["METRICS_CSV", "RUN_FILES", "check_output", "holds_run", "next_free_output",
           "prepare_output", "read_history", "write_history", "history_columns"]

METRICS_CSV = "metrics.csv"
DEFAULT_OUTPUT = TrainConfig().output
#: What a run writes into its output folder (``train.log`` comes from tools/train.py).
RUN_FILES = ("checkpoints", "config.yaml", METRICS_CSV, "curves.png", "roc.png", "train.log")


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


def check_output(config, overwrite, log):
    """The config to train with: ``config`` or, for a busy default folder, a free one.

    Never destroys a run: a folder that holds one is accepted only with
    ``overwrite`` or when ``config.resume`` continues that very run; the default
    output folder moves on to the next free name; any other folder is refused.

    Parameters
    ----------
    config : TrainConfig
    overwrite : bool
    log : logging.Logger
        Told when the default folder moves on.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ConfigError
        For an output that is a file, lies inside the training data or the
        resumed checkpoint, overlaps the pretrained checkpoint, or already holds
        another run.
    """
    cfg = config
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
    if cfg.pretrained:
        try:
            start = load_checkpoint_state(cfg.pretrained)["folder"]
        except CheckpointError:
            start = None  # reported when the backbone is loaded
        if start is not None and (_inside(output, start) or _inside(start, output)):
            raise ConfigError(f"output {output} and the pretrained checkpoint {start} overlap; "
                              "a new run must not write into (or replace) what it starts from")
    if overwrite or not holds_run(output):
        return cfg
    if cfg.resume and (folder is None or _inside(folder, output)):
        return cfg  # continuing the run in its own folder
    if cfg.output == DEFAULT_OUTPUT:
        free = next_free_output(cfg.output)
        log.info("%s holds an earlier run (continue it with --resume %s); this run "
                 "goes to %s", cfg.output, cfg.output, free)
        return cfg.replace(output=free)
    raise ConfigError(f"output {output} already holds a run (config.yaml, metrics.csv or "
                      f"checkpoints/); continue it with --resume {cfg.output}, replace it "
                      "with --overwrite, or pick another --output")


def prepare_output(config, overwrite):
    """Create ``config.output`` and write its ``config.yaml``.

    With ``overwrite``, what an earlier run wrote there (:data:`RUN_FILES`) is
    removed first.
    """
    if overwrite:
        for name in RUN_FILES:
            path = os.path.join(config.output, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
    os.makedirs(config.output, exist_ok=True)
    config.to_yaml(os.path.join(config.output, "config.yaml"))


def history_columns(rows):
    """``{column: [value or None per row]}``; columns in order of first appearance."""
    keys = _keys(rows)
    return {k: [row.get(k) for row in rows] for k in keys}


def _keys(rows):
    keys = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return keys


def write_history(path, rows):
    """Write ``rows`` (dicts) as a CSV, atomically; a missing value is an empty cell.

    Rows carry different columns (log lines: loss and speed; verifications:
    accuracies), so the header is the union in order of first appearance.
    """
    keys = _keys(rows)
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in keys})


def read_history(path, up_to_step=None):
    """The rows of a ``metrics.csv`` (numbers as floats, empty cells left out).

    Parameters
    ----------
    path : str
        A missing file reads as no rows.
    up_to_step : int, optional
        Keep only rows of steps up to this one: a resumed run drops what the
        earlier run logged after the checkpoint it continues from.
    """
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
    if up_to_step is not None:
        out = [row for row in out if _as_int(row.get("step")) <= up_to_step]
    return out


def _as_int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0
