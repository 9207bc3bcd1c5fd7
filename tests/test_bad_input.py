"""Broken competition folders: each one stops before training, with a message naming the file and line or key.

Every case is a small valid competition with one fault planted. It runs exactly what `accelerate launch
experiments/<exp>.py` runs (`kit.run`), in-process; the run must exit with one paragraph, no fold folder
must exist (training never began), and a control run of the unbroken folder must train.
"""
import io
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import Config, Trainer, run
from tests.helpers import BIN, ROOT, TINY_YAML, make_tiny

YAML = TINY_YAML  # line numbers below refer to it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny") / "tiny")


class Exp(Trainer):
    config = Config(model="test_resnet", img_size=16, batch_size=8, epochs=1, num_workers=0, n_folds=3,
                    resume="never", log_with="none")


def yaml_sub(old, new):
    return lambda r: (r / "competition.yaml").write_text(YAML.replace(old, new))


def yaml_text(text):
    return lambda r: (r / "competition.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())


def train_csv(text):
    return lambda r: (r / "train.csv").write_bytes(text)


def edit_train(fn):
    def apply(r):
        df = pd.read_csv(r / "train.csv", dtype=str)
        fn(df)
        df.to_csv(r / "train.csv", index=False)
    return apply


def image(name, data):
    return lambda r: (r / "train" / name).write_bytes(data(r / "train" / name) if callable(data) else data)


def png_header(width, height) -> bytes:
    """A PNG whose header claims width x height pixels: a decompression bomb as far as any decoder can tell."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def pil_bytes(fmt):
    b = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8) + 90).save(b, fmt)
    return b.getvalue()


def remove(rel):
    def apply(r):
        p = r / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return apply


def folds(text):
    return lambda r: (r / "folds.csv").write_text(text)


def folder_for(rel):
    def apply(r):
        (r / rel).unlink()
        (r / rel).mkdir()
    return apply


Y = "competition.yaml"
CASES = {  # name: (plant the fault, fragments the message must contain)
    "misspelled metric key": (yaml_sub("metric:", "metirc:"), [f"{Y}:11: metirc: unknown key; did you mean 'metric'"]),
    "misspelled image_pattern key": (yaml_sub("image_pattern:", "image_patern:"),
                                     [f"{Y}:9: image_patern: unknown key; did you mean 'image_pattern'"]),
    "unknown metric": (yaml_sub("metric: macro_f1", "metric: f1_macro"), [f"{Y}:11: metric: 'f1_macro' is not known"]),
    "daily_limit not a number": (yaml_sub("daily_limit: 5", "daily_limit: five"), [f"{Y}:13: daily_limit: expected a whole"]),
    "daily_limit zero": (yaml_sub("daily_limit: 5", "daily_limit: 0"), [f"{Y}:13: daily_limit"]),
    "classes a number": (yaml_sub("classes: [a, b, c]", "classes: 10"), [f"{Y}:5: classes: expected a list"]),
    "classes read as booleans": (yaml_sub("classes: [a, b, c]", "classes: [yes, no, c]"),
                                 [f"{Y}:5: classes: True was read by YAML as a boolean"]),
    "duplicate classes": (yaml_sub("classes: [a, b, c]", "classes: [a, a, c]"), [f"{Y}:5: classes: duplicate"]),
    "submission a string": (yaml_sub("submission: {kind: label, columns: [id, label]}", "submission: label"),
                            [f"{Y}:12: submission: expected a mapping"]),
    "submission kind unknown": (yaml_sub("kind: label", "kind: labels"),
                                [f"{Y}:12: submission.kind: 'labels' is not one of", "did you mean 'label'"]),
    "submission key misspelled": (yaml_sub("columns: [id", "colums: [id"),
                                  [f"{Y}:12: submission.colums: unknown key; did you mean 'columns'"]),
    "yaml is a list": (yaml_text("- task\n- classes\n"), [f"{Y}:1: the file must be a mapping"]),
    "yaml syntax error": (yaml_sub("classes: [a, b, c]", "classes: [a, b, c"), [f"{Y}:6:", "YAML syntax error"]),
    "yaml empty": (yaml_text(""), [f"{Y}: the file is empty"]),
    "yaml not utf-8": (yaml_text(YAML.replace("tiny", "t\xefny").encode("latin-1")), [f"{Y}: byte 7 is not UTF-8"]),
    "repeated key": (yaml_text(YAML + "metric: accuracy\n"), [f"{Y}:14: metric: repeated key (first at line 11)"]),
    "image_pattern unknown field": (yaml_sub('"{id}.png"', '"{name}.png"'), [f"{Y}:9: image_pattern: '{{name}}.png' uses"]),
    "image_pattern malformed": (yaml_sub('"{id}.png"', '"{id.png"'), [f"{Y}:9: image_pattern: '{{id.png' is not a valid"]),
    "image_pattern without id": (yaml_sub('"{id}.png"', '"img.png"'), [f"{Y}:9: image_pattern: 'img.png' must contain"]),
    "task unknown": (yaml_sub("task: multiclass", "task: regression"), [f"{Y}:2: task: 'regression' is not one of"]),
    "id_column a list": (yaml_sub("id_column: id", "id_column: [id]"), [f"{Y}:3: id_column: expected text"]),
    "multihead without heads": (yaml_sub("task: multiclass", "task: multihead"), [f"{Y}:2: heads: a multihead"]),
    "train_csv outside the folder": (yaml_sub("train_csv: train.csv", "train_csv: ../train.csv"),
                                     [f"{Y}:6: train_csv: '../train.csv' points outside the competition folder"]),
    "train_images absolute path": (yaml_sub("train_images: train", "train_images: /etc"),
                                   [f"{Y}:7: train_images: '/etc' points outside"]),
    "image_pattern climbs out": (yaml_sub('"{id}.png"', '"../../{id}.png"'), [f"{Y}:9: image_pattern:", "points outside"]),
    "test_csv missing": (yaml_text(YAML + "test_csv: test.csv\n"), ["test.csv: file not found"]),
    "train.csv empty": (train_csv(b""), ["train.csv: the file is empty"]),
    "train.csv header only": (train_csv(b"id,label\n"), ["train.csv: has a header (['id', 'label']) but no rows"]),
    "train.csv ragged row": (train_csv(b"id,label\ntr00,a\ntr01,b,extra\n"), ["train.csv: unreadable CSV", "line 3"]),
    "train.csv not utf-8": (train_csv(b"id,label\ntr00,a\ntr01,\xe9\n"), ["train.csv:3: byte 21 is not UTF-8"]),
    "train.csv a folder": (lambda r: ((r / "train.csv").unlink(), (r / "train.csv").mkdir()), ["train.csv: is a folder"]),
    "label column missing": (edit_train(lambda d: setattr(d, "columns", ["id", "y"])),
                             ["train.csv: missing column(s) ['label']"]),
    "unknown class": (edit_train(lambda d: d.loc.__setitem__((1, "label"), "z")), ["train.csv:3 column 'label' = 'z': unknown class"]),
    "duplicate id": (edit_train(lambda d: d.loc.__setitem__((5, "id"), "tr01")), ["train.csv:7 column 'id' = 'tr01': duplicate id"]),
    "empty id": (edit_train(lambda d: d.loc.__setitem__((4, "id"), "")), ["train.csv:6 column 'id' = '': empty id"]),
    "sample_submission missing": (remove("sample_submission.csv"), ["sample_submission.csv: file not found"]),
    "sample_submission without id": (lambda r: (r / "sample_submission.csv").write_text("name,label\nte00,a\n"),
                                     ["sample_submission.csv: missing column(s) ['id']"]),
    "train image folder missing": (remove("train"), [f"{Y}: train_images:", "does not exist"]),
    "train image missing": (remove("train/tr03.png"), ["train.csv:5 column 'id' = 'tr03'", "tr03.png: missing"]),
    "test image missing": (remove("test/te02.png"), ["sample_submission.csv:4 column 'id' = 'te02'", "te02.png: missing"]),
    "TGA under a .png name": (image("tr04.png", pil_bytes("TGA")),
                              ["train.csv:6 column 'id' = 'tr04'", "an image in TGA format, which OpenCV (the training loader) cannot decode"]),
    "ICO under a .png name": (image("tr05.png", pil_bytes("ICO")), ["train.csv:7", "an image in ICO format"]),
    "decompression bomb": (image("tr06.png", png_header(40_000, 40_000)),
                           ["train.csv:8 column 'id' = 'tr06'", "decompression bomb"]),
    "truncated png": (image("tr07.png", lambda p: p.read_bytes()[:300]), ["train.csv:9", "tr07.png: corrupt or truncated"]),
    "zero-byte image": (image("tr08.png", b""), ["train.csv:10", "tr08.png: empty file"]),
    "text file as image": (image("tr09.png", b"%PDF-1.4 not a picture"), ["train.csv:11", "tr09.png: not an image"]),
    "folder as image": (folder_for("train/tr10.png"), ["train.csv:12", "tr10.png: unreadable path (a folder"]),
    "folds.csv misses an id": (folds("id,fold\n" + "".join(f"tr{i:02d},{i % 3}\n" for i in range(23))),
                               ["folds.csv: 1 train id(s) have no fold"]),
    "folds.csv fold not a number": (folds("id,fold\n" + "".join(f"tr{i:02d},{'x' if i == 3 else i % 3}\n" for i in range(24))),
                                    ["folds.csv:5 column 'fold' = 'x': expected a fold number"]),
    "folds.csv without fold column": (folds("id,split\ntr00,0\n"), ["folds.csv: missing column(s) ['fold']"]),
}


def _run(comp, tmp_path, *extra):
    return run(Exp, [f"--comp={comp}", f"--out_dir={tmp_path / 'runs'}", "--name=bad", "--fold=0", *extra])


@pytest.mark.parametrize("name", list(CASES))
def test_broken_folder_stops_before_training_naming_file_and_place(name, tiny, tmp_path):
    comp = tmp_path / "comp"
    shutil.copytree(tiny, comp)
    plant, fragments = CASES[name]
    plant(comp)
    with pytest.raises(SystemExit) as e:
        _run(comp, tmp_path)
    msg = str(e.value.code)
    for fragment in fragments:
        assert fragment in msg, f"{name}: {fragment!r} not in:\n{msg}"
    assert "Traceback" not in msg
    assert not (tmp_path / "runs" / "bad" / "fold0").exists()  # no fold started


def test_suite_counts_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_the_unbroken_folder_trains(tiny, tmp_path):
    comp = tmp_path / "comp"
    shutil.copytree(tiny, comp)
    result = _run(comp, tmp_path, "--predict_test=false")
    assert result["per_fold"] and (tmp_path / "runs" / "bad" / "fold0" / "best.safetensors").exists()


def test_accelerate_launch_prints_one_paragraph_and_no_traceback(tiny, tmp_path):
    comp = tmp_path / "comp"
    shutil.copytree(tiny, comp)
    CASES["misspelled metric key"][0](comp)
    cmd = [str(BIN / "accelerate"), "launch", "-q", "--config_file", str(ROOT / "accelerate_config.yaml"),
           str(ROOT / "experiments" / "exp001_baseline.py"), f"--comp={comp}", f"--out_dir={tmp_path / 'runs'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline"})
    assert r.returncode == 1
    assert r.stderr.strip() == (f"exp001_baseline.py: error: {comp}/competition.yaml:11: metirc: unknown key; did you "
                                "mean 'metric'? (keys for your own code go under extra:)")
    assert not (tmp_path / "runs").exists()


def test_schema_metric_names_match_the_metric_registries():
    from kit.comp_schema import CLASS_METRICS, MULTILABEL_METRICS, SEG_METRICS
    from kit.metrics import METRICS
    from kit.seg_metrics import SEG_METRICS as SEG
    assert set(CLASS_METRICS) | set(MULTILABEL_METRICS) == set(METRICS) and set(SEG_METRICS) == set(SEG)
