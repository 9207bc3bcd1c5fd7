"""Run under `accelerate launch`: every rank records the dataset rows its balanced loader draws."""
import json
import sys

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from kit.sampling import ClassBalancedSampler

LABELS = np.repeat(np.arange(4), [500, 100, 50, 10])  # 10:2:1:0.2 imbalance


def main(out: str) -> None:
    acc = Accelerator()
    sampler = ClassBalancedSampler(LABELS, num_samples=10_000, seed=3)
    loader = acc.prepare(DataLoader(torch.arange(len(LABELS)), batch_size=10, sampler=sampler))
    epochs = [torch.cat(list(loader)).tolist() for _ in range(2)]
    with open(f"{out}.rank{acc.process_index}.json", "w") as f:
        json.dump({"rank": acc.process_index, "world": acc.num_processes, "epochs": epochs}, f)


if __name__ == "__main__":
    main(sys.argv[1])
