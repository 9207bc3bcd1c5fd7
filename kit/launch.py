"""`run(Exp)`: the last line of every experiment file."""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from .config import resolve_config
from .errors import KitError
from .memory import fit_with_auto_batch


def run(exp_cls, argv: list[str] | None = None) -> dict | None:
    """Parse `--key=value` overrides, train the requested folds, merge the run's tables.

    A user-fixable error (bad competition.yaml, data, override, checkpoint) ends the process with its
    one-paragraph message and exit status 1, not a traceback.
    """
    prog = Path(sys.argv[0]).name
    try:
        return _run(exp_cls, argv, prog)
    except KitError as e:
        raise SystemExit(f"{prog}: error: {e}") from None


def _run(exp_cls, argv: list[str] | None, prog: str) -> dict | None:
    config = resolve_config(exp_cls.config, argv, prog)
    trainer = exp_cls(config)
    fit = partial(fit_with_auto_batch, trainer) if config.auto_batch else trainer.fit
    summaries = [fit(k) for k in trainer.fold_list()]
    result = trainer.finish(summaries)
    if result is not None and trainer.accelerator.is_main_process:
        cv = result.get("cv")
        scores = ", ".join(f"fold {k}: {v:.4f}" for k, v in result["per_fold"].items())
        print(f"{trainer.name}: {scores}" + (f"; CV {trainer.comp.metric} {cv:.4f}" if cv is not None else ""))
    return result
