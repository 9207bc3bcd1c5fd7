"""Kaggle uploads and score sync through the kaggle package's own KaggleApi, with only urllib3 replaced."""
import base64
import hashlib
import io
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score

from kit import cli
from kit.ledger import Ledger
from kit.submissions import SubmissionError, submit_run, sync_kaggle
from tests.fake_kaggle import FakeKaggle
from tests.run_factory import make_run

SECRET = "k3y-5ecret-0123456789abcdef"


@pytest.fixture
def setup(demo_copy, tmp_path, monkeypatch):
    """A demo copy that has a Kaggle slug and no local leaderboard, credentials in the env, a fake Kaggle."""
    spec = yaml.safe_load((demo_copy / "competition.yaml").read_text())
    spec.update(kaggle="kit-demo", leaderboard="", daily_limit=3)
    (demo_copy / "competition.yaml").write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLE_USERNAME", "kit-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    fake = FakeKaggle().install(monkeypatch)
    truth = pd.read_csv(demo_copy / "leaderboard" / "solution.csv", dtype=str)

    def score(data: bytes):  # Kaggle's scorer, written independently of kit.leaderboard
        sub = pd.read_csv(io.BytesIO(data), dtype=str).set_index("id")["label"]
        out = []
        for usage in ("Public", "Private"):
            part = truth[truth.Usage == usage]
            out.append(f1_score(part.label, sub.loc[part.id].to_numpy(), average="macro",
                                labels=[str(c) for c in range(10)], zero_division=0))
        return tuple(out)

    runs = tmp_path / "runs"
    for i, skill in enumerate((0.3, 0.6, 0.9, 0.5)):
        make_run(runs, demo_copy, f"exp{i}", skill, seed=i, cv=0.2 + skill / 2)
    return {"fake": fake, "runs": runs, "out": tmp_path / "submissions", "score": score, "comp": demo_copy}


def _secret_nowhere(out_dir, captured: str):
    assert SECRET not in captured
    for f in out_dir.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_upload_is_recorded_then_sync_fills_kaggle_scores(setup, capsys, monkeypatch):
    from kaggle.api.kaggle_api_extended import KaggleApi
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    logins, authenticate = [], KaggleApi.authenticate

    def counted(api, *a, **k):
        logins.append(api)
        return authenticate(api, *a, **k)

    monkeypatch.setattr(KaggleApi, "authenticate", counted)
    row = submit_run("exp2", "effnet", runs, out)
    assert len(logins) == 1, "the daily count and the upload share one client"
    assert row["target"] == "kaggle" and row["status"] == "pending" and row["kaggle_slug"] == "kit-demo"
    [sub] = fake.submissions
    assert row["kaggle_ref"] == sub["ref"]
    assert hashlib.sha256(sub["data"]).hexdigest() == row["sha256"]  # Kaggle got exactly the recorded file
    assert sub["description"] == "effnet" and sub["file_name"] == row["file"].split("/")[-1]
    auth = [r["headers"].get("Authorization", "") for r in fake.requests if "api.kaggle.com" in r["url"]]
    assert auth and all(a == "Basic " + base64.b64encode(f"kit-user:{SECRET}".encode()).decode() for a in auth)
    assert sync_kaggle(Ledger(out / "ledger.db")) == []  # still scoring: nothing changes
    public, private = setup["score"](sub["data"])
    fake.finish(sub["ref"], public, private)
    [synced] = sync_kaggle(Ledger(out / "ledger.db"))
    assert synced["status"] == "scored"
    assert synced["public"] == pytest.approx(public, abs=1e-5) and synced["private"] == pytest.approx(private, abs=1e-5)
    _secret_nowhere(out, "".join(capsys.readouterr()))


def test_a_failed_upload_is_read_from_kaggles_answer_whatever_the_cli_exit_status(setup, capsys, monkeypatch):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    fake.upload_status = 403  # the storage bucket refuses the file
    csv = setup["comp"] / "sample_submission.csv"
    import kaggle.cli
    monkeypatch.setattr(sys, "argv", ["kaggle", "competitions", "submit", "kit-demo", "-f", str(csv), "-m", "x"])
    try:  # kaggle releases differ: some exit 0 after this failure, others 1; kit must not depend on either
        kaggle.cli.main()
    except SystemExit as e:
        assert e.code in (None, 0, 1), e.code
    printed = capsys.readouterr()
    assert "Could not submit to competition" in printed.out + printed.err  # the stream differs by release too
    assert fake.submissions == []
    with pytest.raises(SystemExit) as e:
        cli.submit("exp1", m="will fail", runs=str(runs), out=str(out))
    assert e.value.code != 0 and "Could not submit to competition" in str(e.value.code)
    [row] = Ledger(out / "ledger.db").rows()
    assert row["status"] == "failed" and "Could not submit" in row["error"] and row["kaggle_ref"] is None
    _secret_nowhere(out, "".join(capsys.readouterr()))


