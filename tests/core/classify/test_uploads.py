"""Uploaded files of reviews: parsing rules, refusals that store nothing, chunked classification."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest
from openpyxl import Workbook, load_workbook  # type: ignore[import-untyped]
from sqlmodel import Session, select

from core.classify import uploads
from core.classify.uploads import BatchService, parse_reviews
from core.errors import InvalidInput
from core.store.tables import Review, Source
from core.wiring import Core


def rows(content: bytes, suffix: str = ".csv") -> list[str]:
    return [text for _, text in parse_reviews(content, suffix, 2000).rows]


def test_the_review_column_or_the_first_one():
    assert rows("id,review\n1,好吃\n2,难吃\n".encode()) == ["好吃", "难吃"]
    assert rows("订单,评论内容\n1,好吃\n".encode()) == ["好吃"]
    assert rows("text,stars\n好吃,5\n".encode()) == ["好吃"]
    assert rows("好吃,5\n难吃,1\n".encode()) == ["好吃", "难吃"], "no header: every row"
    assert rows('review\n"好吃,真的好吃"\n'.encode()) == ["好吃,真的好吃"]


def test_txt_lines_encodings_and_skipped_rows():
    parsed = parse_reviews("好吃\n\n难吃\n".encode("gbk"), ".txt", 2000)
    assert [t for _, t in parsed.rows] == ["好吃", "难吃"]
    assert (parsed.skipped, parsed.encoding) == ([2], "gbk")
    parsed = parse_reviews("review\n好吃\n\n太长太长太长\n".encode("utf-8-sig"), ".csv", 5)
    assert [t for _, t in parsed.rows] == ["好吃"]
    assert (parsed.skipped, parsed.encoding) == ([3, 4], "utf-8-sig")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "file_no_reviews"),
        (b"review\n \n", "file_no_reviews"),
        (b"review\n\x00\x01", "file_undecodable"),
        (b"\xff\xff\xff", "file_undecodable"),
    ],
)
def test_unusable_files(content, code):
    with pytest.raises(InvalidInput) as refused:
        parse_reviews(content, ".csv", 2000)
    assert refused.value.code == code


def stored(core: Core) -> int:
    with Session(core.engine) as session:
        return len(session.exec(select(Review).where(Review.tenant == "t")).all())


def classify_file(core: Core, name: str, content: bytes | None, size=None, progress=None):
    """``content`` None: the file must not be fetched. Chunks of two reviews."""
    batch = BatchService(core.classification, max_bytes=20 << 20, chunk_size=2, max_text_chars=99)

    async def fetch() -> bytes:
        assert content is not None, "fetched a file that should have been refused"
        return content

    return asyncio.run(
        batch.classify_file(
            name,
            fetch,
            declared_size=size,
            source=Source.TELEGRAM,
            tenant="t",
            on_progress=progress,
        )
    )


def test_wrong_type_or_too_big_is_refused_before_fetching(core: Core):
    with pytest.raises(InvalidInput) as refused:
        classify_file(core, "menu.xls", None)
    assert refused.value.code == "file_type"
    with pytest.raises(InvalidInput) as refused:
        classify_file(core, "r.csv", None, size=21 * 1024 * 1024)
    assert refused.value.code == "file_too_big"
    assert stored(core) == 0


def test_chunks_report_progress_and_the_results_csv(core: Core):
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    content = "review\n太难吃了\n好吃，还会再点\n送得太慢\n".encode()
    report = classify_file(core, "a.csv", content, progress=progress)
    assert seen == [(0, 3), (2, 3), (3, 3)]
    assert (report.positive, report.negative, report.fallback) == (1, 2, 0)
    assert report.results_name == "a_results.csv"
    lines = report.results_csv().decode("utf-8-sig").splitlines()
    assert lines[0] == "review,label,label_zh,confidence"
    assert lines[1].startswith("太难吃了,negative,差评,0.")
    assert stored(core) == 3
    classify_file(core, "a.csv", content)
    assert stored(core) == 3, "the same file again reuses its reviews"


def test_a_review_a_spreadsheet_would_run_is_written_inert_in_the_results_csv(core: Core):
    content = "review\n=HYPERLINK(A1) 好吃\n+86 送得快\n@老板 太咸了\n好吃\n".encode()
    lines = classify_file(core, "a.csv", content).results_csv().decode("utf-8-sig").splitlines()
    assert [next(csv.reader([line]))[0] for line in lines[1:]] == [
        "'=HYPERLINK(A1) 好吃",
        "'+86 送得快",
        "'@老板 太咸了",
        "好吃",
    ]


def workbook(*rows: tuple[object, ...], formulas: bool = False) -> bytes:
    """An .xlsx as Excel users send it: a sheet of rows (None: an empty cell or row). A string
    that starts with ``=`` is text unless ``formulas``."""
    book = Workbook()
    sheet = book.active
    for number, row in enumerate(rows, 1):
        for column, value in enumerate(row, 1):
            if value is not None:
                cell = sheet.cell(number, column, value)
                if isinstance(value, str) and not formulas:
                    cell.data_type = "s"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_an_xlsx_sheet_is_read_like_a_csv():
    content = workbook(
        ("订单号", "评论", "星级"),
        (1001, "太难吃了", 1),
        (None,),
        (1003, "  好吃，还会再点 ", 5.0),
        (1004, 12345, 3),
    )
    parsed = parse_reviews(content, ".xlsx", 2000)
    assert parsed.rows == [(2, "太难吃了"), (4, "好吃，还会再点"), (5, "12345")]
    assert (parsed.skipped, parsed.encoding) == ([3], "xlsx"), "row numbers as Excel shows them"
    assert rows(workbook(("好吃", 5), ("难吃", 1)), ".xlsx") == ["好吃", "难吃"], "no header"
    computed = parse_reviews(workbook(("review",), ("=A1",), ("好吃",), formulas=True), ".xlsx", 99)
    assert (computed.rows, computed.skipped) == ([(3, "好吃")], [2]), "no value computed, none read"


def test_unreadable_or_oversized_workbooks_are_refused(monkeypatch):
    for content in (b"PK\x03\x04 not really a zip", b"just text, named .xlsx"):
        with pytest.raises(InvalidInput) as refused:
            parse_reviews(content, ".xlsx", 2000)
        assert refused.value.code == "file_unreadable"
    monkeypatch.setattr(uploads, "XLSX_MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(InvalidInput) as refused:
        parse_reviews(workbook(("review",), ("好吃",)), ".xlsx", 2000)
    assert refused.value.code == "file_too_big"
    assert "unpacks to" in refused.value.message


def test_an_xlsx_gets_its_results_as_an_xlsx(core: Core):
    content = workbook(("review",), ("太难吃了",), ('=HYPERLINK("x")',), ("好吃，还会再点",))
    report = classify_file(core, "本周.xlsx", content)
    assert report.results_name == "本周_results.xlsx"
    sheet = load_workbook(io.BytesIO(report.results_file())).active
    table = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert table[0] == ["review", "label", "label_zh", "confidence"]
    assert [row[0] for row in table[1:]] == ["太难吃了", '=HYPERLINK("x")', "好吃，还会再点"]
    assert sheet["A3"].data_type == "s", "a review is text, never a formula"
    assert [row[2] for row in table[1:]][::2] == ["差评", "好评"]
    assert all(isinstance(row[3], float) and 0.5 <= row[3] <= 1 for row in table[1:])
    csv_report = classify_file(core, "本周.csv", "review\n好吃\n".encode())
    assert csv_report.results_name == "本周_results.csv"
    assert csv_report.results_file() == csv_report.results_csv()
