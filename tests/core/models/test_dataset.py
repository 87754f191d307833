"""The dataset pipeline: canonical split, chat JSONL, idempotent import, bad input, downloads."""

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from core.config import DBSettings
from core.errors import DataError
from core.models.dataset import DATASET_SHA256, fetch, load_split, prepare
from core.store.db import make_engine
from core.store.tables import LabelEvent, Review, Split
from migrations import upgrade_schema

REPO = Path(__file__).resolve().parents[3]
SYSTEM = "你是一位外卖评论好评差评评论专家。"
POSITIVE = ["味道很好，送餐很快", "好吃，量大", "包装精美", "米饭香，菜新鲜", "服务态度好"]
NEGATIVE = ["太难吃了，退钱", "送了两个小时", "菜里有头发", "分量太少，不值", "态度差"]


def small_csv(empty_at: tuple[int, ...] = (), tag: str = "") -> str:
    """20 rows alternating 好评/差评 (both labels land in both splits); blanks at ``empty_at``."""
    rows = ["label,review"]
    for i in range(20):
        label, words = (1, POSITIVE) if i % 2 == 0 else (0, NEGATIVE)
        review = ("" if i % 4 else "   ") if i in empty_at else f"{tag}{words[i // 2 % 5]}{i}"
        rows.append(f"{label},{review}")
    return "\n".join(rows) + "\n"


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user_texts(*paths: Path) -> list[str]:
    return [record["messages"][1]["content"] for path in paths for record in jsonl(path)]


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        reviews = session.exec(select(func.count()).select_from(Review)).one()
        events = session.exec(select(func.count()).select_from(LabelEvent)).one()
    return reviews, events


def assert_nothing_written(engine: Engine, out: Path) -> None:
    assert not out.exists() or not list(out.iterdir())
    assert counts(engine) == (0, 0)


