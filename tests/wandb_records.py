"""Read the history of an offline wandb run from its .wandb file (LevelDB-log framing of wandb's protobufs).

Written against the file format, not the kit, so the tracking tests check what wandb really stored.
"""
import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7  # LevelDB log blocks; each record chunk: crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path):
    """Yield wandb_internal_pb2.Record messages of a .wandb file."""
    from wandb.proto import wandb_internal_pb2
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb datastore"
    pos, chunks = 7, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block tail too short for a header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunks.append(data[pos + HEADER:pos + HEADER + length])
        pos += HEADER + length
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(b"".join(chunks))
            chunks = []
            yield rec


def read_history(path: Path) -> list[dict]:
    """Every history row: {'_step': n, key: value, ...}."""
    rows = []
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "history":
            row = {"_step": rec.history.step.num}
            row.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in rec.history.item})
            rows.append(row)
    return rows


def read_config(path: Path) -> dict:
    """The run config as wandb stored it."""
    out = {}
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "config":
            for item in rec.config.update:
                out[item.key] = json.loads(item.value_json)
    return out


def read_history_when(path: Path, key: str, timeout: float = 20.0) -> list[dict]:
    """The history once a row with `key` is on disk (wandb's service may still be flushing after finish)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        rows = read_history(path)
        if any(key in r for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
