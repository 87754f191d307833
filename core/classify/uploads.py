"""Classify an uploaded file of reviews (CSV, TXT or Excel .xlsx) and write the results: an
.xlsx file for an .xlsx upload, a CSV for the others.

The file is checked whole before anything is stored: a wrong type, a file too big, an
undecodable one or one without a usable review raises an AppError and nothing is stored.

Then it is classified in chunks, one transaction each (``ClassificationService.classify``).
A failure part-way leaves the chunks before it stored, but never a file that looks done: the
results file exists only once every chunk has succeeded, and the caller shows the error instead.
The chunks already stored are real predictions of real reviews, and each review's external id
is the file's sha256 and its row, so sending the same file again reuses those reviews instead
of counting them twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from core.classify.service import ClassificationService, Classified, ReviewInput, clean_text
from core.errors import DataError, InvalidInput
from core.models.dataset import decode
from core.store.tables import Source
from serving.base import Label

XLSX = ".xlsx"
SUFFIXES = (".csv", ".txt", XLSX)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MIME_TYPES = {
    "text/csv": ".csv",
    "text/comma-separated-values": ".csv",
    "text/plain": ".txt",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": XLSX,
}
XLSX_MAX_UNPACKED_BYTES = 256 * 1024 * 1024
"""An .xlsx is a zip: one that would unpack to more than this is refused as too big."""
REVIEW_COLUMNS = ("review", "评论", "评价")
REVIEW_HINTS = ("review", "comment", "text", "content", "评论", "评价", "内容")
_HEADER_CELL = re.compile(r"[A-Za-z_][A-Za-z0-9_ .-]{0,31}")
RESULT_COLUMNS = ("review", "label", "label_zh", "confidence")

Progress = Callable[[int, int], Awaitable[None]]
Fetch = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class ParsedFile:
    rows: list[tuple[int, str]]
    """(row number, review text) of every usable review; row 1 is the file's first."""
    skipped: list[int]
    """Row numbers of rows without a usable review (empty, too long, binary)."""
    encoding: str
    """The text encoding, or ``xlsx`` for a workbook."""


