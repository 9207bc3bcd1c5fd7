"""Whether TTA views help: CV without and with them under every validation scheme, judged on the one to trust.

A run may score several validation schemes (`--valid_schemes`: plain, testlike, ...). On a shifted
test set the plain one can say TTA hurts while the test-like one, and the leaderboard, say it helps,
so the decision is taken on the scheme `kit cvlb` recommends (the one whose CV tracks the public
score over the ledger); with no scored submission yet, on the view `kit adval` found most test-like;
else on the run's own scheme.
"""
from __future__ import annotations

from pathlib import Path


def recommend_scheme(comp, schemes: list[str], ledger_path: Path | None) -> tuple[str, str]:
    """(scheme, why): kit cvlb's recommendation, else kit adval's test-like view, else the run's own (first)."""
    if ledger_path is not None and Path(ledger_path).is_file():
        from .compare import compare_schemes
        from .ledger import Ledger
        rec = compare_schemes(Ledger(ledger_path), comp.name)["recommended"]
        if rec in schemes:
            return rec, "recommended by kit cvlb"
    from .adval import load_report
    chosen = (load_report(comp) or {}).get("chosen_aug")
    if chosen in schemes[1:]:
        return chosen, "most test-like view by kit adval; no scored submission yet"
    return schemes[0], "the run's own scheme; no scored submission or kit adval report yet"


def judge_tta(scores: dict[str, dict], scheme: str, why: str, keep: str = "auto") -> dict:
    """The decision: TTA kept unless the judging scheme's CV with TTA is below its CV without (keep=auto).

    keep=always keeps the views whatever the CV says. A scheme without a CV on every fold cannot judge.
    """
    if keep not in ("auto", "always"):
        raise ValueError(f"--keep_tta={keep!r}: choose auto or always")
    cv, cv_tta = scores[scheme]["cv"], scores[scheme]["cv_tta"]
    judged = cv is not None and cv_tta is not None
    kept = keep == "always" or not judged or cv_tta >= cv
    return {"judged_on": scheme, "why": why, "kept": kept, "keep": keep, "judged": judged}


def format_judgement(metric: str, scores: dict[str, dict], decision: dict, primary: str) -> list[str]:
    """Lines for the console: CV per scheme without -> with TTA, then what was decided and on which scheme."""
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"CV {metric} per validation scheme:"]
    for name, s in scores.items():
        tags = [t for t, on in (("run's own", name == primary), ("judges TTA", name == decision["judged_on"])) if on]
        lines.append(f"  {name}: without TTA: {fmt(s['cv'])}  with TTA: {fmt(s['cv_tta'])}"
                     + (f"  ({', '.join(tags)})" if tags else ""))
    s = scores[decision["judged_on"]]
    where = f"judged on {decision['judged_on']} ({decision['why']})"
    if decision["keep"] == "always":
        verdict = f"TTA kept (--keep_tta=always); {where}: {fmt(s['cv'])} -> {fmt(s['cv_tta'])}"
    elif not decision["judged"]:
        verdict = f"TTA kept, not judged: {decision['judged_on']} has no CV on every fold"
    elif decision["kept"]:
        verdict = f"TTA kept, {where}: {fmt(s['cv'])} -> {fmt(s['cv_tta'])} with TTA"
    else:
        verdict = (f"TTA dropped, {where}: {fmt(s['cv'])} -> {fmt(s['cv_tta'])} with TTA; test.parquet predicted "
                   "again without views (--keep_tta=always keeps them)")
    return lines + [verdict]
