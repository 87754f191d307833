"""``waimai labels trust`` and ``conflicts`` on a store with labels from several tenants."""

import asyncio
import re
from collections.abc import Iterator

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from cli.main import app
from core.classify.service import ReviewInput
from core.config import get_settings
from core.store.tables import ActorRole, LabelEvent, LabelKind, Review, Source, Split
from core.wiring import Core
from serving.base import Label

runner = CliRunner()


@pytest.fixture
def cli_core(core: Core, monkeypatch: pytest.MonkeyPatch) -> Iterator[Core]:
    """The test's core, and the ``waimai`` command pointed at the same store."""
    monkeypatch.setenv("DB__URL", core.settings.db.url)
    monkeypatch.setenv("LOCAL__DIR", str(core.settings.local.dir))
    get_settings.cache_clear()
    yield core
    get_settings.cache_clear()


def label(core: Core, tenant: str, text: str, value: Label, *, admin: bool = False) -> None:
    (review,) = asyncio.run(
        core.classification.classify([ReviewInput(text)], source=Source.API, tenant=tenant)
    )
    asyncio.run(
        core.feedback.record(
            review.review_id,
            value,
            actor=tenant,
            channel=Source.API,
            tenant=None if admin else tenant,
            role=ActorRole.ADMIN if admin else ActorRole.MERCHANT,
        )
    )


def train_texts(core: Core, n: int) -> list[tuple[str, Label]]:
    with Session(core.engine) as session:
        rows = session.exec(
            select(Review.text, LabelEvent.label)
            .join(LabelEvent, col(LabelEvent.review_id) == Review.id)
            .where(LabelEvent.kind == LabelKind.IMPORT, LabelEvent.split == Split.TRAIN)
            .limit(n)
        ).all()
    return [(text, Label(value)) for text, value in rows]


def row(output: str, name: str) -> list[str]:
    (line,) = [line for line in output.splitlines() if re.search(rf"[│|]\s*{name}\s*[│|]", line)]
    return [cell.strip() for cell in re.split(r"[│|]", line)[1:-1]]


def test_trust_shows_each_tenants_labels_fates_and_flags_and_totals_that_add_up(cli_core: Core):
    core = cli_core
    label(core, "acme", "两家看法不同的一条评论", Label.POSITIVE)
    label(core, "globex", "两家看法不同的一条评论", Label.NEGATIVE)
    label(core, "acme", "两家都说好的一条评论", Label.POSITIVE)
    label(core, "globex", "两家都说好的一条评论", Label.POSITIVE)
    label(core, "acme", "改了主意的一条评论", Label.POSITIVE)
    label(core, "acme", "改了主意的一条评论", Label.NEGATIVE)
    label(core, "root", "管理员标的一条评论", Label.NEGATIVE, admin=True)
    for text, truth in train_texts(core, 12):  # every label against the dataset
        label(core, "liar", text, Label(1 - truth))

    result = runner.invoke(app, ["labels", "trust"])
    assert result.exit_code == 0, result.output
    # tenant, labels, accepted, pending, held back, checked (agreed), trust, flagged
    assert row(result.output, "acme") == ["acme", "3", "1", "1", "1", "2 (1)", "0.50", ""]
    assert row(result.output, "globex") == ["globex", "2", "1", "0", "1", "2 (1)", "0.50", ""]
    assert row(result.output, "liar") == ["liar", "12", "0", "0", "12", "12 (0)", "0.12", "⚑"]
    assert "root" not in result.output.split("labels 19")[0]
    assert "labels 19: accepted 3, pending 1, held back 14, superseded 1" in result.output
    with Session(core.engine) as session:
        live = session.exec(
            select(LabelEvent).where(
                LabelEvent.kind != LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None)
            )
        ).all()
    assert len(live) == 19, "the total is every live label"
    assert "admins' latest labels among them (not in the table): 1" in result.output
    assert "flagged: liar" in result.output

    conflicts = runner.invoke(app, ["labels", "conflicts"])
    assert conflicts.exit_code == 0, conflicts.output
    assert "两家看法不同的一条评论" in conflicts.output
    assert "acme: positive, globex: negative" in conflicts.output
    assert "left out" in conflicts.output


def test_a_store_without_human_labels_says_so(cli_core: Core):
    assert runner.invoke(app, ["labels", "trust"]).output.strip() == "no human labels yet"
    assert runner.invoke(app, ["labels", "conflicts"]).output.strip() == "no conflicts"
