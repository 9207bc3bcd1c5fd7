"""`kit report`: the site for the demo after a real run, a second run and an ensemble, checked in headless Chromium."""
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.competition import load_competition
from kit.config import Config, save_config
from kit.ensemble import ensemble_runs
from kit.folds import create_folds
from kit.ledger import Ledger
from kit.report import ReportError, build_report, pick_finals
from kit.report_data import config_diff, parent_of, read_metrics
from kit.submissions import submit_run
from kit.tables import write_probs
from tests.helpers import ROOT, kit, launch

BASELINE = ROOT / "experiments" / "exp001_baseline.py"
SAME_WORKER = pytest.mark.xdist_group("report_site")  # the demo site is built once, on one worker


def _second_run(runs: Path, comp_dir: Path, like: Path, name: str = "exp002_other") -> Path:
    """A finished run beside the real one (same OOF ids), leaning to the true class, with exp001 as parent."""
    comp = load_competition(comp_dir)
    rng = np.random.default_rng(1)
    oof_ids = pd.read_parquet(like / "oof.parquet")[comp.id_column].tolist()
    labels = comp.read_train().set_index(comp.id_column)[comp.target]
    y = labels.loc[oof_ids].map({c: i for i, c in enumerate(comp.classes)}).to_numpy()
    oof = rng.dirichlet(np.ones(10), len(y)) + 0.6 * np.eye(10)[y]
    run = runs / name
    (run / "fold0").mkdir(parents=True)
    write_probs(run / "oof.parquet", oof_ids, oof / oof.sum(1, keepdims=True), comp)
    test_ids = comp.read_test()[comp.id_column].tolist()
    write_probs(run / "test.parquet", test_ids, rng.dirichlet(np.ones(10), len(test_ids)), comp)
    save_config(Config(comp=str(comp_dir), name=name, lr=5e-4, epochs=2), run / "config.yaml")
    (run / "experiment.py").write_text('"""exp002_other.\n\nParent: exp001_baseline.\n"""\n')
    lineage = json.loads((like / "lineage.json").read_text())
    (run / "lineage.json").write_text(json.dumps({**lineage, "experiment": name}))
    (run / "cv.json").write_text(json.dumps({"cv": 0.5, "metric": comp.metric, "per_fold": {"0": 0.5}}))
    return run


def _adval_and_pseudo(comp_dir: Path, runs: Path) -> None:
    """What `kit adval` (minutes on the demo) and a `kit pseudo` round leave behind, written directly."""
    from PIL import Image
    out = comp_dir / "adval"
    out.mkdir()
    report = {"auc": 0.97, "auc_by_aug": {"none": 0.97, "testlike": 0.61}, "chosen_aug": "testlike",
              "auc_after": 0.61, "auc_drop": 0.36, "size": 28, "n_train": 555, "n_test": 1242,
              "top_stats": [{"stat": "noise", "ks": 0.91, "train_mean": 1.2, "test_mean": 6.0}]}
    (out / "adval.json").write_text(json.dumps(report))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(
        out / "train_most_testlike.png")
    rnd = runs / "exp001_baseline_pl1"
    rnd.mkdir()
    (rnd / "pseudo.json").write_text(json.dumps({
        "round": 1, "parent": "exp001_baseline", "root": "exp001_baseline", "threshold": 0.9, "rows": 300,
        "unique_ids": 300, "per_class": {"3": 40, "7": 20}, "cv": 0.2}))


