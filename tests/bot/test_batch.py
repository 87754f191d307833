"""Scenarios: a merchant sends a file of reviews and gets a results CSV back; bad files are
refused with a clear message and nothing is stored."""

from __future__ import annotations

import csv
import io

import pytest
from sqlmodel import Session, col, select

from core.models import registry
from core.store.tables import Review
from tests.bot.conftest import MERCHANT

NEGATIVE = ["送餐太慢了，菜都凉了", "太难吃了，再也不点了", "等了两个小时，差评"]
POSITIVE = ["味道很好，分量足", "很好吃，送得也快，还会再点"]


def merchant_reviews(core) -> list[Review]:
    with Session(core.engine) as session:
        return list(session.exec(select(Review).where(col(Review.tenant) == "telegram:2001")).all())


async def send_file(live, name: str, content: bytes, mime_type: str = "text/csv"):
    mark = live.server.mark()
    await live.server.send_document(MERCHANT, name, content, mime_type)
    return mark


def results_of(live, call) -> list[dict[str, str]]:
    _, content = live.server.files[call.result["document"]["file_id"]]
    assert content.startswith(b"\xef\xbb\xbf"), "UTF-8 with a BOM, for Excel"
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))


async def test_a_csv_with_a_review_column(start_bot):
    live = await start_bot(batch_chunk_size=2)
    rows = [("1", text, "5") for text in NEGATIVE + POSITIVE]
    content = "id,review,stars\n" + "\n".join(",".join(r) for r in rows) + "\n2,,3\n"
    mark = await send_file(live, "orders.csv", content.encode("utf-8"))

    sent = await live.next("sendDocument", MERCHANT["id"], after=mark)
    assert sent.result["document"]["file_name"] == "orders_results.csv"
    assert sent.params["caption"] == (
        "完成：5 条评论，好评 2 条，差评 3 条，好评率 40%。\n"
        "跳过 1 行（空行或无法使用），如第 7 行。"
    )
    results = results_of(live, sent)
    assert [r["review"] for r in results] == NEGATIVE + POSITIVE
    assert [r["label_zh"] for r in results] == ["差评"] * 3 + ["好评"] * 2
    assert {r["label"] for r in results} == {"negative", "positive"}
    assert all(0.5 <= float(r["confidence"]) <= 1 for r in results)

    progress = live.server.calls_of("sendMessage", chat_id=MERCHANT["id"])
    assert [c.params["text"] for c in progress] == ["正在处理 orders.csv：0/5"]
    edits = [c.params["text"] for c in live.server.calls_of("editMessageText")]
    assert edits == [f"正在处理 orders.csv：{n}/5" for n in (2, 4, 5)]
    stored = merchant_reviews(live.core)
    assert len(stored) == 5
    assert all((r.external_id or "").startswith("upload:") for r in stored)

    # The same file again: the same reviews, predicted again, not counted twice.
    mark = await send_file(live, "orders.csv", content.encode("utf-8"))
    await live.next("sendDocument", MERCHANT["id"], after=mark)
    assert len(merchant_reviews(live.core)) == 5


async def test_a_gbk_csv_without_header_and_a_txt_with_bom(start_bot):
    live = await start_bot()
    mark = await send_file(live, "差评.csv", "\n".join(NEGATIVE).encode("gbk"))
    sent = await live.next("sendDocument", MERCHANT["id"], after=mark)
    assert [r["review"] for r in results_of(live, sent)] == NEGATIVE
    assert sent.result["document"]["file_name"] == "差评_results.csv"

    text = ("\n".join(POSITIVE) + "\n\n").encode("utf-8-sig")
    mark = await send_file(live, "good.txt", text, "text/plain")
    sent = await live.next("sendDocument", MERCHANT["id"], after=mark)
    assert [r["label_zh"] for r in results_of(live, sent)] == ["好评", "好评"]
    assert sent.params["caption"].startswith("完成：2 条评论，好评 2 条，差评 0 条，好评率 100%。")


@pytest.mark.parametrize(
    ("name", "content", "reply"),
    [
        (
            "menu.xls",
            b"\xd0\xcf\x11\xe0 an old spreadsheet",
            "只接受 CSV、TXT 或 Excel（.xlsx）文件；旧版 .xls 请另存为 .xlsx 或 CSV。",
        ),
        (
            "menu.xlsx",
            b"PK\x03\x04 not a workbook",
            "这个文件读不出来：它不是有效的 CSV 或 Excel（.xlsx）文件。",
        ),
        (
            "reviews.csv",
            b"review\n\xff\xfe\x00\x01binary",
            "无法读取文件的编码，请另存为 UTF-8 或 GBK 后再发。",
        ),
        (
            "reviews.csv",
            "好吃".encode() + b"\xff\xff\xff",
            "无法读取文件的编码，请另存为 UTF-8 或 GBK 后再发。",
        ),
        ("reviews.csv", b"review\n\n  \n", "文件里没有可用的评论。"),
        ("reviews.txt", b"", "文件里没有可用的评论。"),
        ("big.csv", "好吃\n".encode() * 400, "文件太大：最多 0.001 MB。"),
    ],
)
async def test_bad_files_get_a_clear_message_and_store_nothing(start_bot, name, content, reply):
    live = await start_bot(max_file_mb=0.001)
    mark = await send_file(live, name, content)
    answer = await live.next("sendMessage", MERCHANT["id"], after=mark)
    assert answer.params["text"] == reply
    assert merchant_reviews(live.core) == []
    assert live.server.calls_of("sendDocument") == []
    if name in ("menu.xls", "big.csv"):
        assert live.server.calls_of("getFile") == [], "refused before downloading"


async def test_a_file_that_fails_part_way_is_not_acknowledged_and_can_be_sent_again(start_bot):
    live = await start_bot(batch_chunk_size=1, fallbacks=[])
    good = registry.active(live.core.engine)
    reviews = [f"{text}（{n}）" for n in range(40) for text in NEGATIVE + POSITIVE]
    content = "\n".join(reviews).encode()
    started = await send_file(live, "week.txt", content, "text/plain")
    await live.next("sendMessage", MERCHANT["id"], after=started)
    # The model breaks while the file is being worked on, and nothing else can answer.
    broken = registry.register(live.core.engine, backend="local", model_ref="gone", metrics={})
    registry.promote(live.core.engine, broken.id or 0)

    apology = await live.server.wait_for(
        "sendMessage",
        lambda c: c.params["text"] == "模型暂时无法回答，请稍后再试。",
        after=started,
    )
    progress = live.server.sent(MERCHANT["id"])
    interrupted = [m for m in progress if m.get("text", "").startswith("未完成：week.txt")]
    assert len(interrupted) == 1
    done = int(interrupted[0]["text"].split("处理到 ")[1].split("/")[0])
    assert done < len(reviews), done
    assert len(merchant_reviews(live.core)) == done
    assert live.server.calls_of("sendDocument") == []
    assert apology.status == 200

    registry.promote(live.core.engine, good.id or 0)
    again = await send_file(live, "week.txt", content, "text/plain")
    sent = await live.next("sendDocument", MERCHANT["id"], after=again)
    assert len(results_of(live, sent)) == len(reviews)
    assert len(merchant_reviews(live.core)) == len(reviews), "the first rows were reused"
