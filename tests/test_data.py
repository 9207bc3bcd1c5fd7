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
