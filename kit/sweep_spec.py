"""A wandb sweep YAML read for Optuna: method, metric, parameters (wandb's distributions), command, early stop."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import KitError

METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # wandb's default


class SweepError(KitError, ValueError):
    """A sweep YAML that cannot be run: the message names the file and the key."""


@dataclass
class Param:
    """One parameter of the sweep and how to draw it."""

    name: str
    distribution: str
    values: list = field(default_factory=list)  # categorical / constant
    low: float = 0.0
    high: float = 0.0
    q: float | None = None


@dataclass
class SweepSpec:
    """Everything `kit sweep` needs from the YAML."""

    name: str
    method: str
    metric: str
    goal: str  # minimize | maximize
    params: dict[str, Param]
    program: str
    command: list[str]
    early_terminate: dict | None = None

    @property
    def direction(self) -> str:
        """Optuna's word for the goal."""
        return "maximize" if self.goal == "maximize" else "minimize"


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a wandb sweep YAML; every problem names the file and key."""
    path = Path(path)
    if not path.exists():
        raise SweepError(f"{path}: no such sweep file")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping at the top level")
    where = str(path)
    method = raw.get("method")
    if method not in METHODS:
        raise SweepError(f"{where}: method: {method!r} is not one of {', '.join(METHODS)}")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict) or not metric.get("name"):
        raise SweepError(f"{where}: metric: needs a name (e.g. cv/score) and a goal")
    goal = metric.get("goal", "minimize")  # wandb's default
    if goal not in ("minimize", "maximize"):
        raise SweepError(f"{where}: metric.goal: {goal!r} is not minimize or maximize")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{where}: parameters: at least one parameter is needed")
    parsed = {name: parse_param(name, spec, where) for name, spec in params.items()}
    if method == "grid":
        loose = [p.name for p in parsed.values() if p.distribution not in ("categorical", "constant")
                 and not (p.distribution == "int_uniform")]
        if loose:
            raise SweepError(f"{where}: parameters.{loose[0]}: grid search needs `values` (or int min/max)")
    program = raw.get("program", "")
    command = raw.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(w, str) for w in command):
        raise SweepError(f"{where}: command: expected a list of words, one per item")
    if "${program}" in command and not program:
        raise SweepError(f"{where}: program: the command uses ${{program}} but no program is given")
    early = raw.get("early_terminate")
    if early is not None and (not isinstance(early, dict) or early.get("type") != "hyperband"):
        raise SweepError(f"{where}: early_terminate: only type: hyperband is supported")
    return SweepSpec(name=str(raw.get("name") or path.stem), method=method, metric=str(metric["name"]), goal=goal,
                     params=parsed, program=str(program), command=command, early_terminate=early)


def parse_param(name: str, spec, where: str) -> Param:
    """One `parameters:` entry to a Param, with wandb's rules for the implied distribution."""
    key = f"{where}: parameters.{name}"
    if not isinstance(spec, dict):
        raise SweepError(f"{key}: expected a mapping such as {{values: [...]}} or {{min: .., max: ..}}")
    dist = spec.get("distribution")
    if dist is None:  # wandb infers it
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical"
        elif "min" in spec and "max" in spec:
            both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise SweepError(f"{key}: needs value, values, or min and max")
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"{key}: distribution {dist!r} is not supported by kit sweep ({', '.join(DISTRIBUTIONS)})")
    if dist == "constant":
        if "value" not in spec:
            raise SweepError(f"{key}: constant needs `value`")
        return Param(name, dist, values=[spec["value"]])
    if dist == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{key}: values: expected a non-empty list")
        for v in values:
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                raise SweepError(f"{key}: values: {v!r} is not a number, string or boolean")
        return Param(name, dist, values=list(values))
    if "min" not in spec or "max" not in spec:
        raise SweepError(f"{key}: {dist} needs min and max")
    try:
        low, high = float(spec["min"]), float(spec["max"])
    except (TypeError, ValueError):
        raise SweepError(f"{key}: min/max must be numbers") from None
    if not low < high:
        raise SweepError(f"{key}: min ({low}) must be below max ({high})")
    if dist in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values") and low <= 0:
        raise SweepError(f"{key}: {dist} needs min > 0")
    q = spec.get("q", 1.0 if dist.startswith("q_") else None)
    if q is not None and float(q) <= 0:
        raise SweepError(f"{key}: q must be positive")
    return Param(name, dist, low=low, high=high, q=None if q is None else float(q))


