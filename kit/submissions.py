"""`kit submit`: a run's test table -> a checked CSV -> a ledger row -> a score (local, Kaggle or later)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from .competition import Competition, load_competition, read_table
from .faults import fault_point
from .kaggle_sync import sync_kaggle
from .ledger import Ledger, utc_now
from .rundir import RunDir, RunDirError, member_names
from .folds import file_hash
from .sub_files import finish_interrupted, partial_path, publish
from .tables import current_predict, output_columns, read_probs
from .tasks import task_of
from .validate import validate_submission
from .errors import KitError

__all__ = ["SubmissionError", "build_submission", "validate_submission", "write_submission", "run_lineage",
           "submit_run", "sync_kaggle"]


class SubmissionError(KitError, ValueError):
    """A submission file breaks the competition's format; the message lists every problem."""


def build_submission(comp: Competition, test_table: Path) -> pd.DataFrame:
    """Arg-max labels (or the probabilities) in the sample submission's id order and header."""
    ids, probs = read_probs(test_table, comp)
    sample = read_table(comp.path(comp.sample_submission))
    kind = comp.submission.get("kind", "label")
    if kind == "label":
        task = task_of(comp, RunDir(Path(test_table).parent).read_json("cv"))  # multilabel: tuned thresholds
        pred = pd.DataFrame({comp.id_column: ids, comp.target: task.submission_labels(probs)})
    elif kind == "probs":
        pred = pd.DataFrame(probs, columns=output_columns(comp))
        pred.insert(0, comp.id_column, ids)
    else:
        raise SubmissionError(f"{comp.root}: submission.kind 'rle' is built by the segmentation pipeline, "
                              "not from a class-probability table")
    sub = sample[[comp.id_column]].merge(pred, on=comp.id_column, how="left")
    return sub[list(sample.columns)]


