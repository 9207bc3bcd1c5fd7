"""Reading the ledger: the table, how two submissions disagree, and whether CV predicts the leaderboard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .competition import Competition, load_competition, read_table
from .ledger import COLUMNS, Ledger

TABLE_COLUMNS = ["id", "created_utc", "experiments", "cv", "cv_folds", "tta", "public", "private", "status",
                 "target", "git", "message"]


def tta_views(record) -> str:
    """The views a submission's test predictions averaged ("hflip+vflip"), "" when it is plain: no TTA, or
    TTA that `kit predict` ran but did not keep."""
    if not isinstance(record, dict) or not record.get("kept", True):
        return ""
    return "+".join(v for v in record.get("views") or record.get("tta") or [] if v != "none")


def ledger_table(ledger: Ledger, sort: str = "", ascending: bool = False, limit: int = 0,
                 competition: str = "") -> pd.DataFrame:
    """The ledger as a table: newest first, or sorted by a column (missing values last)."""
    rows = ledger.rows("competition=?", (competition,)) if competition else ledger.rows()
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["experiments"] = df["experiments"].map(lambda e: "+".join(e) if isinstance(e, list) else e)
    # A row made outside a git checkout has no commit and no dirty flag: NaN beside the others.
    dirty = df["git_dirty"].fillna(0).astype(bool).map({True: "*", False: ""})
    df["git"] = df["git_commit"].fillna("").astype(str).str.slice(0, 8) + dirty
    df["created_utc"] = df["created_utc"].str.replace("T", " ").str.slice(0, 19)
    df["tta"] = df["tta"].map(tta_views)
    key = sort or "id"
    if key not in df.columns:
        raise KeyError(f"--sort={sort!r}: not a ledger column; choose from {TABLE_COLUMNS}")
    df = df.sort_values(key, ascending=ascending if sort else False, na_position="last", kind="stable")
    if limit:
        df = df.head(limit)
    return df[TABLE_COLUMNS]


def format_table(df: pd.DataFrame) -> str:
    """Fixed-width text for the terminal (scores to 4 decimals, blanks for missing)."""
    if df.empty:
        return "(no submissions yet)"
    show = df.copy()
    for c in ("cv", "public", "private"):
        show[c] = show[c].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    show = show.fillna("")
    show["message"] = show["message"].astype(str).str.slice(0, 40)
    return show.to_string(index=False)


def resolve_csv(ref: str, ledger: Ledger | None) -> tuple[Path, dict | None]:
    """A submission CSV from a path, or from a ledger id / file name / sha256 prefix."""
    p = Path(str(ref))
    if p.suffix == ".csv" and p.exists():
        row = None
        if ledger is not None and ledger.path.exists():
            try:
                row = ledger.find(str(p))
            except KeyError:
                pass
        return p, row
    if ledger is None or not ledger.path.exists():
        raise FileNotFoundError(f"{ref}: no such CSV and no ledger to look it up in")
    row = ledger.find(ref)
    return Path(row["file"]), row


def submission_labels(comp: Competition, csv: Path) -> pd.Series:
    """One comparable value per id: the label, the arg-max class of probabilities, or the RLE string."""
    sub = read_table(csv).drop_duplicates(comp.id_column).set_index(comp.id_column)
    kind = comp.submission.get("kind", "label")
    if kind == "probs":
        cols = [c for c in sub.columns if c in set(comp.classes)]
        probs = sub[cols].astype(float).to_numpy()
        return pd.Series(np.array(cols)[probs.argmax(1)], index=sub.index)
    if kind == "label" and comp.target in sub.columns:  # multihead submissions may have one column per head
        return sub[comp.target].astype(str)
    return sub.astype(str).agg(" | ".join, axis=1)


def diff_submissions(comp: Competition, a: Path, b: Path, png: Path | None = None, max_images: int = 48) -> dict:
    """Ids where two submissions disagree, their cross-tab, and a PNG grid of those test images."""
    la, lb = submission_labels(comp, a), submission_labels(comp, b)
    ids = la.index.intersection(lb.index)
    la, lb = la.loc[ids], lb.loc[ids]
    differ = ids[(la != lb).to_numpy()]
    crosstab = pd.crosstab(la.rename("a"), lb.rename("b")) if comp.submission.get("kind") != "rle" else None
    out = {"n": len(ids), "n_differ": len(differ), "differ_ids": list(differ), "crosstab": crosstab,
           "only_a": len(la.index.difference(lb.index)), "only_b": len(lb.index.difference(la.index)), "png": None}
    if png is not None and len(differ):
        out["png"] = _image_grid(comp, differ[:max_images], la, lb, Path(png))
    return out


def _image_grid(comp: Competition, ids, la: pd.Series, lb: pd.Series, png: Path) -> Path:
    from PIL import Image

    from .figures import image_grid_figure, save_figure
    paths = [comp.image_path(i, "test") for i in ids]
    images = [np.asarray(Image.open(p).convert("RGB")) if p.exists() else np.ones((8, 8, 3)) for p in paths]
    return save_figure(image_grid_figure(images, [f"{i}\na:{la[i][:12]} b:{lb[i][:12]}" for i in ids]), png)


def cv_lb_correlation(ledger: Ledger, competition: str = "", png: Path | None = None) -> dict:
    """Pearson and Spearman correlation of CV with public score over scored rows, and a scatter PNG."""
    from scipy import stats
    rows = ledger.rows()
    if not competition and rows:
        competition = rows[-1]["competition"]
    pts = [r for r in rows if r["competition"] == competition and r["cv"] is not None and r["public"] is not None]
    out = {"competition": competition, "n": len(pts), "pearson": None, "spearman": None, "png": None,
           "ids": [r["id"] for r in pts]}
    cv = np.array([r["cv"] for r in pts], dtype=float)
    lb = np.array([r["public"] for r in pts], dtype=float)
    if len(pts) >= 3 and np.ptp(cv) > 0 and np.ptp(lb) > 0:
        out["pearson"] = float(stats.pearsonr(cv, lb)[0])
        out["spearman"] = float(stats.spearmanr(cv, lb)[0])
    if png is not None and pts:
        out["png"] = _scatter(pts, cv, lb, out, Path(png))
    return out


def _scatter(pts, cv, lb, info: dict, png: Path) -> Path:
    from .figures import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(cv, lb)
    for r, x, y in zip(pts, cv, lb):
        ax.annotate(str(r["id"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(pts) >= 2 and np.ptp(cv) > 0:
        k, c = np.polyfit(cv, lb, 1)
        xs = np.linspace(cv.min(), cv.max(), 10)
        ax.plot(xs, k * xs + c, "--", lw=1)
    r = "n/a" if info["pearson"] is None else f"{info['pearson']:.3f}"
    rho = "n/a" if info["spearman"] is None else f"{info['spearman']:.3f}"
    ax.set(xlabel="CV", ylabel="public score", title=f"{info['competition']}: Pearson {r}, Spearman {rho}")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def comp_of(row: dict | None, comp: str) -> Competition:
    """The competition of a ledger row (its folder), else the one given on the command line."""
    if row and row.get("comp_dir") and Path(row["comp_dir"]).exists():
        return load_competition(row["comp_dir"])
    return load_competition(comp)


def row_schemes(row: dict) -> dict:
    """{scheme: CV} of a ledger row: its run's own validation view plus any extra ones it scored."""
    aug = ((row.get("config") or {}).get("valid_aug") or "none")
    out = {} if row.get("cv") is None else {"plain" if aug == "none" else aug: row["cv"]}
    out.update(row.get("cv_schemes") or {})
    return out


