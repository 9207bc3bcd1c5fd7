"""Code competitions: runs and an ensemble exported, their notebook run offline in a fresh environment.

The fresh environment stands for Kaggle's image: a new virtual environment that sees this one's packages
(torch, timm, albumentations, ... are preinstalled there) but not its kit; the kit comes from the exported
wheel, installed with `pip install --no-index`. The competition folder the notebook reads holds only the
test images and the sample submission, and nothing may be written into it.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import save_file

from kit.competition import load_competition
from kit.demo import make_demo
from kit.ensemble import ensemble_runs
from kit.export import ExportError, export_runs
from kit.folds import create_folds
from kit.infer import experiment_class
from kit.launch import run
from kit.models import create_model
from kit.ledger import Ledger
from kit.predict import predict_run
from kit.push import PushError, push_export
from kit.submissions import submit_run, sync_kaggle
from tests.fake_kaggle import FakeKaggle
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("export")]  # one worker trains the runs once

# An experiment whose model is not what its config alone would rebuild: a temperature module around the net.
TEMPERED = '''"""exp_tempered: the baseline with a learnable temperature on the logits."""
import torch

from kit import Config, Trainer, run
from kit.models import create_model


class Tempered(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.t = net, torch.nn.Parameter(torch.full((1,), 2.0))

    def forward(self, x):
        return self.net(x) / self.t


class Exp(Trainer):
    config = Config(model="test_resnet", img_size=32)

    def build_model(self):
        cfg = self.config
        return Tempered(create_model(cfg.model, self.comp.num_classes, cfg.pretrained, cfg.weights))


if __name__ == "__main__":
    run(Exp)
'''
FAST = ["--epochs=1", "--limit=60", "--batch_size=16", "--num_workers=0", "--img_size=32"]


def small_copy(src, dst, n_test):
    """The demo with its first n_test test images only (a quick test set), no leaderboard."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".kit_cache", "folds.csv", "leaderboard"))
    sample = pd.read_csv(dst / "sample_submission.csv", dtype=str)
    keep = set(sample.id[:n_test])
    sample[sample.id.isin(keep)].to_csv(dst / "sample_submission.csv", index=False)
    for p in (dst / "test").iterdir():
        if p.stem not in keep:
            p.unlink()
    spec = yaml.safe_load((dst / "competition.yaml").read_text())
    spec.pop("leaderboard", None)
    (dst / "competition.yaml").write_text(yaml.safe_dump(spec))
    return dst


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir):
    """Two classification runs (one with its own build_model, trained from local 'pretrained' weights), a
    weighted ensemble with TTA on one member, one segmentation run, and `kit submit` CSVs of each."""
    tmp = tmp_path_factory.mktemp("export")
    comp = small_copy(demo_dir, tmp / "demo", 150)
    create_folds(load_competition(comp), 2)
    runs, subs = tmp / "runs", tmp / "submissions"
    (tmp / "exp_tempered.py").write_text(TEMPERED)
    weights = tmp / "pretrained.safetensors"  # a local checkpoint standing for downloaded hub weights
    save_file(create_model("test_resnet", 1000).state_dict(), str(weights))
    base = experiment_class(ROOT / "experiments" / "exp001_baseline.py")
    common = [f"--comp={comp}", f"--out_dir={runs}", "--fold=all", "--model=test_resnet", *FAST]
    run(base, [*common, "--name=exp_a"])
    run(experiment_class(tmp / "exp_tempered.py"), [*common, "--name=exp_b", "--pretrained=true",
                                                      f"--weights={weights}", "--seed=1"])
    weights.unlink()  # what predicting and exporting need is in the run folder, nothing else
    predict_run("exp_b", "hflip", runs=runs, keep="always")  # the views whatever the OOF says, as the checks expect
    ensemble_runs(["exp_a", "exp_b"], "weighted", "ens", runs)
    seg = make_demo(tmp / "demo_seg", task="segmentation")
    seg_cls = experiment_class(ROOT / "experiments" / "exp_seg001_unet.py")
    run(seg_cls, [f"--comp={seg}", f"--out_dir={runs}", "--name=seg", "--encoder=tu-test_resnet", "--tta=hflip",
                  "--epochs=1", "--limit=60", "--num_workers=0", "--img_size=32", "--batch_size=16"])
    csv = {name: Path(submit_run(name, runs=runs, out=subs, target="manual")["file"]) for name in ("exp_a", "ens", "seg")}
    return {"tmp": tmp, "comp": comp, "seg": seg, "runs": runs, "csv": csv}


