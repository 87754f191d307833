"""A document (CSV, TXT or XLSX) is a batch of reviews: progress in one edited message, then the
results file (an .xlsx for an .xlsx, else a CSV) with a summary."""

from __future__ import annotations

import logging
import time

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile, Message

from bot import texts
from bot.chat_action import ChatAction
from core.access.merchants import Member
from core.classify.uploads import BatchReport
from core.store.tables import Source
from core.wiring import Core

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 120
SKIPPED_ROWS_SHOWN = 5


def router() -> Router:
    router = Router(name="batch")
    router.message.register(on_document, F.document)
    return router


async def on_document(
    message: Message, bot: Bot, core: Core, member: Member, lang: texts.Lang
) -> None:
    document = message.document
    assert document is not None
    name = document.file_name or "reviews"
    progress = _Progress(message, name, core.settings.telegram.progress_interval_s, lang)

    async def fetch() -> bytes:
        buffer = await bot.download(document, timeout=DOWNLOAD_TIMEOUT_S)
        assert buffer is not None
        return buffer.read()

    try:
        async with ChatAction(bot, message.chat.id, "upload_document"):
            report = await core.batch.classify_file(
                document.file_name or "",
                fetch,
                declared_size=document.file_size,
                mime_type=document.mime_type,
                source=Source.TELEGRAM,
                tenant=member.tenant,
                on_progress=progress.update,
            )
    except Exception:
        await progress.interrupted()
        raise
    await send_results(message, report, lang)


async def send_results(message: Message, report: BatchReport, lang: texts.Lang) -> None:
    """The results file, in reply to ``message``, with the summary as its caption."""
    await message.reply_document(
        BufferedInputFile(report.results_file(), filename=report.results_name),
        caption=summary(report, lang),
    )


def summary(report: BatchReport, lang: texts.Lang) -> str:
    lines = [
        texts.t(
            "batch_summary",
            lang,
            total=len(report.results),
            positive=report.positive,
            negative=report.negative,
            rate=texts.percent(report.positive_rate),
        )
    ]
    if report.skipped:
        separator = "、" if lang == "zh" else ", "
        rows = separator.join(map(str, report.skipped[:SKIPPED_ROWS_SHOWN]))
        lines.append(texts.t("batch_skipped", lang, count=len(report.skipped), rows=rows))
    if report.fallback:
        lines.append(texts.t("batch_fallback", lang, count=report.fallback))
    return "\n".join(lines)


class _Progress:
    """One message, sent when the file has been read and edited at most every ``interval_s``
    (Telegram limits edits), and always at the end."""

    def __init__(self, origin: Message, name: str, interval_s: float, lang: texts.Lang) -> None:
        self._origin = origin
        self._name = name
        self._interval_s = interval_s
        self._lang = lang
        self._message: Message | None = None
        self._shown = ""
        self._last = 0.0
        self._done = self._total = 0

    async def update(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        text = texts.t("batch_progress", self._lang, name=self._name, done=done, total=total)
        now = time.monotonic()
        if self._message is None:
            self._message = await self._origin.answer(text)
        elif text != self._shown and (done == total or now - self._last >= self._interval_s):
            await self._show(text)
        else:
            return
        self._shown, self._last = text, now

    async def interrupted(self) -> None:
        """Say the file was not finished (when it had started)."""
        if self._message is not None:
            await self._show(
                texts.t(
                    "batch_interrupted",
                    self._lang,
                    name=self._name,
                    done=self._done,
                    total=self._total,
                )
            )

    async def _show(self, text: str) -> None:
        """Edit the progress message; a failed edit (deleted, flood control) costs nothing else."""
        assert self._message is not None
        try:
            await self._message.edit_text(text)
        except TelegramAPIError as error:
            log.warning("progress of %s not shown: %s", self._name, error)
