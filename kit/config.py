"""The experiment config: one flat dataclass, overridden from the command line by field name."""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import sys
import tokenize
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from .errors import KitError


@dataclass(frozen=True)
class Config:
    # --- data
    comp: str = "data/demo"  # competition folder holding competition.yaml
    fold: str = "0"  # fold to train: an integer, or "all" to train every fold in turn
    n_folds: int = 5  # folds made when the competition has no folds.csv yet
    img_size: int = 32  # square side images are resized to; raise it as far as memory allows
    aug: str = "light"  # preset (kit/transforms.py), an albumentations .yaml/.json (A.save) or module:function
    valid_aug: str = "none"  # validate on one fixed augmented view per image (`kit adval` picks a test-like one)
    valid_schemes: str = ""  # extra validation views scored side by side, e.g. "plain,testlike" (`kit cvlb` compares)
    batch_size: int = 64  # per process; the effective batch is batch_size * grad_accum * processes
    num_workers: int = -1  # DataLoader workers per process; -1 or auto: what the machine offers (data.resolve_workers)
    image_cache: str = "auto"  # auto: decode each train/valid image once into shared memory when they fit | off
    limit: int = 0  # keep only this many train rows (quick smoke runs); 0 keeps all
    sampler: str = "shuffle"  # shuffle | balanced (every class drawn equally often) | sqrt (a softer oversampling)
    pseudo: str = ""  # pseudo-label table (`kit pseudo` writes it): its rows join training parts, never validation
    # --- model
    model: str = "resnet18"  # any timm model name
    pretrained: bool = False  # timm hub weights; needs a network or a local `weights` file
    weights: str = ""  # local weights file (.safetensors/.pth) loaded into the model
    drop_rate: float = 0.0  # dropout before the classifier
    mean: str = ""  # input mean per RGB channel (0-1), e.g. "0.5,0.5,0.5"; empty: the model's own (timm data config)
    std: str = ""  # input std per RGB channel; empty: the model's own (timm data config)
    interpolation: str = ""  # resize method: bilinear, bicubic, nearest, area, lanczos; empty: the model's own
    ema_decay: float = 0.0  # EMA of the weights (e.g. 0.999), then evaluated, kept as best and predicted with; 0 is off
    channels_last: bool = False  # NHWC memory layout: faster convolutions with mixed precision on GPUs
    compile: bool = False  # torch.compile the model: a slow first step, then faster ones
    # --- optim
    optimizer: str = "adamw"  # any timm optimizer name (create_optimizer_v2)
    lr: float = 1e-3  # peak learning rate, reached after warmup
    weight_decay: float = 0.05  # decoupled for adamw; biases and norms are excluded by timm
    grad_accum: int = 1  # optimizer step every N batches, to reach a larger batch on small memory
    clip_grad: float = 1.0  # max gradient norm; 0 disables clipping
    loss: str = "ce"  # ce | weighted_ce | smooth_ce | focal | asymmetric | soft_f1 | bce (kit/losses.py)
    smoothing: float = 0.0  # label smoothing of the loss (smooth_ce: 0.1 when 0) and of MixUp/CutMix targets
    focal_gamma: float = 2.0  # focusing power of the focal loss; 0 is plain cross-entropy
    mixup: float = 0.0  # MixUp beta alpha (e.g. 0.2); 0 is off
    cutmix: float = 0.0  # CutMix beta alpha (e.g. 1.0); 0 is off; with both on, timm picks one per batch
    mix_prob: float = 1.0  # share of batches that are mixed
    backbone_lr_scale: float = 1.0  # the backbone learns at lr * this (e.g. 0.1 for pretrained); the head at lr
    # --- schedule
    epochs: int = 10  # passes over the training fold
    sched: str = "cosine"  # any timm scheduler name (create_scheduler_v2); stepped per optimizer step
    warmup_epochs: float = 1.0  # linear warmup from lr/100, in epochs (may be fractional)
    min_lr: float = 1e-6  # floor of the schedule
    decay_epochs: float = 30.0  # sched=step: epochs between learning-rate decays
    decay_rate: float = 0.1  # sched=step/plateau: learning-rate factor at each decay
    plateau_patience: int = 2  # sched=plateau: epochs without a better competition metric before a decay
    freeze_epochs: int = 0  # train only the classifier for this many epochs (a pretrained backbone), then all
    patience: int = 0  # stop after this many epochs without a better metric; 0 never stops early
    # --- run
    seed: int = 42  # seeds python, numpy, torch and the data order on every process
    name: str = ""  # run name; empty uses the experiment file's name
    out_dir: str = "runs"  # run folders are created below it
    log_with: str = "none"  # trackers, comma-separated: wandb, tensorboard, mlflow (e.g. "wandb,tensorboard") or none
    log_every: int = 50  # log train loss and LR every this many optimizer updates (a host sync each time)
    predict_test: bool = True  # predict the test set with the best weights after training
    auto_batch: bool = False  # on out-of-memory halve batch_size, double grad_accum (same effective batch), retry
    ckpt_every: int = 500  # also checkpoint every N optimizer steps (epoch ends always are); 0: epoch ends only
    keep_ckpts: int = 2  # complete checkpoints kept (plus the best epoch's); older ones go once a new one is complete
    keep_fold_ckpts: bool = False  # keep a finished fold's full-state checkpoints; by default only best weights stay
    resume: str = "auto"  # auto (newest complete checkpoint, if any) | never | a checkpoint folder
    skip_nonfinite: int = 0  # NaN/inf losses tolerated (those batches are skipped) before the run stops

    def override(self, **changes) -> "Config":
        """Return a copy with the given fields changed; unknown names are an error."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ConfigError(_unknown_key_message(key, known))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The config as a plain dict (what is saved and logged)."""
        return dataclasses.asdict(self)


