"""Training configuration: one dataclass holds every default.

:class:`TrainConfig` is the single source of defaults.  The packaged preset
``gluon_face/configs/default.yaml`` holds the same values (a test keeps the two
equal); other presets in that folder (e.g. ``ms1m-r50``) change some of them.
``tools/train.py --config FILE_OR_PRESET`` reads a YAML file as new defaults and
command-line flags override it; the resolved configuration is saved as
``config.yaml`` in the output folder and inside every checkpoint.

Unknown keys (in YAML or in :meth:`TrainConfig.replace`) are errors, not
silently ignored: a typo such as ``lr_step`` would otherwise train with the
default schedule.
"""
import argparse
import math
import os
from dataclasses import dataclass, field, fields
from typing import List, Optional

__all__ = ["TrainConfig", "ConfigError", "list_presets", "preset_path", "add_arguments",
           "config_from_args"]

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")

OPTIMIZERS = ("sgd", "nag", "adamw")
LR_MODES = ("step", "cosine", "poly", "linear", "constant")
KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")


class ConfigError(ValueError):
    """A configuration value or key is invalid (message names the key)."""


def _opt(default, help, **extra):
    return field(default=default, metadata=dict(help=help, **extra))


def _list(default, help, **extra):
    return field(default_factory=lambda: list(default), metadata=dict(help=help, **extra))


