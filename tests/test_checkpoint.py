"""Checkpoint folders: atomic publication, completeness check, retention, disk full, non-finite losses."""
import errno
import json

import pytest
from safetensors.torch import load_file

from kit.checkpoint import (MARKER, CheckpointError, inspect_checkpoint, list_checkpoints, newest_complete,
                            prune_checkpoints, write_checkpoint)
from kit.resume import NonFiniteLoss, ResumeError, check_processes
from tests.tiny import Tiny


def _writer(payload: bytes):
    def write(folder):
        (folder / "model.bin").write_bytes(payload)
        (folder / "sub").mkdir()
        (folder / "sub" / "state.bin").write_bytes(payload[::-1] + b"x")
    return write


def test_written_checkpoint_lists_every_file_with_its_size(tmp_path):
    path = write_checkpoint(tmp_path, "e0000-b000004", _writer(b"abc"), {"step": 4})
    meta = json.loads((path / MARKER).read_text())
    assert meta["files"] == {"model.bin": 3, "sub/state.bin": 4} and meta["step"] == 4
    assert inspect_checkpoint(path).complete
    assert not list(tmp_path.glob(".tmp-*"))


def test_interrupted_write_leaves_no_checkpoint_and_the_previous_one_intact(tmp_path):
    write_checkpoint(tmp_path, "e0000-b000002", _writer(b"one"), {})

    def dies(folder):
        (folder / "model.bin").write_bytes(b"half")
        raise KeyboardInterrupt  # an interruption that is not an OSError propagates untouched

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, "e0000-b000004", dies, {})
    found, skipped = newest_complete(tmp_path)
    assert found.path.name == "e0000-b000002" and skipped == []  # the half-written one never got a name
    assert (tmp_path / ".tmp-e0000-b000004").exists()  # what a kill leaves; the next save clears it
    write_checkpoint(tmp_path, "e0000-b000004", _writer(b"two"), {})
    prune_checkpoints(tmp_path, keep=2)
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "delete", "marker"])
def test_damaged_newest_checkpoint_is_skipped_with_the_reason(tmp_path, damage):
    for name in ("e0000-b000002", "e0000-b000004"):
        write_checkpoint(tmp_path, name, _writer(b"payload"), {})
    newest = tmp_path / "e0000-b000004"
    if damage == "truncate":
        (newest / "sub" / "state.bin").write_bytes(b"pay")
    elif damage == "delete":
        (newest / "model.bin").unlink()
    else:
        (newest / MARKER).unlink()
    found, skipped = newest_complete(tmp_path)
    assert found.path.name == "e0000-b000002"
    assert [s.path.name for s in skipped] == ["e0000-b000004"]
    reason = {"truncate": "sub/state.bin has 3 bytes, 8 were written", "delete": "model.bin is missing",
              "marker": "no completeness marker"}[damage]
    assert reason in skipped[0].problem


def test_keeps_last_k_plus_best_and_never_deletes_before_the_new_one_is_complete(tmp_path):
    names = [f"e{e:04d}-b{b:06d}" for e in range(3) for b in (0, 3)]
    for i, name in enumerate(names):
        complete_before = [f.path.name for f in list_checkpoints(tmp_path) if f.complete]

        def write(folder, before=complete_before):
            # while the new one is being written, every earlier kept checkpoint is still there
            assert [f.path.name for f in list_checkpoints(tmp_path) if f.complete] == before
            (folder / "w").write_bytes(b"w" * (i + 1))

        write_checkpoint(tmp_path, name, write, {})
        prune_checkpoints(tmp_path, keep=2, protect={"e0000-b000003"})
    assert [f.path.name for f in list_checkpoints(tmp_path)] == ["e0000-b000003", "e0002-b000000", "e0002-b000003"]


def test_disk_full_says_so_and_keeps_the_previous_checkpoint(tmp_path):
    write_checkpoint(tmp_path, "e0000-b000002", _writer(b"good"), {})

    def full(folder):
        (folder / "model.bin").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match=r"disk full while writing checkpoint .*e0000-b000004.*"
                                               r"e0000-b000002 is complete and loadable"):
        write_checkpoint(tmp_path, "e0000-b000004", full, {})
    assert [f.path.name for f in list_checkpoints(tmp_path)] == ["e0000-b000002"]
    assert inspect_checkpoint(tmp_path / "e0000-b000002").complete
    assert not list(tmp_path.glob(".tmp-*"))  # the partial write does not eat more space