def stage_submission(comp: Competition, run_dir: Path, out_dir: Path = Path("submissions")) -> tuple[Path, Path]:
    """Build and validate `submissions/<UTC time>_<exp>.csv` as a staged file: (staged path, final path).

    Nothing is left behind when it is refused or the write fails (disk full).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if comp.submission.get("kind") == "rle":  # probability masks, thresholded and run-length encoded
        from .seg_submit import build_rle_submission
        sub = build_rle_submission(comp, run_dir)
    else:
        sub = build_submission(comp, RunDir(run_dir).table("test"))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = out_dir / f"{stamp}_{run_dir.name}.csv"
    return stage_table(comp, sub, path), path


def stage_table(comp: Competition, sub: pd.DataFrame, path: Path) -> Path:
    """Write `sub` as a staged file beside `path` once it passes `kit validate`'s checks; nothing left if not."""
    tmp = partial_path(Path(path))
    try:
        sub.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
        problems = validate_submission(comp, tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SubmissionError(f"could not write {path}: {e}; nothing was written or recorded") from None
    if problems:
        tmp.unlink()
        raise SubmissionError("submission rejected:\n  " + "\n  ".join(problems))
    return tmp


def save_submission(comp: Competition, sub: pd.DataFrame, path: Path) -> Path:
    """Write a submission table as CSV at `path` only when it passes `kit validate`'s checks."""
    path = Path(path)
    publish(stage_table(comp, sub, path), path)
    return path


def write_submission(comp: Competition, run_dir: Path, out_dir: Path = Path("submissions")) -> Path:
    """Build, validate and write `submissions/<UTC time>_<exp>.csv` (no ledger row); raise before writing a bad file."""
    tmp, path = stage_submission(comp, run_dir, out_dir)
    publish(tmp, path)
    return path


def run_cv(run_dir: Path, comp: Competition) -> tuple[float | None, str | None]:
    """The run's CV and which folds it covers: cv.json when complete, else the folds scored so far."""
    cv = RunDir(run_dir).read_json("cv") or {}
    tta = current_predict(run_dir)
    if tta and tta.get("all_folds") and tta.get("cv_tta") is not None and tta.get("kept", True):  # so must the CV
        return float(tta["cv_tta"]), "all"
    if cv.get("cv") is not None:
        return float(cv["cv"]), "all"
    per_fold = cv.get("per_fold") or {}
    if not per_fold:  # a run stopped before collecting: score the fold OOF tables it left
        from .tables import score_oof
        run = RunDir(run_dir)
        oofs = run.fold_files(lambda k: run.table("oof", k))
        if oofs:
            train = comp.read_train()
            per_fold = {str(k): score_oof(comp, train, pd.read_parquet(p))["score"] for k, p in oofs.items()}
    if not per_fold:
        return None, None
    folds = sorted(per_fold, key=str)
    return float(sum(per_fold[k] for k in folds) / len(folds)), ",".join(str(k) for k in folds)


def run_lineage(run_dir: Path, comp: Competition) -> dict:
    """Ledger fields describing what produced a run: code, data, folds, config, CV, TTA, members."""
    run_dir, run = Path(run_dir), RunDir(run_dir)
    lineage = run.read_json("lineage") or {}
    ensemble = run.read_json("ensemble")
    members = None
    experiments = [run_dir.name]
    if ensemble is not None:
        members = ensemble.get("members", ensemble) if isinstance(ensemble, dict) else ensemble
        experiments += [n for n in member_names(members) if n not in experiments]
    config = yaml.safe_load(run.config_path.read_text()) if run.has_config() else None
    cv, cv_folds = run_cv(run_dir, comp)
    return {"experiments": experiments, "members": members, "git_commit": lineage.get("commit"),
            "git_dirty": lineage.get("dirty"), "config": config, "data_hash": lineage.get("data_hash"),
            "folds_hash": lineage.get("folds_hash"), "cv": cv, "cv_folds": cv_folds, "metric": comp.metric,
            "tta": current_predict(run_dir), "pseudo": pseudo_lineage(run_dir), "cv_schemes": run_schemes_cv(run)}


def run_schemes_cv(run: RunDir) -> dict | None:
    """{scheme: CV} of the run's test table: with the views `kit predict` kept (every fold), else schemes.json's."""
    tta = current_predict(run.path)
    if tta and tta.get("all_folds") and tta.get("cv_schemes"):
        return tta["cv_schemes"]
    return (run.read_json("schemes") or {}).get("cv")


def pseudo_lineage(run_dir: Path) -> dict | None:
    """What a pseudo-label round trained on (runs/<exp>_pl<r>/pseudo.json), without its scores."""
    meta = RunDir(run_dir).read_json("pseudo")
    if not meta:
        return None
    keep = ("round", "parent", "root", "threshold", "per_class_top", "soft", "labels_from", "rows", "unique_ids",
            "per_class")
    return {k: meta[k] for k in keep if k in meta}


def run_competition(run_dir: Path) -> Competition:
    """The competition of a run (see RunDir.competition); a run that names none cannot be submitted."""
    try:
        return RunDir(run_dir).competition()
    except RunDirError as e:
        raise SubmissionError(str(e)) from None


def choose_target(comp: Competition, target: str = "auto") -> str:
    """local (a local leaderboard), kaggle (a slug and credentials), or manual (score later by hand)."""
    from .kaggle_client import has_credentials
    from .leaderboard import has_leaderboard
    if target != "auto":
        if target not in ("local", "kaggle", "manual"):
            raise SubmissionError(f"--target={target!r}: choose auto, local, kaggle or manual")
        return target
    if has_leaderboard(comp):
        return "local"
    if comp.kaggle and has_credentials():
        return "kaggle"
    return "manual"


def submit_run(exp: str, message: str = "", runs: str | Path = "runs", out: str | Path = "submissions",
               target: str = "auto", force: bool = False, api=None) -> dict:
    """Build, validate, write, record and score the submission of runs/<exp>; returns its ledger row."""
    run_dir = Path(runs) / exp
    if not RunDir(run_dir).has_test():
        raise SubmissionError(f"{run_dir}/test.parquet (or test_masks.npz) not found: train the experiment "
                              "(with predict_test) first")
    comp = run_competition(run_dir)
    where = choose_target(comp, target)
    ledger = Ledger(Path(out) / "ledger.db")
    for line in finish_interrupted(ledger, Path(out)):
        print(line)
    limit = None  # the daily limit, checked for Kaggle uploads only
    if where == "kaggle":
        from .kaggle_client import has_credentials
        if not comp.kaggle:
            raise SubmissionError(f"{comp.root}/competition.yaml: kaggle: no competition slug to upload to")
        if not has_credentials():
            raise SubmissionError("no Kaggle credentials: ~/.kaggle/kaggle.json, ~/.kaggle/access_token, "
                                  "KAGGLE_API_TOKEN or KAGGLE_USERNAME + KAGGLE_KEY")
        api = api or _kaggle_api()  # one client for the count and the upload
        limit = _check_daily_limit(ledger, comp, force, api)
    staged, path = stage_submission(comp, run_dir, Path(out))
    row = {"competition": comp.name, "comp_dir": str(comp.root), "kaggle_slug": comp.kaggle or None,
           "file": str(path), "sha256": file_hash(staged), "message": message,
           "target": where, "status": "pending", **run_lineage(run_dir, comp)}
    try:  # the CSV becomes final only once its row is committed; a failed commit leaves neither
        fault_point("submit_row")
        row_id = _claim_row(ledger, comp, row, where, limit)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    fault_point("submit_publish")
    publish(staged, path)
    if where != "kaggle":
        if where == "local":
            fault_point("submit_score")
            score_local(ledger, row_id, comp, path)
        return ledger.get(row_id)
    return _upload_kaggle(ledger, comp, path, row, row_id, api)


def _kaggle_api():
    """An authenticated KaggleApi, or None when it cannot be made: the count and the upload then say why."""
    from .kaggle_client import make_api
    try:
        return make_api()
    except Exception:
        return None


def _claim_row(ledger: Ledger, comp: Competition, row: dict, where: str, limit: "DailyLimit | None") -> int:
    """Commit the submission's row; a Kaggle row is claimed under the daily limit in the same transaction."""
    if where != "kaggle":
        return ledger.add(row)
    with ledger.transaction() as con:  # the count and the claim are one step: two submits cannot both pass
        if limit is not None and ledger.count_today(comp.kaggle, con) + limit.offsite >= limit.cap:
            raise SubmissionError(_limit_text(comp, limit))
        return ledger.add({**row, "status": "uploading"}, con)


def _upload_kaggle(ledger: Ledger, comp: Competition, path: Path, row: dict, row_id: int, api) -> dict:
    """Upload a claimed row's CSV and record what Kaggle answered."""
    from .kaggle_client import UploadResult, redact, upload
    try:
        result = upload(path, row["message"] or path.name, comp.kaggle, api=api)
    except Exception as e:  # no client, bad credentials file...: the row must not stay 'uploading'
        result = UploadResult(False, None, redact(f"{type(e).__name__}: {e}"))
    if result.ok:
        ledger.update(row_id, status="pending", kaggle_ref=result.ref, error=None)
    else:
        ledger.update(row_id, status="failed", error=result.message)
    return ledger.get(row_id)


@dataclass
class DailyLimit:
    cap: int  # the tighter of competition.yaml's daily_limit and what Kaggle allows today
    offsite: int  # today's submissions Kaggle counts that this ledger does not have (website, teammates)
    source: str  # where the count came from, for the refusal message


def _limit_text(comp: Competition, limit: DailyLimit) -> str:
    return (f"daily limit reached: {limit.cap} Kaggle submission(s) to {comp.kaggle} already today "
            f"(UTC; counted by {limit.source}, competition.yaml daily_limit {comp.daily_limit}); "
            "resets at 00:00 UTC, or pass --force")


def _check_daily_limit(ledger: Ledger, comp: Competition, force: bool, api=None) -> DailyLimit | None:
    """Refuse before any work when today's uploads reach the limit, counted by Kaggle where it answers."""
    if force:
        return None
    from .kaggle_client import count_today, redact
    local = ledger.count_today(comp.kaggle)
    try:
        kaggle = count_today(comp.kaggle, api)
    except Exception as e:  # offline or refused: the ledger alone still guards this machine's uploads
        print(f"Kaggle's submission count unavailable ({redact(f'{type(e).__name__}: {e}')[:160]}); "
              "counting the local ledger only")
        limit = DailyLimit(comp.daily_limit, 0, "the local ledger")
    else:
        cap = comp.daily_limit
        if kaggle.allowed_now is not None:
            cap = min(cap, kaggle.used + kaggle.allowed_now)
        limit = DailyLimit(cap, max(0, kaggle.used - local), f"Kaggle ({kaggle.source}: {kaggle.used} today)")
    if local + limit.offsite >= limit.cap:
        raise SubmissionError(_limit_text(comp, limit))
    return limit


def score_local(ledger: Ledger, row_id: int, comp: Competition, path: Path) -> dict:
    """Score a ledger row's CSV on the local leaderboard and record public/private."""
    from .leaderboard import score_submission
    scores = score_submission(comp, path)
    ledger.update(row_id, public=scores["public"], private=scores["private"], status="scored",
                  scored_utc=utc_now())
    return scores


def rescore_local(ledger: Ledger, ref: str | int) -> dict:
    """Score again a local-leaderboard row left pending (its submit was interrupted before the score)."""
    row = ledger.find(ref)
    finish_interrupted(ledger, Path(row["file"]).parent)  # a submit killed before its rename: finish it first
    if row["target"] != "local":
        raise SubmissionError(f"#{row['id']} is a {row['target']} submission: give --public and/or --private")
    path = Path(row["file"])
    if not path.exists():
        raise SubmissionError(f"#{row['id']}: {path} not found")
    if file_hash(path) != row["sha256"]:
        raise SubmissionError(f"#{row['id']}: {path} changed since it was recorded (sha256 differs); not scored")
    score_local(ledger, row["id"], load_competition(row["comp_dir"]), path)
    return ledger.get(row["id"])


def record_score(ledger: Ledger, ref: str | int, public: float | None = None, private: float | None = None,
                 comp: str = "") -> dict:
    """Record scores typed in by hand for a submission (ledger id, file or sha256 prefix, or any CSV)."""
    if public is None and private is None:
        return rescore_local(ledger, ref)
    try:
        row = ledger.find(ref)
    except KeyError:
        if not (Path(str(ref)).suffix == ".csv" and Path(str(ref)).is_file()):
            raise
        spec = load_competition(comp) if comp else None  # a CSV made elsewhere: give it a row first
        new = {"file": str(ref), "sha256": file_hash(Path(str(ref))), "target": "manual", "status": "pending"}
        if spec:
            new.update(competition=spec.name, metric=spec.metric, comp_dir=str(spec.root))
        row = ledger.get(ledger.add(new))
    changes = {"status": "scored", "scored_utc": utc_now()}
    if public is not None:
        changes["public"] = float(public)
    if private is not None:
        changes["private"] = float(private)
    if row["target"] not in ("kaggle", "local"):
        changes["target"] = "manual"
    ledger.update(row["id"], **changes)
    return ledger.get(row["id"])
