"""The dataset pipeline: waimai_10k.csv → canonical split → chat JSONL → the store.

Past 300 lines: each refusal (encoding, columns, labels, checksum) sits next to the step it
guards, and `Dataset` at the end is the pipeline's async face.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
from sklearn.model_selection import train_test_split
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.errors import DataError
from core.store.db import StoreService, unit_of_work
from core.store.tables import LabelEvent, LabelKind, Review, Source, Split, saved_id
from core.store.texts import text_hash
from serving.base import Label
from serving.prompt import training_record

DATASET_NAME = "waimai_10k"
DATASET_URL = (
    "https://raw.githubusercontent.com/SophonPlus/ChineseNlpCorpus/master/"
    "datasets/waimai_10k/waimai_10k.csv"
)
DATASET_SHA256 = "b8b5c11c00b51578d35937fca56e03a126b45381f1ea4b22893237cb377a26fe"
LOCAL_COPIES = (Path("../shared/data/waimai_10k.csv"), Path("data/waimai_10k.csv"))
DATASET_ACTOR = f"dataset:{DATASET_NAME}"
TEST_SIZE, RANDOM_STATE = 0.3, 100


@dataclass(frozen=True)
class RawDataset:
    content: bytes
    origin: str
    sha256: str

    @property
    def canonical(self) -> bool:
        return self.sha256 == DATASET_SHA256


@dataclass
class PreparedData:
    """What ``prepare`` did, for the user: counts, files, and what was skipped and why."""

    origin: str
    sha256: str
    canonical: bool
    encoding: str
    rows: int
    train: int
    test: int
    skipped_empty: list[int] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    imported: int = 0


def fetch(source: str | None, timeout_s: float) -> RawDataset:
    """The dataset bytes from a path or URL; by default the local copies, then the public URL.

    A download must match the published sha256; a local file may be another dataset of the
    same shape (the report says whether it is the canonical one).
    """
    if source is None:
        for path in LOCAL_COPIES:
            if path.is_file():
                return _read_file(path)
        source = DATASET_URL
    if source.startswith(("http://", "https://")):
        return _download(source, timeout_s, expected_sha256=DATASET_SHA256)
    return _read_file(Path(source))


def _read_file(path: Path) -> RawDataset:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    return RawDataset(content, str(path), hashlib.sha256(content).hexdigest())


def _download(url: str, timeout_s: float, *, expected_sha256: str) -> RawDataset:
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            response = client.get(url)
            response.raise_for_status()
    except httpx.HTTPError as error:
        raise DataError(f"download of {url} failed: {error}") from error
    content = response.content
    declared = response.headers.get("content-length")
    unencoded = "content-encoding" not in response.headers
    if declared is not None and unencoded and int(declared) != len(content):
        raise DataError(
            f"download of {url} was truncated: {len(content)} of {declared} bytes arrived"
        )
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256:
        raise DataError(
            f"checksum mismatch for {url}: got sha256 {digest}, expected {expected_sha256} "
            "(truncated or altered download); nothing was written"
        )
    return RawDataset(content, url, digest)


def decode(content: bytes) -> tuple[str, str]:
    """(text, encoding name): UTF-8 (a BOM is dropped), else GBK/GB18030; binary is refused."""
    if not content.strip():
        raise DataError("the file is empty")
    if b"\x00" in content:
        raise DataError("the file looks binary (it contains NUL bytes), not a CSV of reviews")
    bom = content.startswith(b"\xef\xbb\xbf")
    body = content[3:] if bom else content
    try:
        return body.decode("utf-8"), "utf-8-sig" if bom else "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("gb18030"), "gbk"
    except UnicodeDecodeError as error:
        raise DataError(
            f"the file is neither UTF-8 nor GBK (undecodable byte at offset {error.start}); "
            "save it as UTF-8"
        ) from error


def parse(text: str) -> pd.DataFrame:
    """The frame exactly as ``pandas.read_csv`` reads it, checked for columns and labels."""
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"not a readable CSV: {error}") from error
    missing = {"label", "review"} - set(frame.columns)
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(sorted(missing))}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise DataError("the CSV has a header but no rows")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame.index[~labels.isin([0, 1])]
    if len(bad):
        shown = ", ".join(f"line {i + 2} ({frame['label'][i]!r})" for i in bad[:5])
        raise DataError(f"{len(bad)} label(s) are not 0 or 1: {shown}")
    return frame


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The canonical split: ``train_test_split(df, test_size=0.3, random_state=100)``."""
    train, test = train_test_split(frame, test_size=TEST_SIZE, random_state=RANDOM_STATE)
    return train, test


def usable_rows(part: pd.DataFrame) -> tuple[list[tuple[int, str, Label]], list[int]]:
    """(row index, stripped review, label) of rows with text; and the indexes of empty ones."""
    rows, empty = [], []
    for index, review, label in zip(part.index, part["review"], part["label"], strict=True):
        stripped = review.strip() if isinstance(review, str) else ""
        if stripped:
            rows.append((int(index), stripped, Label(int(label))))
        else:
            empty.append(int(index))
    return rows, empty