def test_kaggle_errors_are_recorded_with_the_key_scrubbed(setup, capsys):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    fake.create_error = (400, f"Submission limit reached for kit-user (key {SECRET})")
    row = submit_run("exp0", "limit", runs, out)
    assert row["status"] == "failed" and "HTTP 400" in row["error"] and "Submission limit reached" in row["error"]
    assert "***" in row["error"]
    fake.create_error = None
    fake.competitions = set()  # the slug no longer exists (closed or mistyped)
    row = submit_run("exp1", "gone", runs, out)
    assert row["status"] == "failed" and "HTTP 404" in row["error"]
    _secret_nowhere(out, "".join(capsys.readouterr()))


def test_scoring_error_on_kaggle_is_synced_as_error(setup):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    row = submit_run("exp3", "", runs, out)
    fake.finish(row["kaggle_ref"], error="Submission scoring error: ERROR: Could not parse 'label'")
    [synced] = sync_kaggle(Ledger(out / "ledger.db"))
    assert synced["status"] == "error" and "Could not parse" in synced["error"] and synced["public"] is None


def test_daily_limit_guard_counts_utc_today_and_yields_to_force(setup):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    ledger = Ledger(out / "ledger.db")
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=23, minute=59).isoformat()
    for _ in range(5):  # yesterday's uploads do not count today
        ledger.add({"created_utc": yesterday, "kaggle_slug": "kit-demo", "target": "kaggle", "status": "scored"})
    ledger.add({"kaggle_slug": "other-competition", "target": "kaggle", "status": "scored"})  # its own limit
    fake.upload_status = 403
    assert submit_run("exp0", "", runs, out)["status"] == "failed"  # a failed upload does not count
    fake.upload_status = 200
    for i in range(3):
        assert submit_run(f"exp{i}", "", runs, out)["status"] == "pending"
    n_requests, n_files = len(fake.requests), len(list(out.glob("*.csv")))
    with pytest.raises(SubmissionError, match="daily limit reached: 3 Kaggle submission"):
        submit_run("exp3", "", runs, out)
    sent = [r["url"].rsplit("/", 1)[-1] for r in fake.requests[n_requests:]]
    assert sent == ["GetSubmissionLimits"] and len(list(out.glob("*.csv"))) == n_files  # only counted, no work
    row = submit_run("exp3", "forced", runs, out, force=True)
    assert row["status"] == "pending" and len(fake.submissions) == 4


def test_concurrent_submits_never_pass_the_daily_limit_together(setup):
    from concurrent.futures import ThreadPoolExecutor
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]

    def one(i):
        try:
            return submit_run(f"exp{i % 4}", f"race {i}", runs, out)["status"]
        except SubmissionError as e:
            return str(e)[:19]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert sorted(results) == ["daily limit reached"] * 3 + ["pending"] * 3
    assert len(fake.submissions) == 3 and len(list(out.glob("*.csv"))) == 3


def test_without_credentials_the_score_is_left_pending_and_nothing_is_sent(setup, monkeypatch):
    monkeypatch.delenv("KAGGLE_KEY")
    row = submit_run("exp1", "offline", setup["runs"], setup["out"])
    assert row["target"] == "manual" and row["status"] == "pending" and setup["fake"].requests == []


def test_sync_command_reports_updates_and_scrubs_errors(setup, capsys):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    rows = [submit_run(f"exp{i}", f"m{i}", runs, out) for i in range(2)]
    fake.finish(rows[0]["kaggle_ref"], 0.61, 0.6)
    cli.sync(out=str(out))
    printed = capsys.readouterr().out
    assert f"#{rows[0]['id']} scored: public 0.61  private 0.6" in printed and "1 submission(s) updated" in printed
    fake.list_error = (401, f"Unauthorized: bad key {SECRET}")
    with pytest.raises(SystemExit) as e:
        cli.sync(out=str(out))
    assert "401" in str(e.value.code) or "Unauthorized" in str(e.value.code)
    _secret_nowhere(out, str(e.value.code) + "".join(capsys.readouterr()))


