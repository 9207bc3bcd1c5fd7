"""A tiny image Trainer on synthetic tensors (no files): shared by the recipe tests and DDP scripts."""
import numpy as np
import pandas as pd
import torch

from kit import Competition, Config, Trainer

N, C, S = 96, 3, 8  # rows, classes, image side


class TinyNet(torch.nn.Module):
    """conv -> pool -> linear; no batch norm, so accumulation is exact. get_classifier() as timm models have."""

    def __init__(self, classes: int = C):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, classes)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class ImageTensors(torch.utils.data.Dataset):
    def __init__(self, x, y, ids):
        self.x, self.targets, self.ids = x, y, ids

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "target": self.targets[i], "index": i}


class Tiny(Trainer):
    """The class is the brightest colour channel: learnable by TinyNet in a few steps."""

    config = Config(name="tiny", epochs=3, batch_size=8, lr=0.05, num_workers=0, predict_test=False,
                    warmup_epochs=0, clip_grad=0, optimizer="sgd", weight_decay=0.0)
    n_rows = N

    def setup_data(self):
        self.comp = Competition(root=self.run_dir, name="tiny", classes=["a", "b", "c"], metric="accuracy")
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(self.n_rows, 3, S, S, generator=g)
        self.y = self.x.mean((2, 3)).argmax(1)
        ids = [f"r{i}" for i in range(self.n_rows)]
        self.train_df = pd.DataFrame({"id": ids, "label": [self.comp.classes[k] for k in self.y]})
        self.folds = pd.DataFrame({"id": ids, "fold": np.arange(self.n_rows) % 4})

    def build_datasets(self, fold):
        tr, va = self.folds.fold.to_numpy() != fold, self.folds.fold.to_numpy() == fold
        ids = np.array(self.train_df.id)
        return (ImageTensors(self.x[tr], self.y[tr], list(ids[tr])),
                ImageTensors(self.x[va], self.y[va], list(ids[va])))

    def build_model(self):
        torch.manual_seed(0)
        return TinyNet()