def compare_schemes(ledger: Ledger, competition: str = "", png: Path | None = None) -> dict:
    """Per validation scheme: CV against public score (correlations, mean gap) and the scheme to trust.

    The recommendation ranks by Spearman correlation (does CV order submissions as the leaderboard
    does?) and breaks ties by the mean |CV - public|; with fewer than 3 points per scheme, by the gap.
    """
    from scipy import stats
    rows = ledger.rows()
    if not competition and rows:
        competition = rows[-1]["competition"]
    rows = [r for r in rows if r["competition"] == competition and r["public"] is not None]
    table = {}
    for r in rows:
        for scheme, cv in row_schemes(r).items():
            table.setdefault(scheme, []).append((r["id"], float(cv), float(r["public"])))
    out = {"competition": competition, "schemes": {}, "recommended": None, "png": None}
    for scheme, pts in table.items():
        cv, lb = np.array([p[1] for p in pts]), np.array([p[2] for p in pts])
        s = {"n": len(pts), "pearson": None, "spearman": None, "gap": float(np.abs(cv - lb).mean()),
             "bias": float((cv - lb).mean())}
        if len(pts) >= 3 and np.ptp(cv) > 0 and np.ptp(lb) > 0:
            s["pearson"], s["spearman"] = float(stats.pearsonr(cv, lb)[0]), float(stats.spearmanr(cv, lb)[0])
        out["schemes"][scheme] = s
    if out["schemes"]:
        key = lambda k: (-(out["schemes"][k]["spearman"] if out["schemes"][k]["spearman"] is not None else -2),
                         out["schemes"][k]["gap"])  # noqa: E731
        out["recommended"] = min(out["schemes"], key=key)
    if png is not None and table:
        out["png"] = _scheme_scatter(table, out, Path(png))
    return out


def _scheme_scatter(table: dict, info: dict, png: Path) -> Path:
    from .figures import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for scheme, pts in table.items():
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], label=scheme)
    lo = min(min(p[1], p[2]) for pts in table.values() for p in pts)
    hi = max(max(p[1], p[2]) for pts in table.values() for p in pts)
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="CV = public")
    ax.set(xlabel="CV", ylabel="public score", title=f"{info['competition']}: CV per validation scheme")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