def canonical_frames(dataset: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test_split(pd.read_csv(dataset), test_size=0.3, random_state=100)
    return train, test


@pytest.fixture(scope="module")
def canonical_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real dataset prepared once into a SQLite store; the output folder."""
    dataset = REPO.parent / "shared" / "data" / "waimai_10k.csv"
    if not dataset.is_file():
        pytest.skip(f"the dataset is not at {dataset}")
    root = tmp_path_factory.mktemp("canonical")
    engine = make_engine(DBSettings(url=f"sqlite:///{root / 'store.db'}"))
    upgrade_schema(engine)
    prepare(engine, str(dataset), root / "out")
    engine.dispose()
    return root / "out"


@pytest.mark.slow
def test_the_canonical_split_matches_sklearn_row_for_row(engine: Engine, dataset: Path, tmp_path):
    report = prepare(engine, str(dataset), tmp_path / "out")
    train, test = canonical_frames(dataset)
    assert (report.train, report.test, report.rows) == (8390, 3597, 11987)
    assert (report.canonical, report.encoding, report.skipped_empty) == (True, "utf-8", [])
    assert report.sha256 == DATASET_SHA256
    assert user_texts(tmp_path / "out" / "test.jsonl") == list(test["review"])
    assert user_texts(tmp_path / "out" / "train.jsonl") == list(train["review"])
    assert load_split(engine, Split.TEST) == (list(test["review"]), list(test["label"]))
    with Session(engine) as session:
        events = session.exec(select(LabelEvent)).all()
        assert set(session.exec(select(Review.source)).all()) == {"dataset"}
    assert {(e.kind, e.channel) for e in events} == {("import", "dataset")}
    assert [sum(e.split == part for e in events) for part in ("train", "test")] == [8390, 3597]


def test_the_jsonl_is_chat_format_with_raw_chinese(canonical_out: Path, dataset: Path):
    first = (canonical_out / "test.jsonl").read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first == (
        '{"messages": [{"role": "system", "content": "你是一位外卖评论好评差评评论专家。"}, '
        '{"role": "user", "content": "超级好喝，几乎老点…送餐员师傅态度很好！赞！"}, '
        '{"role": "assistant", "content": "好评"}]}'
    )
    for name, frame in zip(("train", "test"), canonical_frames(dataset), strict=True):
        raw = (canonical_out / f"{name}.jsonl").read_bytes()
        assert b"\\u" not in raw and SYSTEM.encode() in raw and raw.endswith(b"\n")
        records = jsonl(canonical_out / f"{name}.jsonl")
        assert len(records) == len(frame)
        for record, (review, label) in zip(records, frame[["review", "label"]].values, strict=True):
            assert record == {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": review},
                    {"role": "assistant", "content": "好评" if label == 1 else "差评"},
                ]
            }


@pytest.mark.slow
def test_preparing_twice_changes_nothing(engine: Engine, dataset: Path, tmp_path):
    first = prepare(engine, str(dataset), tmp_path / "out")
    before, hashes = counts(engine), digests(tmp_path / "out")
    second = prepare(engine, str(dataset), tmp_path / "out")
    assert (first.imported, second.imported) == (11987, 0)
    assert before == counts(engine) == (11987, 11987)
    assert second.files == first.files
    assert digests(tmp_path / "out") == hashes and set(hashes) == {"train.jsonl", "test.jsonl"}


UNDECODABLE = b"label,review\n1,\xff\xff\n0,\xb2\xee\n"


def test_the_undecodable_sample_really_fails_both_decodings():
    for encoding in ("utf-8", "gbk", "gb18030"):
        with pytest.raises(UnicodeDecodeError):
            UNDECODABLE.decode(encoding)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("label,text\n1,好吃\n".encode(), r"missing column.*review", id="no-review"),
        pytest.param(
            "label,review\n1,好吃\n2,难吃\nx,一般\n".encode(),
            r"2 label\(s\) are not 0 or 1: line 3 \('2'\), line 4 \('x'\)",
            id="labels",
        ),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b" \n\n", "empty", id="blank"),
        pytest.param(b"label,review\n", "header but no rows", id="header-only"),
        pytest.param(b"label,review\n1,\x00\x01\x02\n", "binary", id="binary"),
        pytest.param(UNDECODABLE, "neither UTF-8 nor GBK", id="undecodable"),
        pytest.param(b"\xef\xbb\xbf" + UNDECODABLE, "neither UTF-8 nor GBK", id="bom-undecodable"),
    ],
)
def test_bad_input_is_a_data_error_and_writes_nothing(engine: Engine, tmp_path, content, message):
    source = tmp_path / "reviews.csv"
    source.write_bytes(content)
    with pytest.raises(DataError, match=message):
        prepare(engine, str(source), tmp_path / "out")
    assert_nothing_written(engine, tmp_path / "out")


def test_a_bom_is_dropped_and_gives_the_same_reviews(engine: Engine, tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text(small_csv(), encoding="utf-8")
    bom.write_text(small_csv(), encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    with_bom = prepare(engine, str(bom), tmp_path / "bom")
    without = prepare(engine, str(plain), tmp_path / "plain")
    assert (with_bom.encoding, without.encoding) == ("utf-8-sig", "utf-8")
    assert (with_bom.train, with_bom.test, with_bom.imported) == (14, 6, 20)
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "bom" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
        answers = {r["messages"][2]["content"] for r in jsonl(tmp_path / "bom" / name)}
        assert answers == {"好评", "差评"}
    assert not any(t.startswith("\ufeff") for t in user_texts(tmp_path / "bom" / "train.jsonl"))


def test_a_gbk_csv_round_trips_its_chinese(engine: Engine, tmp_path):
    source, out = tmp_path / "gbk.csv", tmp_path / "out"
    source.write_bytes(small_csv().encode("gbk"))
    report = prepare(engine, str(source), out)
    assert (report.encoding, report.train, report.test, report.canonical) == ("gbk", 14, 6, False)
    texts = user_texts(out / "train.jsonl", out / "test.jsonl")
    assert sorted(texts) == sorted(pd.read_csv(source, encoding="gbk")["review"])
    assert "味道很好，送餐很快0" in texts
    assert "味道很好，送餐很快0".encode() in b"".join(p.read_bytes() for p in out.iterdir())


def test_empty_reviews_are_skipped_and_reported(engine: Engine, tmp_path):
    source, out = tmp_path / "reviews.csv", tmp_path / "out"
    source.write_text(small_csv(empty_at=(3, 4, 11, 16)), encoding="utf-8")
    report = prepare(engine, str(source), out)
    assert report.skipped_empty == [3, 4, 11, 16]
    assert (report.rows, report.train + report.test, report.imported) == (20, 16, 16)
    texts = user_texts(out / "train.jsonl", out / "test.jsonl")
    assert len(texts) == 16 and all(t.strip() == t and t for t in texts)
    assert counts(engine) == (16, 16)


def test_another_dataset_is_refused_and_the_store_and_jsonl_stay_in_step(engine: Engine, tmp_path):
    first, second, out = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "out"
    first.write_text(small_csv(), encoding="utf-8")
    second.write_text(small_csv(tag="新"), encoding="utf-8")
    prepare(engine, str(first), out)
    before = (out / "test.jsonl").read_bytes()
    with pytest.raises(DataError, match="different dataset"):
        prepare(engine, str(second), out)
    assert (out / "test.jsonl").read_bytes() == before
    assert load_split(engine, Split.TEST)[0] == user_texts(out / "test.jsonl")


Route = tuple[int, bytes, int]  # status, body, declared Content-Length


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, Route]]]:
    """A real HTTP server on loopback serving ``routes`` (path → status, body, Content-Length)."""
    routes: dict[str, Route] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, declared = routes.get(self.path, (404, b"not found", 9))
            self.send_response(status)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)  # a body shorter than declared, then close: truncated
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", routes
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.slow
def test_a_download_of_the_real_bytes_is_verified(engine, dataset, tmp_path, http_server):
    base, routes = http_server
    content = dataset.read_bytes()
    routes["/datasets/waimai_10k.csv"] = (200, content, len(content))
    url = f"{base}/datasets/waimai_10k.csv"
    report = prepare(engine, url, tmp_path / "out", timeout_s=30)
    assert (report.origin, report.canonical, report.train, report.test) == (url, True, 8390, 3597)
    assert counts(engine) == (11987, 11987)


def one_byte_changed(content: bytes) -> bytes:
    i = content.index(b"\n1,") + 1  # the first label: still a valid CSV, not the published bytes
    return content[:i] + b"0" + content[i + 1 :]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param(lambda c: (200, one_byte_changed(c), len(c)), "checksum", id="altered"),
        pytest.param(lambda c: (200, c[: len(c) // 2], len(c)), "truncated|failed", id="truncated"),
        pytest.param(lambda c: (404, b"gone", 4), "404", id="404"),
    ],
)
def test_a_bad_download_is_a_data_error_and_writes_nothing(
    engine, dataset, tmp_path, http_server, route, message
):
    base, routes = http_server
    routes["/waimai_10k.csv"] = route(dataset.read_bytes())
    with pytest.raises(DataError, match=message):
        prepare(engine, f"{base}/waimai_10k.csv", tmp_path / "out", timeout_s=30)
    assert_nothing_written(engine, tmp_path / "out")


def test_fetch_prefers_the_shared_local_copy(monkeypatch, dataset: Path):
    monkeypatch.chdir(REPO)
    raw = fetch(None, timeout_s=1)
    assert raw.origin == str(Path("../shared/data/waimai_10k.csv"))
    assert Path(raw.origin).resolve() == dataset.resolve()
    assert raw.canonical and raw.content == dataset.read_bytes()