@pytest.fixture(scope="module")
def demo_site(demo_dir, tmp_path_factory):
    """The demo after a 2-epoch accelerate run (2 folds), a second run, an ensemble, 3 submissions; `kit report`."""
    work = tmp_path_factory.mktemp("report")
    comp = work / "demo"
    shutil.copytree(demo_dir, comp, ignore=shutil.ignore_patterns(".kit_cache", "folds.csv"))
    runs = work / "runs"
    create_folds(load_competition(comp), 2, "stratified", 42, "", False)
    launch(BASELINE, f"--comp={comp}", f"--out_dir={runs}", "--fold=all", "--epochs=2", "--limit=80",
           "--num_workers=0", "--model=test_resnet", "--valid_schemes=plain,testlike", "--resume=never", cwd=work)
    _second_run(runs, comp, runs / "exp001_baseline")
    subs = work / "submissions"  # in-process: each `kit` subprocess would spend seconds on imports
    submit_run("exp001_baseline", "baseline <b>not bold</b>", runs, subs)
    submit_run("exp002_other", "second run", runs, subs)
    ensemble_runs(["exp001_baseline", "exp002_other"], "soft", "ens_demo", runs)
    submit_run("ens_demo", "soft ensemble", runs, subs)
    _adval_and_pseudo(comp, runs)
    r = kit("report", f"--out={work / 'site'}", cwd=work)
    assert "3 submission(s), 3 run page(s)" in r.stdout, r.stdout
    return work, work / "site"


@pytest.fixture(scope="module")
def browser():
    from tests.browser import Browser
    b = Browser()
    yield b
    b.close()


IMAGES_OK = ("[...document.images].every(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0 "
             "&& i.getBoundingClientRect().width > 0 && i.getBoundingClientRect().height > 0)")


@SAME_WORKER
@pytest.mark.slow
def test_site_opens_offline_with_every_image_and_a_sortable_ledger(demo_site, browser, capsys):
    work, site = demo_site
    rows = Ledger(work / "submissions" / "ledger.db").rows()
    browser.open((site / "index.html").as_uri())
    assert browser.eval(IMAGES_OK) and browser.eval("document.images.length") >= 2
    assert browser.eval("document.querySelectorAll('#ledger tbody tr').length") == len(rows) == 3
    assert browser.eval("document.querySelectorAll('#ledger tr.pick-cv, #ledger tr.pick-public').length") >= 1
    assert not browser.eval("[...document.querySelectorAll('b')].some(b => b.textContent === 'not bold')")
    assert "baseline &lt;b&gt;not bold&lt;/b&gt;" in (site / "index.html").read_text()  # messages are text
    ids = "[...document.querySelectorAll('#ledger tbody tr')].map(r => +r.id.slice(1))"
    before = browser.eval(ids)
    assert before == [r["id"] for r in rows]
    public = {r["id"]: r["public"] for r in rows}
    click = "[...document.querySelectorAll('#ledger th')].find(h => h.textContent.trim() === 'public').click()"
    browser.eval(click)
    asc = browser.eval(ids)
    assert asc == sorted(public, key=public.get) and asc != before  # the rows moved, in score order
    browser.eval(click)
    assert browser.eval(ids) == sorted(public, key=public.get, reverse=True)
    browser.eval("const f = document.getElementById('filter'); f.value = 'ensemble'; "
                 "f.dispatchEvent(new Event('input'))")
    assert browser.eval("[...document.querySelectorAll('#ledger tbody tr')].filter(r => r.style.display !== 'none')"
                        ".length") == 1
    browser.eval("const g = document.getElementById('filter'); g.value = ''; g.dispatchEvent(new Event('input'))")
    shot = browser.screenshot(site.parent / "report_index.png")
    artifact = Path(os.environ.get("KIT_ARTIFACTS", tempfile.gettempdir())) / "kit_report_index.png"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, artifact)
    with capsys.disabled():
        print(f"\nkit report screenshot: {shot} (copy: {artifact})")
    assert shot.stat().st_size > 10_000
    assert browser.problems() == []


@SAME_WORKER
@pytest.mark.slow
def test_every_linked_page_loads_offline_and_shows_its_sections(demo_site, browser):
    work, site = demo_site
    html = (site / "index.html").read_text()
    links = sorted(set(re.findall(r'href="((?:runs/)?[^"#]+\.html)"', html)) - {"index.html"})
    assert {"runs/exp001_baseline.html", "runs/exp002_other.html", "runs/ens_demo.html"} <= set(links)
    assert any(link.startswith("diff_") for link in links) and "adval.html" in links
    for link in links:
        browser.open((site / link).as_uri())
        assert browser.eval(IMAGES_OK), link
        assert browser.problems() == [], link
    page = (site / "runs" / "exp001_baseline.html").read_text()
    for section in ("Learning curves", "Per-class F1", "Confusion matrix", "Misclassified", "Validation schemes",
                    "Lineage", "Pseudo-label rounds", "Adversarial validation"):
        assert f"<h2>{section}" in page, section
    other = (site / "runs" / "exp002_other.html").read_text()
    assert "parent experiment" in other and "<td>lr</td><td>0.002</td><td>0.0005</td>" in other
    ens = (site / "runs" / "ens_demo.html").read_text()
    assert "<h2>Ensemble" in ens and "exp002_other" in ens


