"""The loader: workers run one thread each, so they never oversubscribe the cores the model uses."""
import os

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


def test_uint8_batches_reach_the_model_normalised_exactly_as_the_cpu_pipeline(demo_copy, tmp_path):
    from kit import Config, Trainer
    from kit.data import read_image
    from kit.transforms import build_eval_transforms
    seen = {"train": [], "eval": []}

    class Capture(Trainer):
        def train_step(self, batch):
            seen["train"].append((batch["image"].clone(), batch["index"].clone()))
            return super().train_step(batch)

        def eval_step(self, batch):
            seen["eval"].append((batch["image"].clone(), batch["index"].clone()))
            return super().eval_step(batch)

    cfg = Config(comp=str(demo_copy), out_dir=str(tmp_path), model="test_resnet", img_size=32, aug="none", epochs=1,
                 limit=60, num_workers=0, batch_size=16, predict_test=False, log_with="none", resume="never")
    trainer = Capture(cfg)
    trainer.fit(0)
    train, valid = trainer.build_datasets(0)
    assert train[0]["image"].dtype == torch.uint8  # what the loader moves: a quarter of float32's bytes
    cpu = build_eval_transforms(32, trainer.norm)  # `none` = resize, normalise (the model's own), tensor, on the CPU
    for split, ds in (("train", train), ("eval", valid)):
        images, index = seen[split][0]
        want = torch.stack([cpu(image=read_image(ds.paths[i]))["image"] for i in index.tolist()])
        assert images.dtype == torch.float32 and torch.equal(images, want), split


def test_num_workers_defaults_to_the_cpus_this_process_may_use_shared_by_its_processes():
    import subprocess
    import sys

    from kit.config import Config
    from kit.data import resolve_workers

    assert Config().num_workers == -1  # auto
    for explicit in (0, 1, 3, 16):
        assert resolve_workers(explicit, cpus=1) == explicit  # an explicit value is kept
    for cpus, procs, want in ((1, 1, 0), (2, 1, 2), (2, 2, 0), (4, 2, 2), (16, 1, 8), (64, 4, 8), (12, 4, 3)):
        assert resolve_workers(-1, cpus=cpus, local_processes=procs) == want, (cpus, procs)
    # for real: pin a process to one CPU, then to every CPU, as taskset/cgroups/SLURM do; a DataLoader is built
    probe = ("import os, sys, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))} if sys.argv[1] == '1' "
             "else os.sched_getaffinity(0)); from kit.config import Config; from kit.data import build_loader; "
             "print(build_loader(torch.utils.data.TensorDataset(torch.zeros(4)), 2, Config().num_workers, False)"
             ".num_workers)")
    env = {**os.environ, "LOCAL_WORLD_SIZE": "1"}
    for pin, want in (("1", 0), ("all", resolve_workers(-1, cpus=len(os.sched_getaffinity(0)), local_processes=1))):
        out = subprocess.run([sys.executable, "-c", probe, pin], capture_output=True, text=True, env=env, check=True)
        assert int(out.stdout.strip()) == want, (pin, out.stdout, out.stderr[-2000:])