@dataclass
class BatchReport:
    filename: str
    encoding: str
    results: list[Classified] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    suffix: str = ".csv"
    """The upload's kind: an .xlsx gets its results as an .xlsx, the others as a CSV."""

    @property
    def positive(self) -> int:
        return sum(1 for r in self.results if r.verdict.label == Label.POSITIVE)

    @property
    def negative(self) -> int:
        return len(self.results) - self.positive

    @property
    def positive_rate(self) -> float:
        return self.positive / len(self.results)

    @property
    def fallback(self) -> int:
        """How many reviews a fallback model answered."""
        return sum(1 for r in self.results if r.fallback)

    @property
    def results_name(self) -> str:
        extension = "xlsx" if self.suffix == XLSX else "csv"
        return f"{PurePath(self.filename).stem or 'reviews'}_results.{extension}"

    def results_file(self) -> bytes:
        """The content of ``results_name``."""
        return self.results_xlsx() if self.suffix == XLSX else self.results_csv()

    def results_csv(self) -> bytes:
        """review, label, label_zh, confidence; UTF-8 with a BOM so that Excel reads it. A review
        that a spreadsheet would take for a formula (it starts with ``=``, ``+``, ``-``, ``@``, a
        tab or a carriage return) is written after a ``'``, as OWASP advises for CSV files."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RESULT_COLUMNS)
        for r in self.results:
            confidence = "" if r.verdict.confidence is None else f"{r.verdict.confidence:.4f}"
            label = r.verdict.label
            writer.writerow([_inert(r.text), label.api_name, label.zh, confidence])
        return out.getvalue().encode("utf-8-sig")

    def results_xlsx(self) -> bytes:
        """The same columns in a workbook (sheet ``results``; the confidence a number). Every
        review is a text cell, also one that starts with ``=`` (never a formula)."""
        from openpyxl import Workbook  # type: ignore[import-untyped]
        from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]

        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("results")
        sheet.append(RESULT_COLUMNS)
        for r in self.results:
            review = WriteOnlyCell(sheet, value=r.text)
            review.data_type = "s"
            label = r.verdict.label
            sheet.append([review, label.api_name, label.zh, r.verdict.confidence])
        out = io.BytesIO()
        workbook.save(out)
        return out.getvalue()


class BatchService:
    def __init__(
        self,
        classification: ClassificationService,
        *,
        max_bytes: int,
        chunk_size: int,
        max_text_chars: int,
    ) -> None:
        self._classification = classification
        self._max_bytes = max_bytes
        self._chunk_size = chunk_size
        self._max_text_chars = max_text_chars

    async def classify_file(
        self,
        filename: str,
        fetch: Fetch,
        *,
        declared_size: int | None = None,
        mime_type: str | None = None,
        source: Source,
        tenant: str,
        on_progress: Progress | None = None,
    ) -> BatchReport:
        """Check the name and size, ``fetch`` the bytes, parse, classify chunk by chunk.

        ``on_progress(done, total)`` is awaited once the file has been read (with 0), and
        after each chunk.
        """
        suffix = self._check_upload(filename, declared_size, mime_type)
        content = await fetch()
        self._check_size(len(content))
        parsed = parse_reviews(content, suffix, self._max_text_chars)
        digest = hashlib.sha256(content).hexdigest()[:16]
        report = BatchReport(filename, parsed.encoding, skipped=parsed.skipped, suffix=suffix)
        total = len(parsed.rows)
        if on_progress is not None:
            await on_progress(0, total)
        for start in range(0, total, self._chunk_size):
            chunk = parsed.rows[start : start + self._chunk_size]
            items = [ReviewInput(text, external_id=f"upload:{digest}:{row}") for row, text in chunk]
            report.results.extend(
                await self._classification.classify(items, source=source, tenant=tenant)
            )
            if on_progress is not None:
                await on_progress(len(report.results), total)
        return report

    def _check_upload(self, filename: str, size: int | None, mime_type: str | None) -> str:
        suffix = PurePath(filename).suffix.lower() or MIME_TYPES.get(mime_type or "", "")
        if suffix not in SUFFIXES:
            raise InvalidInput(
                f"{filename or 'the file'} is not a CSV, TXT or XLSX file", code="file_type"
            )
        if size is not None:
            self._check_size(size)
        return suffix

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise InvalidInput(
                f"the file has {size:,} bytes; at most {self._max_bytes:,} are accepted",
                code="file_too_big",
            )


def parse_reviews(content: bytes, suffix: str, max_text_chars: int) -> ParsedFile:
    """The reviews of a file: a table's ``review`` column (or 评论/评价, or else a column whose
    name says review, comment, text or content), else its first column; a TXT file's lines.
    A table is a CSV (UTF-8 with or without BOM, or GBK) or the first sheet of an .xlsx.

    A table's first row is a header when it names a review column or when every cell is a short
    ASCII name (``text,stars``); otherwise it is a review too.
    """
    if not content.strip():
        raise InvalidInput("the file is empty", code="file_no_reviews")
    if suffix == XLSX:
        cells, encoding = _review_column(_xlsx_table(content)), "xlsx"
    else:
        try:
            text, encoding = decode(content)
        except DataError as error:
            raise InvalidInput(error.message, code="file_undecodable") from error
        if suffix == ".csv":
            cells = _review_column(_csv_table(text))
        else:
            cells = list(enumerate(text.splitlines(), 1))
    rows, skipped = [], []
    for row, raw in cells:
        try:
            rows.append((row, clean_text(raw, row, max_text_chars)))
        except InvalidInput:
            skipped.append(row)
    if not rows:
        raise InvalidInput("the file has no usable review", code="file_no_reviews")
    return ParsedFile(rows, skipped, encoding)


def _inert(text: str) -> str:
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _csv_table(text: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise InvalidInput(f"not a readable CSV: {error}", code="file_unreadable") from error


def _xlsx_table(content: bytes) -> list[list[str]]:
    """The first sheet's rows (row 1 first, empty rows kept so that numbers match Excel's),
    each cell as text (empty for an empty cell; a formula as its last computed value)."""
    from openpyxl import load_workbook

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile as error:
        raise InvalidInput(f"not a readable XLSX: {error}", code="file_unreadable") from error
    if unpacked > XLSX_MAX_UNPACKED_BYTES:
        raise InvalidInput(
            f"the workbook unpacks to {unpacked:,} bytes; at most "
            f"{XLSX_MAX_UNPACKED_BYTES:,} are accepted",
            code="file_too_big",
        )
    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        try:
            sheet = workbook.worksheets[0]
            sheet.reset_dimensions()  # some writers record a wrong used range
            return [
                [_cell_text(value) for value in row]
                for row in sheet.iter_rows(min_row=1, values_only=True)
            ]
        finally:
            workbook.close()
    except Exception as error:  # openpyxl raises many kinds for a broken workbook
        raise InvalidInput(
            f"not a readable XLSX: {type(error).__name__}: {error}", code="file_unreadable"
        ) from error


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _review_column(table: list[list[str]]) -> list[tuple[int, str]]:
    if not table:
        return []
    names = [cell.strip().lower() for cell in table[0]]
    column = next((names.index(n) for n in REVIEW_COLUMNS if n in names), None)
    if column is None:
        column = next(
            (i for i, n in enumerate(names) if any(hint in n for hint in REVIEW_HINTS)), None
        )
    has_header = column is not None or all(_HEADER_CELL.fullmatch(n) for n in names if n)
    first = 2 if has_header else 1
    column = column or 0
    return [
        (number, cells[column] if len(cells) > column else "")
        for number, cells in enumerate(table[1:] if has_header else table, start=first)
    ]
