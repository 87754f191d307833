"""Path and query parameters, read as strictly as the OpenAPI document describes them.

FastAPI validates parameters in pydantic's lax mode, which reads ``"1 "``, ``"+1"``, ``"1_0"``
or ``"1.0"`` as the integer 1 and a number such as ``"0.5"`` as a Unix time where the schema
says date-time. Parameters arrive as strings, so pydantic's ``Strict()`` (which refuses any
string for an integer or a date-time) cannot say this; each string is checked against the form
the schema promises before pydantic converts it, and a mismatch is the usual 422 naming it.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from api.inputs import ID_PATTERN, MAX_ID
from core.errors import InvalidInput
from core.store.tables import as_utc

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
"""A cursor is unpadded base64url, as ``next_cursor`` gives it."""
NOT_A_CURSOR = "cursor: not a cursor this API gave"
_NOT_A_DATE_TIME = "Input should be an ISO 8601 date and time, like 2026-11-28T10:00:00+08:00"
SINCE_REFUSED = ("invalid_input", f"since: {_NOT_A_DATE_TIME}")
"""The error (code, message) for a ``since`` that is not a date-time, for the OpenAPI."""


def _decimal(value: object) -> object:
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise PydanticCustomError(
            "int_parsing", "Input should be a whole number in decimal digits, like 42"
        )
    return value


def _date_time(value: object) -> object:
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise PydanticCustomError("datetime_parsing", _NOT_A_DATE_TIME)
    return value


# FastAPI's parameter first, pydantic's validator after it: the other way round, the OpenAPI
# shows `ge`/`le` as they are rather than as `minimum`/`maximum`.
Id = Annotated[int, Path(ge=1, le=MAX_ID), BeforeValidator(_decimal)]
"""An id in the path: decimal digits, nothing else (``/v1/reviews/1%20`` is a 422)."""
MerchantId = Annotated[str | None, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]
Since = Annotated[
    datetime | None,
    Query(
        description="Only what was stored at or after this time: an ISO 8601 date and time "
        "(`2026-11-28T10:00:00+08:00`; without a zone it is UTC). A date alone or a number "
        "is a 422."
    ),
    BeforeValidator(_date_time),
]
Limit = Annotated[int, Query(ge=1, le=200), BeforeValidator(_decimal)]
Cursor = Annotated[
    str | None,
    Query(
        max_length=32,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the page before, exactly as given: any other value is a "
        "422 (`invalid_input`, `cursor: not a cursor this API gave`).",
    ),
]


def next_cursor(before_id: int) -> str:
    """The ``next_cursor`` that continues a page before ``before_id``."""
    return base64.urlsafe_b64encode(f"before:{before_id}".encode()).decode().rstrip("=")


def read_cursor(value: str) -> int:
    """The id a cursor continues before; InvalidInput if the API did not give it."""
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        kind, _, number = text.partition(":")
        before_id = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(NOT_A_CURSOR) from None
    if kind != "before" or not 1 <= before_id <= MAX_ID or value != next_cursor(before_id):
        raise InvalidInput(NOT_A_CURSOR)
    return before_id


def since_utc(moment: datetime | None) -> datetime | None:
    """A ``since`` filter in UTC; a time given without a zone is taken as UTC."""
    if moment is None:
        return None
    try:
        return as_utc(moment)
    except OverflowError:
        raise InvalidInput("since: the time is out of range") from None
