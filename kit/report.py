"""`kit report`: a static site per competition (index, run pages, diffs, adval) that opens from disk, offline.

Every image is inlined as a data URI and the script is inline, so the folder can be copied or zipped as is.
Run pages are rebuilt only when a file of the run (or its ledger rows) changed: a fingerprint per page is
kept in <out>/.report_cache.json, so re-running after a new submission takes seconds.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from . import report_charts as charts
from .compare import compare_schemes, row_schemes
from .ledger import Ledger
from .metrics import LOWER_IS_BETTER
from .report_data import REPORT_VERSION, fingerprint, gather_run, parent_of, read_json
from .report_pages import adval_page, diff_page, index_page, page_name, run_page
from .rundir import RunDir
from .tasks import task_of


class ReportError(ValueError):
    """A report that cannot be built (no ledger, unknown competition, a bad --diff pair)."""


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def pick_finals(rows: list[dict], by_row: dict, recommended: str | None, metric: str) -> dict:
    """Ledger ids of the two submissions to choose as final: best CV on the recommended scheme, best public."""
    better = (lambda a, b: a < b) if metric in LOWER_IS_BETTER else (lambda a, b: a > b)  # noqa: E731

    def best(value):
        top = None
        for r in rows:
            v = value(r)
            if v is not None and (top is None or better(v, top[0])):
                top = (v, r["id"])
        return top[1] if top else None
    scheme = recommended
    return {"cv": best(lambda r: by_row[r["id"]].get(scheme) if scheme else r.get("cv")),
            "public": best(lambda r: r.get("public"))}


def _competition(rows: list[dict]):
    from .competition import CompetitionError, load_competition
    for r in reversed(rows):
        if r.get("comp_dir") and Path(r["comp_dir"]).exists():
            try:
                return load_competition(r["comp_dir"])
            except (CompetitionError, OSError, ValueError):
                continue
    return None


def _diff_pairs(spec: str, picks: dict, rows: list[dict]) -> list[tuple[int, int]]:
    ids = {r["id"] for r in rows}
    pairs = []
    if picks.get("cv") and picks.get("public") and picks["cv"] != picks["public"]:
        pairs.append((picks["cv"], picks["public"]))
    elif picks.get("cv") or picks.get("public"):  # one submission is both picks: against the latest other one
        pick = picks.get("cv") or picks["public"]
        others = [r["id"] for r in rows if r["id"] != pick and r.get("file")]
        if others:
            pairs.append((pick, others[-1]))
    for part in [p for p in str(spec or "").replace(" ", "").split(",") if p]:
        try:
            a, b = (int(x) for x in part.split(":"))
        except ValueError:
            raise ReportError(f"--diff={spec!r}: give ledger id pairs as a:b[,c:d]") from None
        for i in (a, b):
            if i not in ids:
                raise ReportError(f"--diff: ledger #{i} is not a submission of this competition")
        pairs.append((a, b))
    return list(dict.fromkeys(pairs))


def _build_diff(comp, a: dict, b: dict, limit: int = 48) -> dict:
    """`kit diff`'s comparison, with the test images where the two disagree as captioned thumbnails."""
    from .compare import diff_submissions, submission_labels
    d = diff_submissions(comp, Path(a["file"]), Path(b["file"]))
    ids = d["differ_ids"][:limit]
    if ids:
        la, lb = (submission_labels(comp, Path(r["file"])) for r in (a, b))
        uris = charts.thumbnails([comp.image_path(i, "test") for i in ids])
        d["tiles"] = [(u, f"{i}  a: {la[i][:14]}  b: {lb[i][:14]}") for u, i in zip(uris, ids)]
    return d


