"""Out of space for real: checkpoints written onto a small tmpfs by torch.save and safetensors, as training does."""
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from kit.checkpoint import CheckpointError, inspect_checkpoint, list_checkpoints, write_aside, write_checkpoint


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (needs root or CAP_SYS_ADMIN; skipped, saying so, without)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (mount: {r.stderr.strip() or r.returncode}); "
                    "the disk-full path is then covered only by tests/test_checkpoint.py's injected ENOSPC")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _tensor(n):
    return torch.arange(n, dtype=torch.float32)


WRITERS = {
    "torch.save": lambda n: lambda folder: torch.save({"w": _tensor(n)}, folder / "state.pt"),
    "safetensors": lambda n: lambda folder: save_file({"w": _tensor(n)}, str(folder / "model.safetensors")),
}


@pytest.mark.parametrize("library", list(WRITERS))
def test_real_disk_full_names_it_removes_the_partial_write_and_keeps_the_previous(small_fs, library):
    write_checkpoint(small_fs, "e0001-b000000", WRITERS[library](10_000), {})  # 40 kB: fits
    with pytest.raises(CheckpointError) as e:
        write_checkpoint(small_fs, "e0002-b000000", WRITERS[library](1_000_000), {})  # 4 MB: does not
    msg = str(e.value)
    assert "disk full while writing checkpoint" in msg and "e0002-b000000" in msg
    assert "e0001-b000000 is complete and loadable" in msg
    assert [f.path.name for f in list_checkpoints(small_fs)] == ["e0001-b000000"]
    assert inspect_checkpoint(small_fs / "e0001-b000000").complete
    assert not list(small_fs.glob(".tmp-*"))  # the partial folder does not keep the disk full
    write_checkpoint(small_fs, "e0003-b000000", WRITERS[library](10_000), {})  # space is back for the next one
    assert inspect_checkpoint(small_fs / "e0003-b000000").complete


def test_best_weights_on_a_full_disk_keep_the_previous_file(small_fs):
    best = small_fs / "best.safetensors"
    save_file({"w": _tensor(10)}, str(best))
    with pytest.raises(CheckpointError, match="disk full: .*best.safetensors .*the previous one is intact"):
        write_aside(best, lambda tmp: save_file({"w": _tensor(1_000_000)}, str(tmp)))
    assert torch.equal(load_file(str(best))["w"], _tensor(10))
    assert sorted(p.name for p in small_fs.iterdir()) == ["best.safetensors"]
