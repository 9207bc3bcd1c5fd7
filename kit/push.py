"""`kit push`: an export as a Kaggle Dataset (created, or a new version), its notebook pushed, a code submission.

Everything goes through the kaggle package's own KaggleApi. Success is read from Kaggle's answers (an
error field, a version number, a submission ref), never from the absence of an exception alone. A
push is recorded in the ledger as target `kaggle-code` with the dataset version and the kernel slug.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from .kaggle_client import make_api, redact
from .ledger import Ledger
from .package import read_package
from .folds import file_hash

PLACEHOLDER_USER = "your-kaggle-username"


class PushError(RuntimeError):
    """Kaggle refused a step of the push; the message is Kaggle's answer, credentials scrubbed."""


def _quiet(call, *args, **kwargs):
    """Call the kaggle API with its printing kept off the terminal; raise PushError with what it said on failure."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            return call(*args, **kwargs)
    except Exception as e:  # HTTP errors (404, 401, 429) arrive as exceptions
        status = getattr(getattr(e, "response", None), "status_code", None)
        said = " ".join(sink.getvalue().split())
        raise PushError(redact(f"{'HTTP ' + str(status) + ': ' if status else ''}{type(e).__name__}: {e}"
                               + (f" ({said})" if said else ""))) from None


def dataset_version(api, ref: str) -> int | None:
    """The dataset's current version number on Kaggle; None when Kaggle has no dataset `ref` (HTTP 404)."""
    try:
        text = _quiet(api.dataset_status, ref, format="json(current_version_number)")
    except PushError as e:
        if str(e).startswith("HTTP 404"):
            return None
        raise
    return json.loads(text).get("current_version_number")


def dataset_ref(folder: Path) -> str:
    """owner/slug from dataset-metadata.json; refused while it still holds the placeholder user name."""
    ref = json.loads((folder / "dataset-metadata.json").read_text())["id"]
    if ref.startswith(PLACEHOLDER_USER + "/"):
        raise PushError(f"{folder}/dataset-metadata.json: id {ref!r}: export again with --user=<your Kaggle user name> "
                        "(or KAGGLE_USERNAME set)")
    return ref


def push_dataset(api, folder: Path, message: str) -> str:
    """Create the dataset, or add a version when it exists; 'owner/slug@v<N>' as Kaggle numbers it."""
    ref = dataset_ref(folder)
    before = dataset_version(api, ref)
    if before is None:
        resp = _quiet(api.dataset_create_new, str(folder), public=False, quiet=True)
    else:
        resp = _quiet(api.dataset_create_version, str(folder), message, quiet=True)
    if getattr(resp, "error", None) or str(getattr(resp, "status", "")).lower() == "error":
        raise PushError(redact(f"dataset {ref}: {resp.error or 'Kaggle answered with an error'}"))
    after = dataset_version(api, ref)
    if after is None or (before is not None and after <= before):
        raise PushError(f"dataset {ref}: Kaggle lists no new version after the upload (was {before}, now {after})")
    return f"{ref}@v{after}"


def push_kernel(api, folder: Path) -> tuple[str, int]:
    """Push the notebook (kernel-metadata.json); (owner/slug, version number) from Kaggle's answer."""
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    resp = _quiet(api.kernels_push, str(folder))
    if getattr(resp, "error", None) or not getattr(resp, "version_number", None):
        raise PushError(redact(f"kernel {meta['id']}: {resp.error or 'Kaggle returned no version number'}"))
    return meta["id"], int(resp.version_number)


def submit_kernel(api, slug: str, kernel: str, version: int, message: str) -> int:
    """A code-competition submission of the kernel's version; Kaggle's submission ref."""
    resp = _quiet(api.competition_submit_code, "submission.csv", message, slug, kernel=kernel, kernel_version=version,
                  quiet=True)
    ref = int(getattr(resp, "ref", 0) or 0)
    if ref <= 0:
        raise PushError(redact(f"code submission to {slug}: {getattr(resp, 'message', '') or 'no submission ref'}"))
    return ref


def push_export(folder: str | Path, kernel: bool = False, submit: bool = False, message: str = "",
                out: str | Path = "submissions", api=None) -> dict:
    """Upload export/<name>: the dataset always, the kernel with `kernel`, a code submission with `submit`."""
    folder = Path(folder)
    dataset, kernel_dir = folder / "dataset", folder / "kernel"
    package = read_package(dataset)
    if submit and not package.get("kaggle"):
        raise PushError(f"{dataset}/competition.yaml: kaggle: no competition slug to submit to")
    dataset_ref(dataset)  # before any call to Kaggle
    if api is None:
        try:
            api = make_api()
        except RuntimeError as e:  # no credentials
            raise PushError(redact(str(e))) from None
    message = message or f"kit export {package['name']}"
    row = {"competition": package["competition"], "kaggle_slug": package.get("kaggle") or None,
           "file": str(dataset / "package.json"), "sha256": file_hash(dataset / "package.json"),
           "experiments": [m["name"] for m in package["members"]], "message": message, "target": "kaggle-code",
           "members": {m["name"]: m["weight"] for m in package["members"]} if len(package["members"]) > 1 else None,
           "kaggle_dataset": push_dataset(api, dataset, message), "status": "pushed"}
    if kernel or submit:
        slug, version = push_kernel(api, kernel_dir)
        row.update(kaggle_kernel=f"{slug}@v{version}", file=str(next(kernel_dir.glob("*.ipynb"))))
        if submit:
            row.update(kaggle_ref=submit_kernel(api, package["kaggle"], slug, version, message), status="pending")
    ledger = Ledger(Path(out) / "ledger.db")
    return ledger.get(ledger.add(row))