class ConfigError(KitError, ValueError):
    """A bad command-line override: unknown key or a value of the wrong type."""


def _unknown_key_message(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.4)
    hint = f"; did you mean --{close[0]}?" if close else ""
    return f"unknown config key --{key}{hint}"


AUTO_INTS = {"num_workers": -1}  # integer settings whose "auto" is spelled -1 in the dataclass


def cast_value(name: str, raw: str, kind):
    """Cast a command-line string to the field's declared type, naming the key on failure."""
    if name in AUTO_INTS and raw.strip().lower() == "auto":
        return AUTO_INTS[name]
    if kind is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on", ""):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{name}={raw!r}: expected a boolean (true/false)")
    try:
        if kind is int:
            value = float(raw)  # accept 1e3 as an integer, never silently truncate 2.5
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ConfigError(f"--{name}={raw!r}: expected {kind.__name__}") from None
    return raw


def field_types(cls) -> dict:
    """Map field name to its resolved Python type."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def parse_overrides(argv: list[str], cls=Config) -> dict:
    """Parse `--key=value`, `--key value` and bare `--flag` into typed values for `cls`."""
    types = field_types(cls)
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; use --key=value")
        key, eq, raw = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in types:
            raise ConfigError(_unknown_key_message(key, types))
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if types[key] is bool and (nxt is None or nxt.startswith("--")):
                raw = "true"
            elif nxt is None:
                raise ConfigError(f"--{key} needs a value")
            else:
                raw, i = nxt, i + 1
        out[key] = cast_value(key, raw, types[key])
        i += 1
    return out


def field_comments(cls) -> dict:
    """Trailing `# comment` of each field, read from the dataclass source (the --help text)."""
    comments = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        line_name = {}
        for tok in tokens:
            if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_name:
                line_name[tok.start[0]] = tok.string
            if tok.type == tokenize.COMMENT and tok.start[0] in line_name:
                comments[line_name[tok.start[0]]] = tok.string.lstrip("# ").strip()
    return comments


def format_help(config: Config, prog: str = "") -> str:
    """Every field with its type, current default and comment."""
    types, comments = field_types(type(config)), field_comments(type(config))
    rows = [f"usage: {prog} [--key=value ...]", "", "config fields (type, default, why):"]
    for f in fields(config):
        default = getattr(config, f.name)
        rows.append(f"  --{f.name:<16} {types[f.name].__name__:<6} {default!r:<14} {comments.get(f.name, '')}")
    return "\n".join(rows)


def resolve_config(base: Config, argv: list[str] | None = None, prog: str = "") -> Config:
    """Apply command-line overrides to `base`; print help and exit on --help."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(format_help(base, prog))
        raise SystemExit(0)
    return base.override(**parse_overrides(argv, type(base)))


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_config(path: Path, cls=Config) -> Config:
    """Read a config saved by `save_config`, ignoring fields this version no longer has."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name for f in fields(cls)}
    if "interpolation" in known and "interpolation" not in data:  # saved before preprocessing was recorded
        data.update(mean="0.485,0.456,0.406", std="0.229,0.224,0.225", interpolation="bilinear")
    return cls(**{k: v for k, v in data.items() if k in known})