@SAME_WORKER
@pytest.mark.slow
def test_rerun_rebuilds_only_what_changed(demo_site, monkeypatch):
    work, site = demo_site
    monkeypatch.chdir(work)
    assert build_report(out=str(site))["rebuilt"] == 0
    cv = work / "runs" / "exp002_other" / "cv.json"
    cv.write_text(json.dumps({**json.loads(cv.read_text()), "per_class_f1": {str(i): 0.5 for i in range(10)}}))
    again = build_report(out=str(site))
    assert again["rebuilt"] == 1 and "Per-class F1" in (site / "runs" / "exp002_other.html").read_text()
    with pytest.raises(ReportError, match="known: \\['demo'\\]"):
        build_report(comp="nope", out=str(site))
    with pytest.raises(ReportError, match="ledger #99"):
        build_report(out=str(site), diff="1:99")


def test_final_picks_follow_the_metric_direction_and_the_recommended_scheme():
    rows = [{"id": 1, "cv": 0.5, "public": 0.30}, {"id": 2, "cv": 0.7, "public": 0.20},
            {"id": 3, "cv": 0.6, "public": None}]
    schemes = {1: {"plain": 0.5, "testlike": 0.40}, 2: {"plain": 0.7, "testlike": 0.10}, 3: {"plain": 0.6}}
    assert pick_finals(rows, schemes, "plain", "macro_f1") == {"cv": 2, "public": 1}
    assert pick_finals(rows, schemes, "testlike", "macro_f1") == {"cv": 1, "public": 1}
    assert pick_finals(rows, schemes, "plain", "log_loss") == {"cv": 1, "public": 2}
    assert pick_finals(rows, schemes, None, "macro_f1") == {"cv": 2, "public": 1}


def test_run_readers_parent_config_diff_and_torn_metrics(tmp_path):
    run = tmp_path / "exp005_x"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0" / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 1.0}\n{"epoch": 1, "tra')
    assert read_metrics(run) == {0: [{"epoch": 0, "train_loss": 1.0}]}
    (run / "experiment.py").write_text('"""x\n\nParent: exp004_y.\nResult: ..."""\n')
    assert parent_of(run) == "exp004_y"
    (run / "pseudo.json").write_text(json.dumps({"parent": "exp005_x_pl0", "round": 1}))
    assert parent_of(run) == "exp005_x_pl0"
    assert config_diff({"lr": 1, "name": "a", "aug": "x"}, {"lr": 2, "name": "b", "aug": "x"}) == [("lr", 1, 2)]


def test_segmentation_run_page_shows_tuned_thresholds_and_min_areas(tmp_path):
    from kit.demo import make_demo
    from kit.report_data import gather_run
    from kit.report_pages import run_page
    comp = make_demo(tmp_path / "seg", 0, "segmentation")
    run = tmp_path / "runs" / "seg1"
    run.mkdir(parents=True)
    save_config(Config(comp=str(comp), name="seg1"), run / "config.yaml")
    (run / "cv.json").write_text(json.dumps({"cv": 0.8, "metric": "dice", "threshold": [0.35, 0.6],
                                             "min_area": [0, 12], "oof_fixed_threshold": 0.7, "oof_score": 0.8}))
    info = gather_run(tmp_path / "runs", "seg1", [])
    ctx = {"competition": "demo_seg", "metric": "dice", "pages": {"seg1"}, "nav": [("overview", "index.html")]}
    html = run_page(info, ctx)
    assert "Segmentation post-processing" in html
    section = html.split("Segmentation post-processing", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", section) == ["0", "0.3500", "0", "1", "0.6000", "12"]