def test_upload_killed_before_kaggle_answered_is_reconciled_by_sync(setup):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    reached = submit_run("exp0", "reached", runs, out)  # Kaggle has this one; its answer is then "lost"
    ledger = Ledger(out / "ledger.db")
    ledger.update(reached["id"], status="uploading", kaggle_ref=None)
    old = (datetime.now(timezone.utc) - timedelta(minutes=30)).isoformat(timespec="seconds")
    lost = ledger.add({"created_utc": old, "kaggle_slug": "kit-demo", "target": "kaggle", "status": "uploading",
                       "file": str(out / "never_sent.csv"), "message": "cut off"})
    fresh = ledger.add({"kaggle_slug": "kit-demo", "target": "kaggle", "status": "uploading",
                        "file": str(out / "in_flight.csv"), "message": "still uploading"})
    assert ledger.count_today("kit-demo") == 3
    changed = {r["id"]: r for r in sync_kaggle(ledger)}
    assert changed[reached["id"]]["status"] == "pending" and changed[reached["id"]]["kaggle_ref"] == fake.submissions[0]["ref"]
    assert changed[lost]["status"] == "failed" and "interrupted before Kaggle answered" in changed[lost]["error"]
    assert fresh not in changed  # a young upload may still be on its way: left alone
    assert ledger.count_today("kit-demo") == 2  # the one that never reached Kaggle no longer counts


def test_daily_limit_counts_what_kaggle_counts_website_and_teammates_included(setup, capsys):
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    fake.upload_elsewhere("teammate")
    fake.upload_elsewhere("website", when=datetime.now(timezone.utc) - timedelta(days=1))  # yesterday: not today
    fake.upload_elsewhere("website")
    assert submit_run("exp0", "", runs, out)["status"] == "pending"  # 2 elsewhere + 1 here = competition.yaml's 3
    n_requests = len(fake.requests)
    with pytest.raises(SubmissionError, match=r"daily limit reached: 3 .*Kaggle \(competition_get_submission_limits: 3"):
        submit_run("exp1", "", runs, out)
    assert not [r for r in fake.requests[n_requests:] if "CreateSubmission" in r["url"]]  # refused before upload
    fake.daily_cap = 1  # Kaggle's own cap below competition.yaml's: Kaggle's wins
    fake.submissions.clear()
    fake.upload_elsewhere("website")
    Ledger(out / "ledger.db").update(1, created_utc="2020-01-01T00:00:00+00:00")
    with pytest.raises(SubmissionError, match="daily limit reached: 1 "):
        submit_run("exp1", "", runs, out)


def test_daily_limit_falls_back_to_kaggles_list_then_to_the_ledger(setup, capsys, monkeypatch):
    from kaggle.api.kaggle_api_extended import KaggleApi
    fake, runs, out = setup["fake"], setup["runs"], setup["out"]
    if hasattr(KaggleApi, "competition_get_submission_limits"):  # a kaggle release without the limits call
        monkeypatch.delattr(KaggleApi, "competition_get_submission_limits")
    for _ in range(3):
        fake.upload_elsewhere("teammate")
    with pytest.raises(SubmissionError, match=r"Kaggle \(competition_submissions: 3 today\)"):
        submit_run("exp0", "", runs, out)
    fake.submissions.clear()
    fake.list_error = (503, "Service Unavailable")  # Kaggle cannot count: the ledger still guards
    for i in range(3):
        assert submit_run(f"exp{i}", "", runs, out)["status"] == "pending"
    assert "counting the local ledger only" in capsys.readouterr().out
    with pytest.raises(SubmissionError, match="counted by the local ledger"):
        submit_run("exp3", "", runs, out)


def test_submission_list_reads_every_page_through_the_public_call(setup):
    from kit.kaggle_client import list_submissions
    fake = setup["fake"]
    refs = [fake.upload_elsewhere(f"s{i}") for i in range(7)]
    listed = list_submissions("kit-demo", page_size=3)
    assert [s["ref"] for s in listed] == refs[::-1]  # newest first, pages 1-3 (3 + 3 + 1)
    pages = [json.loads(r["body"]).get("page") for r in fake.requests if r["url"].endswith("/ListSubmissions")]
    assert pages == [1, 2, 3]
    kit_sources = "".join(p.read_text() for p in (Path(__file__).parents[1] / "kit").glob("*.py"))
    assert "kagglesdk" not in kit_sources  # only the kaggle package's public KaggleApi calls
