"""Fault injection for crash tests: `KIT_FAULT=point:n[,point:n...]` kills the process (SIGKILL) at a named point.

Points: `step:N` after optimizer step N, `ckpt_write:N` inside the N-th checkpoint write (files
written, marker not yet), `ckpt_sleep:S` sleeps S seconds inside every checkpoint write (so an
outside kill can land there), `nonfinite:N` makes the loss of the
run's N-th batch NaN. Unset, every call is an environment lookup and nothing else.
"""
from __future__ import annotations

import os
import signal
import sys
import time

_counts: dict[str, int] = {}


def _spec() -> dict[str, float]:
    raw = os.environ.get("KIT_FAULT", "")
    out = {}
    for part in filter(None, raw.split(",")):
        point, _, value = part.partition(":")
        out[point.strip()] = float(value or 1)
    return out


def kill_now(why: str) -> None:
    """SIGKILL this process: no cleanup, no flush, exactly what a power cut or OOM killer does."""
    print(f"fault: SIGKILL {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def fault_point(point: str, value: int | None = None) -> bool:
    """Act on `KIT_FAULT` at `point`: kill at the configured count/value; True for a `nonfinite` hit."""
    spec = _spec()
    if not spec:
        return False
    if point == "ckpt_write" and "ckpt_sleep" in spec:
        time.sleep(spec["ckpt_sleep"])
    if point not in spec:
        return False
    _counts[point] = _counts.get(point, 0) + 1
    at = value if value is not None else _counts[point]
    if at != int(spec[point]):
        return False
    if point == "nonfinite":
        return True
    kill_now(f"at {point} {at}")
    return False
