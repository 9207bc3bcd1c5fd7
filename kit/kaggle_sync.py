"""`kit sync`: the ledger's Kaggle rows brought up to date with Kaggle's own submissions list."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .ledger import Ledger, utc_now

UPLOAD_STALE_S = 15 * 60  # an 'uploading' row this old that Kaggle does not list was cut off before reaching it
INTERRUPTED = ("the upload was interrupted before Kaggle answered, and Kaggle does not list it: it did not count "
               "against the daily limit; submit again")


def _age_s(row: dict) -> float:
    return (datetime.fromisoformat(utc_now()) - datetime.fromisoformat(row["created_utc"])).total_seconds()


def sync_kaggle(ledger: Ledger, api=None) -> list[dict]:
    """Fill status and scores of pending Kaggle rows from Kaggle's submissions list."""
    from .kaggle_client import list_submissions
    pending = ledger.rows("target IN ('kaggle', 'kaggle-code') AND status IN ('pending', 'uploading')")
    changed = []
    for slug in sorted({r["kaggle_slug"] for r in pending} - {None}):
        listed = list_submissions(slug, api=api)
        by_ref = {s["ref"]: s for s in listed}
        for r in [p for p in pending if p["kaggle_slug"] == slug]:
            s = by_ref.get(r["kaggle_ref"]) or _match_by_file(r, listed)
            if s is None:
                if r["status"] == "uploading" and _age_s(r) > UPLOAD_STALE_S:  # the upload never reached Kaggle
                    ledger.update(r["id"], status="failed", error=INTERRUPTED)
                    changed.append(ledger.get(r["id"]))
                continue
            if s["status"] == "complete":
                ledger.update(r["id"], status="scored", public=s["public"], private=s["private"],
                              kaggle_ref=s["ref"], scored_utc=utc_now())
            elif s["status"] == "error":
                ledger.update(r["id"], status="error", kaggle_ref=s["ref"], error=s["error"] or "scoring failed")
            elif r["status"] == "uploading":  # Kaggle has it (so it counts) but the answer was never recorded
                ledger.update(r["id"], status="pending", kaggle_ref=s["ref"], error=None)
            else:
                continue
            changed.append(ledger.get(r["id"]))
    return changed


def _match_by_file(row: dict, listed: list[dict]) -> dict | None:
    """A row uploaded without a ref (old kaggle versions): the same file name and description."""
    name = Path(row["file"]).name
    for s in listed:
        if s["file_name"] == name and (not row["message"] or s["description"] == row["message"]):
            return s
    return None
