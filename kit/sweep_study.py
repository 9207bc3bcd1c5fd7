"""Where a sweep's study lives: SQLite in runs/sweeps/<name>.db, or any Optuna RDB URL shared by workers on
several machines; heartbeats mark a dead worker's trial failed and queue it again."""
from __future__ import annotations

import importlib.util
import random
import time
from pathlib import Path

from .sweep_spec import SweepSpec, create_pruner, create_sampler

HEARTBEAT_S = 10  # a trial silent for 3 heartbeats belonged to a killed worker: failed, then retried


class SweepStorageError(RuntimeError):
    """--storage names a database that cannot hold the study."""


def storage_url(spec: SweepSpec, runs: Path, storage: str = "") -> str:
    """--storage as given, else SQLite in runs/sweeps/<name>.db (created)."""
    if storage:
        if storage.startswith("postgresql://") and importlib.util.find_spec("psycopg"):
            storage = "postgresql+psycopg://" + storage[len("postgresql://"):]  # SQLAlchemy < 2.1 assumes psycopg2
        return storage
    db = (runs / "sweeps" / f"{spec.name}.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def shown(url: str) -> str:
    """The storage URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: say nothing of it
        return "(unreadable URL)"


def open_study(spec: SweepSpec, runs: Path, seed: int = 0, storage: str = "", heartbeat: float = HEARTBEAT_S):
    """Create or load the study (SQLite or --storage) with the YAML's sampler and pruner."""
    import optuna
    import warnings

    from optuna import storages
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in use
    url = storage_url(spec, runs, storage)
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9 renamed the hook
        retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}
    # SQLite: workers share one file and wait for its lock; a server: drop connections it closed meanwhile
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            storage_obj = storages.RDBStorage(url, heartbeat_interval=int(heartbeat), grace_period=int(3 * heartbeat),
                                              engine_kwargs=engine, **retry)
            break
        except ImportError as e:
            raise SweepStorageError(f"--storage={shown(url)}: {e}; PostgreSQL needs `pip install 'kit[sweep]'` "
                                    "(psycopg)") from e
        except Exception as e:  # SQLAlchemy's errors: a bad URL, a server that does not answer
            # workers starting together race to create the schema: the loser finds it made on its next try
            if attempt == 4:
                raise SweepStorageError(f"--storage={shown(url)}: cannot open the study database: "
                                        f"{str(e).replace(url, shown(url))}") from e
            time.sleep(1 + random.random())
    study = optuna.create_study(study_name=spec.name, storage=storage_obj, direction=spec.direction,
                                load_if_exists=True, pruner=create_pruner(spec))
    study.sampler = create_sampler(spec, seed, len(study.trials))
    study.set_user_attr("metric", spec.metric)
    return study
