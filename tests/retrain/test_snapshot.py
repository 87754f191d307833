import asyncio
import json
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core.labels.feedback import FeedbackService
from core.store.tables import ActorRole, Review, Snapshot, Source
from core.store.texts import text_hash
from core.wiring import Core
from retrain.snapshot import snapshot_for, take_snapshot
from serving.base import Label


def test_a_snapshot_is_written_whole_and_reused_when_nothing_changed(core: Core, tmp_path):
    first = take_snapshot(core.engine, tmp_path / "snapshots")
    directory = Path(first.directory)
    assert directory.name == first.content_hash[:16]
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["manifest.json", "train.jsonl", "validation.jsonl"]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["train"] + manifest["validation"] == manifest["examples"]
    train_lines = (directory / "train.jsonl").read_text().splitlines()
    assert len(train_lines) == manifest["train"]
    assert json.loads(train_lines[0])["messages"][2]["content"] in {"好评", "差评"}
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]

    again = take_snapshot(core.engine, tmp_path / "snapshots")
    assert again.id == first.id
    with Session(core.engine) as session:
        assert session.exec(select(func.count()).select_from(Snapshot)).one() == 1


def test_a_new_label_makes_a_new_snapshot(core: Core, tmp_path):
    first = take_snapshot(core.engine, tmp_path)
    with Session(core.engine) as session:
        review = Review(
            text="全新的评论：好吃", text_hash=text_hash("全新的评论：好吃"), source=Source.API
        )
        session.add(review)
        session.commit()
        review_id = review.id
    assert review_id is not None
    asyncio.run(
        FeedbackService(core.engine).record(
            review_id, Label.POSITIVE, actor="boss", channel=Source.API, role=ActorRole.ADMIN
        )
    )
    second = take_snapshot(core.engine, tmp_path)
    assert second.content_hash != first.content_hash
    assert second.manifest["human_labels"] == 1


def test_an_interrupted_snapshot_leaves_nothing_used(core: Core, tmp_path, monkeypatch):
    import retrain.snapshot as snapshot_module
    from core.models.dataset import write_jsonl

    def dies_on_validation(path, rows):
        if path.name == "validation.jsonl":
            raise KeyboardInterrupt("killed")
        return write_jsonl(path, rows)

    with Session(core.engine) as session:
        for row in session.exec(select(Snapshot)).all():
            session.delete(row)
        session.commit()
    monkeypatch.setattr(snapshot_module, "write_jsonl", dies_on_validation)
    with pytest.raises(KeyboardInterrupt):
        take_snapshot(core.engine, tmp_path / "snaps")
    assert list((tmp_path / "snaps").iterdir()) == []
    with Session(core.engine) as session:
        assert session.exec(select(func.count()).select_from(Snapshot)).one() == 0

    monkeypatch.undo()
    snapshot = take_snapshot(core.engine, tmp_path / "snaps")
    assert sorted(p.name for p in Path(snapshot.directory).iterdir()) == [
        "manifest.json",
        "train.jsonl",
        "validation.jsonl",
    ]


def test_the_loop_snapshot_follows_the_label_rules_in_the_settings(core: Core):
    with Session(core.engine) as session:
        review = Review(
            text="只有一位商家说是好评",
            text_hash=text_hash("只有一位商家说是好评"),
            source=Source.API,
        )
        session.add(review)
        session.commit()
        review_id = review.id
    assert review_id is not None
    asyncio.run(
        FeedbackService(core.engine).record(
            review_id, Label.POSITIVE, actor="m1", channel=Source.API
        )
    )
    before = snapshot_for(core)
    assert before.manifest["human_labels"] == 0, "one tenant alone is below the quorum of 2"
    core.settings.retrain.quorum = 1
    after = snapshot_for(core)
    assert after.manifest["human_labels"] == 1
    assert after.content_hash != before.content_hash
