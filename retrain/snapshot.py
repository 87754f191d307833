"""Snapshots: the training set frozen as chat JSONL, content-hashed, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.config import RetrainSettings
from core.labels.resolve import Resolution, training_set
from core.models.dataset import write_jsonl
from core.store.db import unit_of_work
from core.store.tables import Snapshot
from core.wiring import Core

VALIDATION_SHARE = 0.1


def snapshot_for(core: Core, data: Resolution | None = None) -> Snapshot:
    """The snapshot the loop trains on: the settings' label rules, under DATA__DIR/snapshots."""
    return take_snapshot(
        core.engine, core.settings.data.dir / "snapshots", core.settings.retrain, data
    )


def take_snapshot(
    engine: Engine,
    root: Path,
    rules: RetrainSettings | None = None,
    data: Resolution | None = None,
) -> Snapshot:
    """The snapshot of the shared training set (``data``, or resolved now); an identical one is
    reused, not rewritten."""
    data = data or training_set(engine, rules)
    content_hash = data.content_hash
    with Session(engine) as session:
        existing = session.exec(
            select(Snapshot).where(Snapshot.content_hash == content_hash)
        ).first()
    if existing is not None and Path(existing.directory).is_dir():
        return existing
    directory = root / content_hash[:16]
    manifest = _write(directory, data)
    with unit_of_work(engine) as session:
        snapshot = existing or Snapshot(
            content_hash=content_hash, directory="", train_sha256="", validation_sha256=""
        )
        snapshot.directory = str(directory)
        snapshot.train_sha256 = manifest["files"]["train.jsonl"]
        snapshot.validation_sha256 = manifest["files"]["validation.jsonl"]
        snapshot.manifest = manifest
        session.add(snapshot)
        session.flush()
        return snapshot


def _write(directory: Path, data: Resolution) -> dict[str, Any]:
    """Write train/validation JSONL and the manifest into a temp folder, then rename it into place.

    A snapshot folder therefore either exists whole or not at all.
    """
    labels = [int(label) for label in data.labels]
    train_idx, validation_idx = train_test_split(
        range(len(data.texts)),
        test_size=VALIDATION_SHARE,
        random_state=int(data.content_hash[:8], 16),
        stratify=labels,
    )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        files = {
            name: write_jsonl(
                staging / name, ((data.texts[i], data.labels[i]) for i in sorted(idx))
            )
            for name, idx in (("train.jsonl", train_idx), ("validation.jsonl", validation_idx))
        }
        manifest: dict[str, Any] = {
            "content_hash": data.content_hash,
            "examples": len(data.texts),
            "train": len(train_idx),
            "validation": len(validation_idx),
            "by_label": {str(k): v for k, v in sorted(Counter(labels).items())},
            "human_labels": data.human,
            "label_fates": dict(sorted(data.fates.items())),
            "superseded_labels": data.superseded,
            "last_label_event_id": data.last_label_event_id,
            "flagged_tenants": data.flagged,
            "tenant_views": {
                tenant: {"own_labels": view.explicit, "left_alone": view.implicit}
                for tenant, view in data.views.items()
            },
            "conflicts": data.conflicts,
            "excluded_holdout_texts": data.excluded_holdout,
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
