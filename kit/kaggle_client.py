"""Kaggle uploads and score reads through the kaggle package's own client (KaggleApi).

Success is read from Kaggle's answer (a submission ref, a 'Successfully submitted' message),
never from an exit code: a failed upload prints "Could not submit to competition", and whether the
kaggle CLI then exits 0 or 1 has changed between its releases. Credentials stay inside the kaggle package: this module only checks
that they exist and scrubs their values from any text it passes on.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

CREDENTIAL_ENV = ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_PASSWORD")


@dataclass
class UploadResult:
    ok: bool
    ref: int | None  # Kaggle's submission id when the upload was accepted
    message: str  # Kaggle's answer (or the error), credentials scrubbed


def config_dir() -> Path:
    """Where the kaggle package looks for kaggle.json / access_token."""
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def has_credentials() -> bool:
    """Whether the kaggle package can authenticate (env or files), without reading any secret."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    d = config_dir()
    return any((d / n).is_file() for n in ("kaggle.json", "access_token", "access_token.txt", "credentials.json"))


# an Authorization header's value, as a header line or inside a printed dict: whatever credential it holds
AUTH_VALUE = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:basic|bearer|token)\s+)[A-Za-z0-9+/=._~-]+")


def redact(text: str) -> str:
    """`text` with every known credential value replaced by '***'."""
    secrets = [os.environ.get(k) for k in CREDENTIAL_ENV]
    try:
        secrets.append(json.loads((config_dir() / "kaggle.json").read_text()).get("key"))
    except (OSError, ValueError, AttributeError):
        pass
    for name in ("access_token", "access_token.txt"):
        try:
            secrets.append((config_dir() / name).read_text().strip())
        except OSError:
            pass
    user = os.environ.get("KAGGLE_USERNAME", "")
    for s in [*secrets]:  # HTTP Basic auth carries base64("user:key"), which does not contain the key itself
        if s and user:
            secrets.append(base64.b64encode(f"{user}:{s}".encode()).decode())
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return AUTH_VALUE.sub(r"\1***", text)


def make_api():
    """An authenticated KaggleApi; its import-time chatter and auth help are kept off the terminal."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except SystemExit:  # older kaggle versions exit at import without credentials
            raise RuntimeError("kaggle: no credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)")
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:
            raise RuntimeError("kaggle: no credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)") from None
    return api


def upload(csv: str | Path, message: str, slug: str, api=None) -> UploadResult:
    """Submit `csv` to competition `slug`; ok only when Kaggle's answer says it was accepted."""
    api = api or make_api()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            resp = api.competition_submit(str(csv), message, slug, quiet=True)
    except Exception as e:  # HTTP errors (404 competition, 429 limit, 401 auth) arrive as exceptions
        status = getattr(getattr(e, "response", None), "status_code", None)
        text = f"HTTP {status}: {e}" if status else f"{type(e).__name__}: {e}"
        return UploadResult(False, None, redact(_with_output(text, sink)))
    answer = (getattr(resp, "message", "") or "").strip()
    ref = int(getattr(resp, "ref", 0) or 0)
    failed_text = getattr(type(api), "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", "Could not submit to competition")
    ok = answer != failed_text and (ref > 0 or answer.lower().startswith("successfully submitted"))
    text = answer or "Kaggle returned an empty answer"
    return UploadResult(ok, ref or None, redact(text if ok else _with_output(text, sink)))


def _with_output(text: str, sink: io.StringIO) -> str:
    printed = " ".join(sink.getvalue().split())
    return f"{text} ({printed})" if printed else text


def list_submissions(slug: str, api=None, max_pages: int = 20, page_size: int = 100) -> list[dict]:
    """Every submission Kaggle lists for `slug` (newest first) as plain dicts, through KaggleApi's public call."""
    api = api or make_api()
    out = []
    for page in range(1, max_pages + 1):
        with contextlib.redirect_stdout(io.StringIO()):
            listed = api.competition_submissions(slug, page_number=page, page_size=page_size) or []
        for s in listed:
            out.append({"ref": int(s.ref), "file_name": s.file_name, "description": s.description,
                        "status": s.status.name.lower(), "public": _score(s.public_score),
                        "private": _score(s.private_score), "error": s.error_description or "",
                        "date": _utc(s.date).isoformat() if s.date else None})
        if len(listed) < page_size:
            break
    return out


@dataclass
class DailyCount:
    used: int  # submissions Kaggle counts for this team since 00:00 UTC (website and teammates included)
    allowed_now: int | None  # how many more Kaggle accepts today; None when this kaggle release cannot say
    source: str  # which public call gave the count


def count_today(slug: str, api=None) -> DailyCount:
    """Kaggle's own count of today's submissions to `slug`: its limits call, else today's rows of its list."""
    api = api or make_api()
    limits = getattr(api, "competition_get_submission_limits", None)  # kaggle >= 2.2.4
    if limits is not None:
        got = limits(slug)
        return DailyCount(int(got.num_today), int(got.num_allowed_now), "competition_get_submission_limits")
    day = datetime.now(timezone.utc).date().isoformat()
    used = sum(1 for s in list_submissions(slug, api=api, max_pages=3) if (s["date"] or "")[:10] == day)
    return DailyCount(used, None, "competition_submissions")


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _score(text) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None