def build_report(comp: str = "", out: str = "", runs: str = "runs", subs: str = "submissions", diff: str = "",
                 misclassified: bool = True) -> dict:
    """Write the site for one competition of the ledger; return where it is and how much was rebuilt."""
    t0 = time.perf_counter()
    path = Path(subs) / "ledger.db"
    if not path.exists():
        raise ReportError(f"{path}: no ledger yet (`kit submit` creates it)")
    ledger = Ledger(path)
    every = ledger.rows()
    if not every:
        raise ReportError(f"{path}: the ledger has no submission yet")
    name = comp or every[-1]["competition"]
    rows = [r for r in every if r["competition"] == name]
    if not rows:
        known = sorted({str(r["competition"]) for r in every})
        raise ReportError(f"--comp={comp!r}: no submission of that competition in {path}; known: {known}")
    metric = rows[-1].get("metric") or ""
    out_dir = Path(out or Path("reports") / str(name))
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / ".report_cache.json"
    cache = read_json(cache_path) or {}  # unreadable: every page is rebuilt
    fresh = {}

    schemes = compare_schemes(ledger, name)
    by_row = {r["id"]: row_schemes(r) for r in rows}
    names = list(dict.fromkeys(s for r in rows for s in by_row[r["id"]]))
    rec = schemes["recommended"]
    picks = pick_finals(rows, by_row, rec, metric)
    competition = _competition(rows)
    # what adval.load_report reads, without importing kit.adval (it pulls in torch: seconds per report)
    adval = read_json(competition.root / "adval" / "adval.json") if competition is not None else None
    run_dirs = Path(runs)
    pages = {(r.get("experiments") or [None])[0] for r in rows} - {None}
    pages |= {e for r in rows for e in (r.get("experiments") or []) if (run_dirs / e).is_dir()}
    pages |= {p for p in map(parent_of, [run_dirs / n for n in pages if (run_dirs / n).is_dir()])
              if p and (run_dirs / p).is_dir()}
    diffs = _diff_pairs(diff, picks, rows)
    run_nav = [("overview", "index.html")] + ([("adversarial validation", "adval.html")] if adval else [])
    nav = run_nav + [(f"diff #{a} vs #{b}", f"diff_{a}_{b}.html") for a, b in diffs]
    ctx = {"competition": name, "metric": metric, "rows": rows, "schemes": schemes, "scheme_names": names,
           "row_schemes": by_row, "recommended": rec, "recommended_label": rec or "run's own", "picks": picks,
           "pages": pages, "nav": nav, "run_nav": run_nav, "adval": adval, "misclassified": misclassified,
           "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "extra_pages": nav[1:]}

    rebuilt = 0
    train_tables = {}  # competition folder -> train table, read once
    for run in sorted(pages):
        own = [r for r in rows if (r.get("experiments") or [None])[0] == run]
        # not the set of pages: a new run must not rebuild every other page (links go to runs that exist)
        key = fingerprint(run_dirs, run, own, json.dumps([adval, run_nav, misclassified], default=str))
        target = out_dir / "runs" / page_name(run)
        fresh[f"run:{run}"] = key
        if cache.get(f"run:{run}") == key and target.exists():
            continue
        info = gather_run(run_dirs, run, own)
        c = info["comp"]
        oof = RunDir(run_dirs / run).table("oof")
        if misclassified and c is not None and task_of(c).one_label_per_row and oof.exists() and \
                not any("misclassified" in k for k in info["images"]):
            try:
                if str(c.root) not in train_tables:
                    train_tables[str(c.root)] = c.read_train()
                info["grid"] = charts.misclassified(c, train_tables[str(c.root)], oof)
            except (OSError, KeyError, ValueError) as e:  # images moved: the page says so, the rest still shows
                info["error"] = f"misclassified grid: {type(e).__name__}: {e}"
        _write(target, run_page(info, ctx))
        rebuilt += 1

    ctx["charts"] = {"cvlb": charts.cv_vs_leaderboard(
        {s: [(r["id"], by_row[r["id"]][s], r.get("public"), r.get("private")) for r in rows
             if s in by_row[r["id"]] and (r.get("public") is not None or r.get("private") is not None)]
         for s in names}, rec, f"{name}: CV per validation scheme"), "best": charts.best_so_far(rows, metric)}
    _write(out_dir / "index.html", index_page(ctx))

    by_id = {r["id"]: r for r in rows}
    for a, b in diffs:
        key = f"{REPORT_VERSION}|{by_id[a].get('sha256')}|{by_id[b].get('sha256')}|{json.dumps(nav)}"
        target = out_dir / f"diff_{a}_{b}.html"
        fresh[f"diff:{a}:{b}"] = key
        if cache.get(f"diff:{a}:{b}") == key and target.exists():
            continue
        if competition is None or not all(Path(by_id[i].get("file") or "").exists() for i in (a, b)):
            text = f"<p class=\"bad\">the CSVs of #{a} and #{b} or the competition folder are not on this machine</p>"
            _write(target, diff_page_missing(ctx, text))
        else:
            _write(target, diff_page(ctx, by_id[a], by_id[b], _build_diff(competition, by_id[a], by_id[b])))
        rebuilt += 1
    if adval:
        pngs = sorted((competition.root / "adval").glob("*.png"))
        grids = {p.stem.replace("_", " "): charts.file_uri(p) for p in pngs}
        _write(out_dir / "adval.html", adval_page(ctx, adval, grids))
    _write(cache_path, json.dumps(fresh, indent=0))
    return {"index": out_dir / "index.html", "rows": len(rows), "pages": len(pages), "rebuilt": rebuilt,
            "diffs": len(diffs), "seconds": time.perf_counter() - t0}


def diff_page_missing(ctx: dict, text: str) -> str:
    """A diff page that says why it cannot show the diff."""
    from .report_html import page
    return page(f"{ctx['competition']}: diff", text, ctx["nav"])
