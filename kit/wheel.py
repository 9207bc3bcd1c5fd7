"""The kit as a pure-Python wheel, written from its own source files (no build tools, no network).

The wheel is built from the imported package's files, so an editable install exports the same code
a regular one would; its bytes depend only on those files (fixed timestamps).
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

import kit

EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same code gives the same wheel bytes


def kit_version() -> str:
    """The installed kit's version (0.0.0 when it is imported from a source tree without metadata)."""
    try:
        return metadata.version("kit")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _requires() -> list[str]:
    try:
        return list(metadata.requires("kit") or [])
    except metadata.PackageNotFoundError:
        return []


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_kit_wheel(dest: str | Path) -> Path:
    """Write kit-<version>-py3-none-any.whl into `dest` from the imported kit package's .py files."""
    src = Path(kit.__file__).resolve().parent
    version = kit_version()
    dist = f"kit-{version}.dist-info"
    files = {f"kit/{p.relative_to(src).as_posix()}": p.read_bytes()
             for p in sorted(src.rglob("*.py")) if "__pycache__" not in p.parts}
    meta = ["Metadata-Version: 2.1", "Name: kit", f"Version: {version}",
            "Summary: A Kaggle-style competition kit for image classification and segmentation",
            "Requires-Python: >=3.10", *[f"Requires-Dist: {r}" for r in _requires()]]
    files[f"{dist}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: kit\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\nkit = kit.cli:main\n"
    files[f"{dist}/top_level.txt"] = b"kit\n"
    record = "".join(f"{name},{_digest(data)},{len(data)}\n" for name, data in files.items())
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"kit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path