def write_jsonl(path: Path, rows: Iterable[tuple[str, Label]]) -> str:
    """Write the chat-format JSONL atomically (temp file, then rename); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(
        "wb", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        try:
            for review, label in rows:
                line = (
                    json.dumps(training_record(review, label), ensure_ascii=False) + "\n"
                ).encode()
                digest.update(line)
                tmp.write(line)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    os.replace(tmp.name, path)
    return digest.hexdigest()


STEPS = (
    "reading the dataset",
    "checking and splitting",
    "writing train.jsonl and test.jsonl",
    "importing into the store",
)
"""What ``prepare`` reports to ``on_step``, in order."""


def prepare(
    engine: Engine,
    source: str | None,
    out_dir: Path,
    *,
    timeout_s: float = 60.0,
    on_step: Callable[[str], None] = lambda step: None,
) -> PreparedData:
    """Fetch, check, split, write train/test JSONL and import the rows; safe to run again.

    Everything is checked before anything is written; each file is replaced atomically and
    the import is one transaction.
    """
    on_step(STEPS[0])
    raw = fetch(source, timeout_s)
    on_step(STEPS[1])
    text, encoding = decode(raw.content)
    train, test = split(parse(text))
    train_rows, train_empty = usable_rows(train)
    test_rows, test_empty = usable_rows(test)
    if not train_rows or not test_rows:
        raise DataError("no usable reviews: every row is empty")

    report = PreparedData(
        origin=raw.origin,
        sha256=raw.sha256,
        canonical=raw.canonical,
        encoding=encoding,
        rows=len(train) + len(test),
        train=len(train_rows),
        test=len(test_rows),
        skipped_empty=sorted(train_empty + test_empty),
    )
    _refuse_another_dataset(engine, train_rows + test_rows)
    on_step(STEPS[2])
    for name, rows in (("train", train_rows), ("test", test_rows)):
        path = out_dir / f"{name}.jsonl"
        report.files[str(path)] = write_jsonl(path, ((r, label) for _, r, label in rows))
    on_step(STEPS[3])
    with unit_of_work(engine) as session:
        report.imported = _import(
            session, [(Split.TRAIN, r) for r in train_rows] + [(Split.TEST, r) for r in test_rows]
        )
    return report


def _refuse_another_dataset(engine: Engine, rows: list[tuple[int, str, Label]]) -> None:
    """Refuse a file whose rows differ from the dataset rows already in the store."""
    with Session(engine) as session:
        stored = dict(
            session.exec(
                select(Review.external_id, Review.text).where(Review.source == Source.DATASET)
            ).all()
        )
    different = [i for i, text, _ in rows if stored.get(_external_id(i), text) != text]
    if different:
        raise DataError(
            f"the store already holds a different dataset ({len(different)} rows differ, "
            f"e.g. line {different[0] + 2}); use a fresh database (DB__URL) for another dataset"
        )


def _import(session: Session, rows: list[tuple[Split, tuple[int, str, Label]]]) -> int:
    """Add each row as a dataset Review plus an import LabelEvent, unless it is there already."""
    known = set(
        session.exec(select(Review.external_id).where(Review.source == Source.DATASET)).all()
    )
    new = [(part, row) for part, row in rows if _external_id(row[0]) not in known]
    reviews = [
        Review(
            text=review,
            text_hash=text_hash(review),
            source=Source.DATASET,
            external_id=_external_id(index),
        )
        for _, (index, review, _) in new
    ]
    session.add_all(reviews)
    session.flush()
    session.add_all(
        LabelEvent(
            review_id=saved_id(review),
            text_hash=review.text_hash,
            label=int(label),
            actor=DATASET_ACTOR,
            channel=Source.DATASET,
            kind=LabelKind.IMPORT,
            split=part,
        )
        for review, (part, (_, _, label)) in zip(reviews, new, strict=True)
    )
    return len(new)


def _external_id(row_index: int) -> str:
    return f"{DATASET_NAME}:{row_index}"


def load_split(engine: Engine, part: Split) -> tuple[list[str], list[Label]]:
    """The texts and dataset labels of one split, in a stable order."""
    with Session(engine) as session:
        rows = session.exec(
            select(Review.text, LabelEvent.label)
            .join(LabelEvent, col(LabelEvent.review_id) == Review.id)
            .where(LabelEvent.kind == LabelKind.IMPORT, LabelEvent.split == part)
            .order_by(col(Review.id))
        ).all()
    if not rows:
        raise DataError(
            f"the {part.value} split is not in the store yet: run `waimai data prepare`"
        )
    return [text for text, _ in rows], [Label(label) for _, label in rows]


class Dataset(StoreService):
    """The dataset for front doors and the loop."""

    async def prepare(
        self,
        source: str | None,
        out_dir: Path,
        *,
        timeout_s: float = 60.0,
        on_step: Callable[[str], None] = lambda step: None,
    ) -> PreparedData:
        """``prepare`` in a worker thread: it downloads, parses and writes files."""
        return await asyncio.to_thread(
            prepare, self._engine, source, out_dir, timeout_s=timeout_s, on_step=on_step
        )

    async def holdout(self) -> tuple[list[str], list[Label]]:
        """The frozen holdout (the test split) every model is judged on."""
        return await self._run(load_split, Split.TEST)