def same_csv(got, want, kind):
    a, b = pd.read_csv(got, dtype=str, keep_default_na=False), pd.read_csv(want, dtype=str, keep_default_na=False)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    assert (a == b).all().all(), f"{kind}: {int((a != b).any(axis=1).sum())} rows differ"


def test_export_of_one_run_writes_the_package_and_reproduces_kit_submit(trained, capsys):
    out = trained["tmp"] / "export" / "exp_a"
    info = export_runs(["exp_a"], out, trained["runs"])
    ds = out / "dataset"
    meta = json.loads((ds / "package.json").read_text())
    [member] = meta["members"]
    assert sorted(member["weights"]) == ["0", "1"] and member["views"] == ["none"]
    assert member["model"]["mean"] == "0.5,0.5,0.5" and member["model"]["timm_model"] == "test_resnet"
    assert "leaderboard" not in yaml.safe_load((ds / "competition.yaml").read_text())
    kernel = json.loads((out / "kernel" / "kernel-metadata.json").read_text())
    assert kernel["enable_internet"] is False and kernel["dataset_sources"] == [info["dataset"]]
    assert (out / "kernel" / kernel["code_file"]).exists()
    # the wheel holds the kit's source, not a pointer to this checkout
    with zipfile.ZipFile(ds / info["wheels"][0]) as zf:
        names = zf.namelist()
    assert "kit/infer.py" in names and not any("editable" in n or n.endswith(".pth") for n in names)
    # measured on the local test images: the same probabilities as the run's own table
    assert info["images"] == 150 and info["cpu_s_per_1000"] > 0 and info["max_abs_diff_vs_run"] < 1e-5
    assert info["size_bytes"] == sum(p.stat().st_size for p in ds.iterdir())
    with pytest.raises(ExportError, match="not empty"):
        export_runs(["exp_a"], out, trained["runs"])
    with pytest.raises(ExportError, match="not a trained run"):
        export_runs(["nope"], trained["tmp"] / "export" / "nope", trained["runs"])