def test_changed_process_count_fails_clearly(tmp_path):
    check_processes(2, 2, tmp_path)
    with pytest.raises(ResumeError, match=r"written by 2 process\(es\), this run has 1.*--num_processes 2"):
        check_processes(2, 1, tmp_path)


def _tiny(tmp_path, **changes):
    return Tiny(Tiny.config.override(**{"out_dir": str(tmp_path), "epochs": 2, "ckpt_every": 3, **changes}))


def test_nonfinite_loss_stops_naming_step_epoch_and_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_FAULT", "nonfinite:5")  # the 5th batch's loss becomes NaN
    t = _tiny(tmp_path)
    with pytest.raises(NonFiniteLoss) as e:
        t.fit(0)
    msg = str(e.value)
    # 72 train rows / batch 8 = 9 batches per epoch: step 5 is epoch 0, batch 5
    assert "non-finite loss (nan) at step 5, epoch 0, batch 5 (ids ['r" in msg
    assert "e0000-b000003" in msg  # the last good checkpoint is named (and still complete)
    assert inspect_checkpoint(tmp_path / "tiny" / "fold0" / "checkpoints" / "e0000-b000003").complete


def test_skip_nonfinite_skips_that_batch_and_finishes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_FAULT", "nonfinite:5")
    t = _tiny(tmp_path, skip_nonfinite=1)
    t.fit(0)
    assert "batch skipped (1/1 allowed)" in capsys.readouterr().out
    rows = [json.loads(r) for r in (tmp_path / "tiny" / "fold0" / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and sum(r["loss"] != r["loss"] for r in rows) == 1  # one NaN row, logged, skipped
    assert t.step == 17  # the skipped batch made no optimizer step


def test_auto_resume_continues_same_settings_and_starts_fresh_on_new_ones(tmp_path, capsys):
    keep = {"keep_fold_ckpts": True}  # a finished fold keeps its full-state checkpoints
    _tiny(tmp_path, **keep).fit(0)
    ckpts = tmp_path / "tiny" / "fold0" / "checkpoints"
    # the last two, plus the best epoch's (epoch 0: accuracy never improves after it here)
    assert [f.path.name for f in list_checkpoints(ckpts)] == ["e0001-b000000", "e0001-b000006", "e0002-b000000"]
    t = _tiny(tmp_path, num_workers=0, predict_test=False, **keep)
    t.fit(0)
    out = capsys.readouterr().out
    assert "fold 0: finished earlier" in out and "resumed from" not in out  # done: not even restored
    (ckpts.parent / "done.json").unlink()  # as if killed after the last checkpoint, before the fold was marked done
    t = _tiny(tmp_path, num_workers=0, predict_test=False, **keep)
    t.fit(0)
    out = capsys.readouterr().out
    assert "e0002-b000000: epoch 2, 0 batches into it, step 18" in out and "already finished" in out
    t = _tiny(tmp_path, lr=0.01, **keep)
    t.fit(0)
    out = capsys.readouterr().out
    assert "fold 0: finished earlier, but lr: 0.05 -> 0.01: it runs again" in out
    assert "other settings (lr: 0.05 -> 0.01); starting fresh" in out and t.step == 18
    assert (ckpts.parent / "checkpoints.replaced" / "e0002-b000000").exists()


@pytest.mark.parametrize("sched", ["cosine", "plateau"])
def test_resume_from_a_mid_epoch_checkpoint_ends_bitwise_equal(tmp_path, sched):
    import shutil

    import torch
    # plateau: patience 1 makes torch's bad-epoch counter decide the decay after the resumed epoch
    cfg = dict(epochs=4, sched=sched, plateau_patience=1, ema_decay=0.5, keep_ckpts=20, keep_fold_ckpts=True)
    whole = _tiny(tmp_path / "a", **cfg)
    whole.fit(0)
    root = tmp_path / "a" / "tiny" / "fold0" / "checkpoints"
    shutil.copytree(root.parent, tmp_path / "b" / "tiny" / "fold0")
    part = _tiny(tmp_path / "b", resume=str(tmp_path / "b" / "tiny" / "fold0" / "checkpoints" / "e0002-b000006"), **cfg)
    part.fit(0)
    assert part.step == whole.step == 36
    a, b = (load_file(p / "tiny" / "fold0" / "best.safetensors") for p in (tmp_path / "a", tmp_path / "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for log in ("steps.jsonl", "metrics.jsonl"):
        a, b = ([{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in
                 (p / "tiny" / "fold0" / log).read_text().splitlines()] for p in (tmp_path / "a", tmp_path / "b"))
        assert a == b, log