@dataclass
class TrainConfig:
    """Every knob of :func:`gluon_face.training.train`, with its default.

    The defaults are the README's default job: ``faceresnet10-demo`` (one ReLU
    residual unit per stage, channels 16-16-32-64-128, 128-d embedding) on the
    built-in 32x32 glyph identities (``data_dir=None``: about 1,300 training
    identities, 400 unseen ones to verify on), CosFace head (b=0.35) at scale
    s=16 (64 is meant for tens of thousands of classes), batches of 128, 5
    epochs of SGD with half an epoch of warm-up and cosine decay: about two
    minutes on a 2-core CPU.  The ``ms1m-r50`` preset is the real-data
    counterpart.

    Field names are the YAML keys; the command-line flag of ``some_key`` is
    ``--some-key`` (booleans also ``--no-some-key``).
    """

    # ---------------------------------------------------------------- data
    data_dir: Optional[str] = _opt(
        None, "folder with train.rec/.idx, property and *.bin pairs (insightface layout); "
              "default: the built-in glyph identities (gluon_face.data.glyph_data_dir())")
    val_targets: List[str] = _list(
        [], "verification sets: names in data_dir (lfw, cfp_fp, agedb_30) or .bin paths; "
            "default: lfw, cfp_fp, agedb_30 then every other *.bin of data_dir")
    image_size: Optional[int] = _opt(
        None, "network input size in pixels (square, multiple of 16); default: the data's")
    flip: Optional[bool] = _opt(
        None, "random left-right mirror of training images (default: what data_dir's "
              "dataset.json says, else true; the glyph identities are not mirror-symmetric)")
    flip_test: Optional[bool] = _opt(
        None, "verification adds the embedding of the mirrored image, as insightface does "
              "for faces (default: what data_dir's dataset.json says, else true)")
    val_identification: Optional[str] = _opt(
        None, "labelled .rec (or its folder) of identities that training never sees: each "
              "verification also reports TAR at FAR over all its pairs and rank-1 "
              "identification (default: dataset.json's 'identification' entry of data_dir; "
              "'none' turns it off)")
    num_workers: int = _opt(0, "image-decoding worker processes (0: decode in one background "
                               "thread of the training process)")
    # ---------------------------------------------------------------- model
    network: str = _opt("faceresnet10-demo", "backbone name (gluon_face.model_zoo.list_models())")
    emb_size: int = _opt(128, "embedding size")
    model_kwargs: dict = field(default_factory=dict, metadata=dict(
        help="extra keywords of the network: get_model's, or channels=[stem, stage1..4] for "
             "a FaceResNet of other widths (YAML mapping; on the command line KEY=VALUE,...)"))
    use_dropout: bool = _opt(False, "dropout(0.4) before the embedding layer")
    act_type: str = _opt("relu", "activation of the backbone (prelu, as insightface, or relu)")
    freeze_bn: bool = _opt(False, "BatchNorm uses its running statistics while training "
                                  "(fine-tuning with small per-device batches)")
    # ---------------------------------------------------------------- head and loss
    loss: str = _opt("cosface", "head name (gluon_face.heads.list_heads())")
    margin_s: Optional[float] = _opt(
        16.0, "scale s of the heads that have a fixed one (cosine, normface, sphereface, "
              "cosface, arcface, combined; null: the head's own, 64 for the margin heads); the "
              "heads without one (softmax, l2softmax, asoftmax, adacos, fixed-adacos) ignore it")
    margin_m: Optional[float] = _opt(None, "additive angular margin m, radians")
    margin_a: Optional[float] = _opt(None, "multiplicative angular margin a")
    margin_b: Optional[float] = _opt(None, "additive cosine margin b")
    easy_margin: Optional[bool] = _opt(None, "ArcFace easy margin")
    head_kwargs: dict = field(default_factory=dict, metadata=dict(
        help="other keywords of the head (see gluon_face.heads.head_keywords)"))
    label_smoothing: float = _opt(0.0, "label smoothing epsilon of the cross-entropy")
    center_loss_weight: float = _opt(0.0, "weight of the center loss added to the "
                                          "cross-entropy (0: off)")
    center_loss_alpha: float = _opt(0.5, "centre update rate of the center loss")
    model_parallel: bool = _opt(
        False, "shard the class centres over the --ctx devices (gluon_face.parallel."
               "ShardedMarginHead: exact softmax across shards, the head's own optimizer); "
               "margin losses only: arcface, combined, cosface, cosine, normface, sphereface "
               "(softmax: deprecated name of cosine)")
    sample_rate: float = _opt(
        1.0, "Partial FC: fraction in (0, 1] of each shard's class centres used per step "
             "(the batch's classes plus random negatives); below 1 implies --model-parallel, "
             "1 is the full sharded head")
    # ---------------------------------------------------------------- optimisation
    batch_size: int = _opt(128, "images per step on this machine, split evenly over --ctx")
    epochs: int = _opt(5, "training epochs")
    optimizer: str = _opt("sgd", "sgd, nag or adamw (decoupled weight decay)")
    lr: float = _opt(0.1, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    wd: float = _opt(5e-4, "weight decay")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.999, "AdamW beta2")
    lr_mode: str = _opt("cosine", "schedule after warm-up: step, cosine, poly, linear, constant")
    lr_steps: List[float] = _list([], "epochs at which the step schedule multiplies the lr "
                                      "by --lr-factor (default: 60%% and 85%% of --epochs)")
    lr_factor: float = _opt(0.1, "step schedule factor")
    lr_power: float = _opt(2.0, "poly schedule power")
    target_lr: float = _opt(0.0, "final learning rate of cosine/poly/linear")
    warmup_epochs: float = _opt(0.5, "linear warm-up from --warmup-lr to --lr (epochs)")
    warmup_lr: float = _opt(0.0, "learning rate at the start of the warm-up")
    clip_gradient: Optional[float] = _opt(None, "clip every gradient element to +-value")
    # ---------------------------------------------------------------- devices
    ctx: str = _opt("cpu", "devices: cpu, cpu:0,1, gpu, gpu:0,1,2,3")
    kvstore: str = _opt("local", "local, device, dist_sync, dist_device_sync, dist_async")
    hybridize: bool = _opt(True, "hybridize backbone and head (static graph)")
    split_prelu: Optional[bool] = _opt(
        None, "with hybridize (or amp): train the backbone through a graph whose PReLUs are "
              "split into oneDNN operators (same function and gradients; MXNet's CPU PReLU "
              "has no oneDNN kernel). null (auto): on when every --ctx device is a CPU, off "
              "on GPUs, where PReLU is a native kernel and the split only costs memory")
    amp: bool = _opt(False, "mixed precision: the backbone computes in bfloat16 on CPUs with "
                            "AVX-512 BF16 (avx512_bf16), in float16 with dynamic loss scaling "
                            "on GPUs; float32 master weights, head, loss and checkpoints")
    # ---------------------------------------------------------------- run
    output: str = _opt("runs/default", "output folder (checkpoints, metrics.csv, plots, "
                                       "config.yaml, train.log)")
    resume: Optional[str] = _opt(None, "checkpoint folder (or an output folder: its "
                                       "checkpoints/last) to continue from")
    pretrained: Optional[str] = _opt(None, "checkpoint folder (or an output folder) whose "
                                           "backbone starts this run, for fine-tuning: same "
                                           "network and settings; the head, optimizer and "
                                           "step count start fresh (e.g. a converted "
                                           "insightface model)")
    seed: int = _opt(0, "seed of initialisation, data order, flips and dropout")
    log_interval: int = _opt(10, "log a line every N steps")
    verbose: int = _opt(0, "verify every N steps (0: only at each epoch end)")
    eval_batch_size: int = _opt(128, "images per forward pass when embedding .bin pairs")
    best_target: Optional[str] = _opt(None, "verification set that picks the best checkpoint "
                                            "(default: the first)")
    max_steps: int = _opt(0, "stop after this global step (0: run all epochs); the "
                             "schedule still spans --epochs")

    # ------------------------------------------------------------------ API
    def __post_init__(self):
        self.validate()

    def validate(self):
        """Check types and ranges; :class:`ConfigError` naming the key otherwise."""
        for f in fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(f, value))
        positive = ("emb_size", "batch_size", "epochs", "log_interval", "eval_batch_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_workers", "verbose", "max_steps", "warmup_epochs", "wd",
                    "label_smoothing", "center_loss_weight", "warmup_lr", "target_lr"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.clip_gradient is not None and not self.clip_gradient > 0:
            raise ConfigError(f"clip_gradient must be > 0 (or unset), got {self.clip_gradient}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.lr_mode not in LR_MODES:
            raise ConfigError(f"lr_mode {self.lr_mode!r} is not one of {', '.join(LR_MODES)}")
        if self.kvstore not in KVSTORES:
            raise ConfigError(f"kvstore {self.kvstore!r} is not one of {', '.join(KVSTORES)}")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than "
                              f"epochs ({self.epochs})")
        if self.image_size is not None and (self.image_size < 16 or self.image_size % 16):
            raise ConfigError(f"image_size must be a multiple of 16, got {self.image_size}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.resume and self.pretrained:
            raise ConfigError("resume and pretrained exclude each other: resume continues a run "
                              "(head and optimizer included), pretrained starts a new one from "
                              "a backbone")
        if self.parallel_head and self.kvstore.startswith("dist"):
            raise ConfigError(f"model_parallel/sample_rate: the sharded head lives on one "
                              f"machine's --ctx devices; kvstore {self.kvstore} is not "
                              "supported with it (use local or device)")
        return self

    @property
    def parallel_head(self):
        """True when the run uses :mod:`gluon_face.parallel`'s head:
        ``model_parallel`` or ``sample_rate < 1``."""
        return bool(self.model_parallel or self.sample_rate < 1.0)

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]

    def to_dict(self):
        """Plain dict (lists copied) in field order, YAML-serialisable."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes):
        """A copy with ``changes`` applied; unknown keys raise :class:`ConfigError`."""
        _check_keys(changes, "replace()")
        data = self.to_dict()
        data.update(changes)
        return TrainConfig(**data)

    @classmethod
    def from_dict(cls, data, source="config"):
        """Build from a mapping of field names; unknown keys raise :class:`ConfigError`."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        _check_keys(data, source)
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path, base=None):
        """Read a YAML file (or a packaged preset name, see :func:`list_presets`).

        Keys missing from the file keep the values of ``base`` (default: the
        dataclass defaults).
        """
        import yaml

        path = preset_path(path)
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        merged = (base or cls()).to_dict()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        _check_keys(data, path)
        merged.update(data)
        return cls.from_dict(merged, source=path)

    def to_yaml(self, path=None):
        """YAML text of the config; also written atomically to ``path`` if given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            from .._io import atomic_open

            with atomic_open(path) as f:
                f.write(text)
        return text


def _check_keys(data, source):
    unknown = sorted(set(data) - set(TrainConfig.field_names()))
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, TrainConfig.field_names(), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{source}: unknown config key(s) {', '.join(hints)}")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _base_type(f):
    text = str(f.type)
    for name, typ in (("List", list), ("dict", dict), ("bool", bool), ("int", int),
                      ("float", float), ("str", str)):
        if name in text:
            return typ
    return str


def _coerce(f, value):
    """Check/convert one value to its field's type (YAML gives ints for floats etc.)."""
    typ = _base_type(f)
    optional = "Optional" in str(f.type)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{f.name} must not be empty")
    if typ is list:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{f.name} must be a list, got {value!r}")
        item = float if "float" in str(f.type) else str
        try:
            items = [item(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{f.name}: bad list item in {value!r}") from None
        if item is float and not all(math.isfinite(v) for v in items):
            raise ConfigError(f"{f.name}: items must be finite numbers, got {value!r}")
        return items
    if typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{f.name} must be a mapping, got {value!r}")
        return dict(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{f.name} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{f.name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{f.name} must be an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{f.name} must be a number, got {value!r}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{f.name} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{f.name} must be a string, got {value!r}")
    return value


def list_presets():
    """Names of the packaged presets (``gluon_face/configs/*.yaml`` without ``.yaml``)."""
    if not os.path.isdir(_CONFIG_DIR):
        return []
    return sorted(n[:-5] for n in os.listdir(_CONFIG_DIR) if n.endswith(".yaml"))


def preset_path(name_or_path):
    """The file of a preset name, or ``name_or_path`` itself when it is a file path."""
    text = os.fspath(name_or_path)
    if os.path.sep in text or text.endswith((".yaml", ".yml")) or os.path.exists(text):
        return text
    if text in list_presets():
        return os.path.join(_CONFIG_DIR, text + ".yaml")
    raise ConfigError(f"config {text!r} is neither a file nor a preset; presets: "
                      f"{', '.join(list_presets())}")


# ----------------------------------------------------------------------------- command line
def _split_top_level(text):
    """Split on commas that are not inside brackets or braces."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _parse_kv(text):
    """``KEY=VALUE,KEY=VALUE`` (values in YAML, e.g. ``channels=[8,8,16,32,64]``) or a
    YAML mapping ``{key: value}``."""
    import yaml

    if text.strip().startswith("{"):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"not a YAML mapping: {text!r}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"not a YAML mapping: {text!r}")
        return value
    out = {}
    for part in _split_top_level(text):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {part!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"bad value in {part!r}") from None
    return out


def add_arguments(parser):
    """Add one flag per :class:`TrainConfig` field (``--some-key``) plus ``--config``.

    Flags default to ``argparse.SUPPRESS`` so that :func:`config_from_args` can
    tell given flags from defaults; the help shows the dataclass default.
    """
    defaults = TrainConfig()
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="YAML file or preset name (%s) whose keys replace the defaults; "
                             "flags override it" % ", ".join(list_presets()))
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        typ = _base_type(f)
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "") + f" (default: {default!r})"
        help_text = help_text.replace("%", "%%").replace("%%%%", "%%")
        if typ is bool:
            help_text += f"; --no-{flag[2:]} to turn off"
            group = parser.add_mutually_exclusive_group()
            group.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                               help=help_text)
            group.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        elif typ is list:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar="A,B",
                                help=help_text)
        elif typ is dict:
            parser.add_argument(flag, dest=f.name, type=_parse_kv, default=argparse.SUPPRESS,
                                metavar="K=V,...", help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                                type={int: int, float: float}.get(typ, str), help=help_text)
    return parser


def config_from_args(args):
    """:class:`TrainConfig` from parsed arguments: defaults <- ``--config`` <- flags."""
    values = dict(vars(args))
    config_file = values.pop("config", None)
    base = TrainConfig.from_yaml(config_file) if config_file else TrainConfig()
    values = {k: v for k, v in values.items() if k in TrainConfig.field_names()}
    merged = base.to_dict()
    merged.update(values)
    return TrainConfig.from_dict(merged, source="command line")
