"""The code-competition notebook of an exported package, and its kernel-metadata.json for `kaggle kernels push`."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = '''\
import glob, os, subprocess, sys

# Where Kaggle mounts the package (a Dataset) and the competition's data; KIT_PACKAGE / KIT_DATA override both.
PACKAGE = os.environ.get("KIT_PACKAGE") or {package!r}
DATA = os.environ.get("KIT_DATA") or {data!r}
if not os.path.exists(os.path.join(PACKAGE, "package.json")):  # mounted one level deeper (datasets/<owner>/...)
    found = glob.glob("/kaggle/input/*/package.json") + glob.glob("/kaggle/input/*/*/*/package.json")
    PACKAGE = os.path.dirname(found[0]) if found else PACKAGE
if not os.path.isdir(DATA) and os.path.isdir("/kaggle/input/competitions/{slug}"):
    DATA = "/kaggle/input/competitions/{slug}"
print("package:", PACKAGE, "| data:", DATA)'''

INSTALL = '''\
# Offline install from the package's own wheels: Kaggle's image already has torch, timm, albumentations, pandas...
wheels = sorted(glob.glob(os.path.join(PACKAGE, "*.whl")))
if wheels:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--ignore-installed",
                    "--find-links", PACKAGE, *wheels], check=True)
    import importlib; importlib.invalidate_caches()  # the kernel started before the kit was installed'''

PREDICT = '''\
# The same fold models, TTA views, ensemble weights and submission checks as `kit submit`
from kit.package import predict_package

result = predict_package(PACKAGE, DATA, out="submission.csv", work="kit_work")
result'''


def write_notebook(path: Path, title: str, dataset_slug: str, comp_slug: str, members: list[str]) -> Path:
    """An .ipynb that installs the package's wheels offline, predicts the test folder and writes submission.csv."""
    data = f"/kaggle/input/{comp_slug}" if comp_slug else "/kaggle/input"
    cells = [new_markdown_cell(f"# {title}\n\nOffline inference of {', '.join(members)} exported by `kit export`: "
                               "reads the test images, writes `submission.csv`. Internet off."),
             new_code_cell(SETUP.format(package=f"/kaggle/input/{dataset_slug}", data=data,
                                        slug=comp_slug or "test")),
             new_code_cell(INSTALL), new_code_cell(PREDICT)]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_kernel_metadata(folder: Path, user: str, kernel_slug: str, code_file: str, dataset: str,
                          comp_slug: str) -> Path:
    """kernel-metadata.json: a private notebook with the internet off, the package dataset and competition attached."""
    meta = {"id": f"{user}/{kernel_slug}", "title": kernel_slug, "code_file": code_file, "language": "python",
            "kernel_type": "notebook", "is_private": True, "enable_gpu": False, "enable_tpu": False,
            "enable_internet": False, "dataset_sources": [dataset], "competition_sources": [comp_slug] if comp_slug
            else [], "kernel_sources": [], "model_sources": []}
    path = Path(folder) / "kernel-metadata.json"
    path.write_text(json.dumps(meta, indent=1))
    return path
