"""A read-only competition folder (Kaggle mounts data so) trains, predicts and submits; nothing is written into it."""
import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest

from kit import Config, Trainer, run
from kit.competition import load_competition
from kit.workdir import folds_file, work_dir
from tests.helpers import ROOT, kit, make_tiny


@contextmanager
def read_only(src, dst):
    """`dst` shows `src` read-only: a read-only bind mount as root (chmod does not stop root), else chmod."""
    dst.mkdir()
    if os.geteuid() == 0:
        ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True).returncode == 0
        if not ok:
            pytest.skip("root without permission to mount: cannot make a read-only folder")
        try:
            if subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], capture_output=True).returncode:
                pytest.skip("a read-only remount is not permitted here")
            yield dst
        finally:
            subprocess.run(["umount", str(dst)], check=True)
    else:
        dst.rmdir()
        shutil.copytree(src, dst)
        for d, _, files in os.walk(dst):
            for f in files:
                os.chmod(os.path.join(d, f), 0o444)
            os.chmod(d, 0o555)
        try:
            yield dst
        finally:
            for d, _, _ in os.walk(dst):
                os.chmod(d, 0o755)


class Exp(Trainer):
    config = Config(model="test_resnet", img_size=16, batch_size=8, epochs=1, num_workers=0, n_folds=3,
                    log_with="none", name="ro")


def test_read_only_data_trains_predicts_and_submits(tmp_path, monkeypatch):
    src = make_tiny(tmp_path / "src")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with read_only(src, tmp_path / "ro") as comp_dir:
        with pytest.raises(OSError):
            (comp_dir / "probe").write_text("x")  # the folder really is read-only
        before = sorted(p.name for p in comp_dir.rglob("*"))
        result = run(Exp, [f"--comp={comp_dir}", f"--out_dir={tmp_path / 'runs'}", "--fold=all"])
        assert len(result["per_fold"]) == 3
        comp = load_competition(comp_dir)
        assert work_dir(comp).is_relative_to(tmp_path / "cache") and folds_file(comp).exists()
        # the run's experiment is this test module, which imports from tests/
        r = kit("predict", "ro", f"--runs={tmp_path / 'runs'}", "--tta=flips", cwd=tmp_path,
                env={"PYTHONPATH": str(ROOT)})
        assert "wrote" in r.stdout
        r = kit("submit", "ro", f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'subs'}", "-m", "read-only data",
                cwd=tmp_path)
        assert "wrote" in r.stdout and len(list((tmp_path / "subs").glob("*.csv"))) == 1
        assert sorted(p.name for p in comp_dir.rglob("*")) == before  # nothing was added to the data folder


def test_writable_data_keeps_generated_files_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KIT_CACHE_DIR", raising=False)
    comp = load_competition(make_tiny(tmp_path / "src"))
    assert work_dir(comp) == comp.root and folds_file(comp) == comp.root / "folds.csv"
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "mine"))
    assert work_dir(comp).parent == tmp_path / "mine"  # the user's cache dir wins when set