def fresh_venv(path):
    """A new environment over this one's packages (Kaggle's preinstalled image), without this one's kit."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # a path line only: .pth files in the shared folder (the editable kit among them) are not processed
    (path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" /
     "image.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin" / "python", site


RUN_NOTEBOOK = '''
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
nb.cells.append(nbformat.v4.new_code_cell("import kit; print('KIT_FROM', kit.__file__)"))
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[3])
'''


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def kaggle_input(comp, dst):
    """What a code competition mounts: the test images and the sample submission, read-only."""
    dst.mkdir()
    shutil.copytree(comp / "test", dst / "test")
    shutil.copy(comp / "sample_submission.csv", dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    return dst


def test_notebook_runs_offline_in_a_fresh_environment_and_matches_kit_submit(trained):
    tmp, runs = trained["tmp"], trained["runs"]
    python, site = fresh_venv(tmp / "venv")
    for name, comp in (("exp_a", trained["comp"]), ("ens", trained["comp"]), ("seg", trained["seg"])):
        out = tmp / "export" / f"notebook_{name}"  # the single-run test exports exp_a beside it
        export_runs([name], out, runs, measure=False)
        data = kaggle_input(comp, tmp / f"input_{name}")
        before = snapshot(data)
        work = tmp / f"working_{name}"
        work.mkdir()
        nb = next((out / "kernel").glob("*.ipynb"))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(HF_HUB_OFFLINE="1", KIT_PACKAGE=str(out / "dataset"), KIT_DATA=str(data), OMP_NUM_THREADS="1")
        r = subprocess.run([str(python), "-c", RUN_NOTEBOOK, str(nb), str(work), str(work / "executed.ipynb")],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
        printed = json.dumps(json.loads((work / "executed.ipynb").read_text())["cells"][-1]["outputs"])
        assert f"KIT_FROM {site}" in printed  # the wheel's kit, not this checkout's
        assert snapshot(data) == before  # nothing written into the competition folder
        same_csv(work / "submission.csv", trained["csv"][name], name)
        if name != "seg":  # the exported probability table: the run's or ensemble's own, within float32 rounding
            a = pd.read_parquet(work / "kit_work" / "test.parquet").set_index("id")
            b = pd.read_parquet(runs / name / "test.parquet").set_index("id").loc[a.index, a.columns]
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), atol=1e-5)
        if name == "ens":
            assert json.loads((out / "dataset" / "package.json").read_text())["method"] == "weighted"


def test_run_trained_from_local_weights_predicts_and_exports_without_network(trained, monkeypatch):
    """exp_b was trained with --pretrained=true --weights=<file>; the file is gone, the hub off, sockets blocked."""
    tmp, runs = trained["tmp"], trained["runs"]

    def no_network(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    before = pd.read_parquet(runs / "exp_b" / "test.parquet")
    shutil.rmtree(trained["comp"] / ".kit_cache")  # written by training's pre-flight
    info = predict_run("exp_b", "hflip", runs=runs, oof=False)
    assert info["oof_tta"] is None and info["folds"] == [0, 1]
    after = pd.read_parquet(runs / "exp_b" / "test.parquet")
    np.testing.assert_allclose(after.iloc[:, 1:].to_numpy(), before.iloc[:, 1:].to_numpy(), atol=1e-5)
    assert not (trained["comp"] / ".kit_cache").exists()  # the test-only path writes nothing beside the data
    info = export_runs(["exp_b"], tmp / "export" / "exp_b", runs)
    assert info["max_abs_diff_vs_run"] < 1e-5 and info["cpu_s_per_1000"] > 0
    # the config still says pretrained: a plain rebuild from it would have asked the hub
    assert yaml.safe_load((runs / "exp_b" / "config.yaml").read_text())["pretrained"] is True


SECRET = "k3y-5ecret-0123456789abcdef"


def test_push_creates_then_versions_the_dataset_pushes_the_kernel_and_submits(trained, tmp_path, monkeypatch):
    """Through the kaggle package's own KaggleApi against the local fake Kaggle; success read from its answers."""
    spec_path = trained["comp"] / "competition.yaml"
    spec = spec_path.read_text()
    spec_path.write_text(yaml.safe_dump({**yaml.safe_load(spec), "kaggle": "kit-demo"}, sort_keys=False))
    try:
        out = tmp_path / "export" / "exp_a"
        info = export_runs(["exp_a"], out, trained["runs"], user="kit-user", measure=False)
    finally:
        spec_path.write_text(spec)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / ".kaggle"))
    monkeypatch.setenv("KAGGLE_USERNAME", "kit-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    fake = FakeKaggle(competitions=("kit-demo",)).install(monkeypatch)
    subs = tmp_path / "submissions"

    row = push_export(out, out=subs)  # dataset only, created
    ref = info["dataset"]
    assert row["kaggle_dataset"] == f"{ref}@v1" and row["target"] == "kaggle-code" and row["status"] == "pushed"
    uploaded = fake.datasets[ref][0]
    local = {p.name: p.read_bytes() for p in (out / "dataset").iterdir() if p.name != "dataset-metadata.json"}
    assert uploaded == local  # every file, byte for byte (weights, wheel, package.json)

    row = push_export(out, kernel=True, submit=True, message="code sub", out=subs)  # a new version, kernel, submit
    assert row["kaggle_dataset"] == f"{ref}@v2" and len(fake.datasets[ref]) == 2
    [saved] = fake.kernels[info["kernel"]]
    assert saved["enableInternet"] is False and saved["datasetDataSources"] == [ref]
    assert saved["competitionDataSources"] == ["kit-demo"] and json.loads(saved["text"])["cells"]
    assert row["kaggle_kernel"] == f"{info['kernel']}@v1" and row["status"] == "pending"
    sub = fake.submissions[-1]
    assert (row["kaggle_ref"], sub["kernel"], sub["kernel_version"]) == (sub["ref"], info["kernel"], 1)
    fake.finish(sub["ref"], public=0.5, private=0.4)  # `kit sync` reads the code submission's score
    [synced] = sync_kaggle(Ledger(subs / "ledger.db"))
    assert (synced["id"], synced["public"], synced["status"]) == (row["id"], 0.5, "scored")

    fake.kernel_error = "Notebook quota exceeded"  # Kaggle's answer says no, without an HTTP error
    with pytest.raises(PushError, match="quota exceeded"):
        push_export(out, kernel=True, out=subs)
    assert SECRET not in (subs / "ledger.db").read_bytes().decode("latin-1")

    monkeypatch.delenv("KAGGLE_USERNAME")  # exported without a user name: refused before any request
    export_runs(["exp_a"], tmp_path / "export" / "anon", trained["runs"], measure=False)
    sent = len(fake.requests)
    with pytest.raises(PushError, match="--user="):
        push_export(tmp_path / "export" / "anon", out=subs)
    assert len(fake.requests) == sent