def suggest(trial, param: Param):
    """Draw one value with Optuna's suggest_* (the sampler sees the parameter's real scale)."""
    d, n = param.distribution, param.name
    if d == "constant":
        return param.values[0]
    if d == "categorical":
        return trial.suggest_categorical(n, param.values)
    if d == "int_uniform":
        return trial.suggest_int(n, int(param.low), int(param.high))
    if d == "uniform":
        return trial.suggest_float(n, param.low, param.high)
    if d == "q_uniform":
        return _quantise(trial.suggest_float(n, param.low, param.high), param.q)
    if d == "log_uniform":  # wandb: min/max are natural-log exponents
        return math.exp(trial.suggest_float(n, param.low, param.high))
    if d == "log_uniform_values":
        return trial.suggest_float(n, param.low, param.high, log=True)
    if d == "q_log_uniform_values":
        return _quantise(trial.suggest_float(n, param.low, param.high, log=True), param.q)
    if d == "inv_log_uniform_values":  # 1/X is log-uniform on [1/max, 1/min]
        return 1.0 / trial.suggest_float(n, 1.0 / param.high, 1.0 / param.low, log=True)
    raise SweepError(f"parameters.{n}: distribution {d!r} has no sampler")


def _quantise(value: float, q: float):
    """round(x / q) * q as wandb does; whole q gives an int."""
    out = round(value / q) * q
    return int(out) if float(q).is_integer() else float(f"{out:.12g}")  # no 0.30000000000000004


def grid_space(spec: SweepSpec) -> dict[str, list]:
    """Optuna GridSampler search space: every categorical value, every integer of an int range."""
    space = {}
    for p in spec.params.values():
        if p.distribution == "categorical":
            space[p.name] = p.values
        elif p.distribution == "int_uniform":
            space[p.name] = list(range(int(p.low), int(p.high) + 1))
    return space


def expand_command(spec: SweepSpec, values: dict, extra: dict | None = None, interpreter: str = "") -> list[str]:
    """The YAML command with ${env}, ${interpreter}, ${program}, ${args}... expanded as wandb's agent does."""
    import sys
    args = {**values, **(extra or {})}
    interpreter = interpreter or sys.executable  # the kit's own environment, not whichever python is first on PATH
    flags = [f"--{k}={format_value(v)}" for k, v in args.items()]
    words = {"${env}": ["/usr/bin/env"], "${interpreter}": [interpreter], "${program}": [spec.program],
             "${args}": flags, "${args_no_hyphens}": [f"{k}={format_value(v)}" for k, v in args.items()],
             "${args_no_boolean_flags}": [f"--{k}" if v is True else f"--{k}={format_value(v)}"
                                          for k, v in args.items() if v is not False],
             "${args_json}": [__import__("json").dumps(args)]}
    out = []
    for w in spec.command:
        out += words.get(w, [w])
    return out


def format_value(v) -> str:
    """A value as the experiment's --key=value parser reads it back exactly (repr keeps every float digit)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def trial_seeded_sampler(seed: int):
    """Random draws that are a function of (seed, trial number, parameter): workers sharing a study and a seed
    never draw the same point, and a one-worker sweep is reproducible."""
    import optuna

    class TrialSeededSampler(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, param_name, param_distribution):
            key = zlib.crc32(f"{seed}/{trial.number}/{param_name}".encode())
            return optuna.samplers.RandomSampler(seed=key).sample_independent(study, trial, param_name,
                                                                              param_distribution)

    return TrialSeededSampler(seed=seed)


def create_sampler(spec: SweepSpec, seed: int, done: int = 0):
    """grid -> GridSampler, random -> RandomSampler (seeded per trial), bayes -> TPE (constant liar for workers)."""
    import optuna
    if spec.method == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=seed + done)
    if spec.method == "random":
        return trial_seeded_sampler(seed)
    # a resumed sweep must not redraw old points; constant_liar keeps parallel workers apart
    return optuna.samplers.TPESampler(seed=seed + done, constant_liar=True)


def create_pruner(spec: SweepSpec):
    """early_terminate: hyperband -> Optuna's HyperbandPruner on epochs; otherwise no pruning."""
    import optuna
    et = spec.early_terminate
    if not et:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=int(et.get("min_iter", 1)),
                                          max_resource=int(et["max_iter"]) if "max_iter" in et else "auto",
                                          reduction_factor=int(et.get("eta", 3)))
