"""The loader: workers run one thread each, so they never oversubscribe the cores the model uses."""
import cv2
import torch
from torch.utils.data import Dataset

from kit.data import build_loader


class ThreadCounts(Dataset):
    """Each row reports the OpenCV and torch thread counts of the process that loads it."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"cv2": cv2.getNumThreads(), "torch": torch.get_num_threads(), "index": i}


def test_loader_workers_run_single_threaded():
    torch_threads = torch.get_num_threads()
    batches = list(build_loader(ThreadCounts(), batch_size=2, num_workers=2, shuffle=False))
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(8))
    assert {int(v) for b in batches for v in b["cv2"]} == {1}, "OpenCV threads in a worker"
    assert {int(v) for b in batches for v in b["torch"]} == {1}, "torch threads in a worker"
    assert torch.get_num_threads() == torch_threads  # the main process keeps its own setting
