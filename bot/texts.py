"""Every word the bot says: Chinese first, English when the user's Telegram language is English."""

from __future__ import annotations

from typing import Literal

from aiogram.types import User

from core.labels.rules import Fate
from serving.base import Label

Lang = Literal["zh", "en"]

_TEXTS: dict[str, tuple[str, str]] = {
    "welcome": (
        "你好！我把外卖评论分成好评或差评。\n"
        "直接发一条评论给我，或发一个 CSV/TXT 文件（每行一条，或 review 列）批量判断。\n"
        "判断不对就点按钮纠正；/stats 看统计，/queue 看模型最没把握的评论。",
        "Hi! I classify takeaway reviews as 好评 (positive) or 差评 (negative).\n"
        "Send me a review, or a CSV/TXT file (one review a line, or a review column) for a batch.\n"
        "Tap a button to correct me; /stats for your numbers, /queue for the reviews I'm least "
        "sure about.",
    ),
    "welcome_admin": (
        "管理员命令：/model 当前模型，/retrain 申请重新训练。",
        "Admin commands: /model for the active model, /retrain to request a retrain.",
    ),
    "confidence": ("置信度 {percent}", "confidence {percent}"),
    "fallback": ("（备用模型）", "(fallback model)"),
    "button_right": ("✅ 对", "✅ Right"),
    "button_wrong": ("❌ 不对，是{other}", "❌ Wrong, it's {other}"),
    "button_undo": ("↩ 撤销", "↩ Undo"),
    "confirmed": ("✅ 已确认：{label}", "✅ Confirmed: {label}"),
    "corrected": ("✏️ 已更正为：{label}", "✏️ Corrected to: {label}"),
    "recorded": ("已记录，谢谢！", "Recorded, thank you!"),
    "undone": ("已撤销", "Undone"),
    "not_text": (
        "请发一条文字评论，或一个 CSV/TXT 文件。",
        "Please send a review as text, or a CSV/TXT file.",
    ),
    "unknown_command": (
        "没有这个命令。发 /start 看看怎么用。",
        "I don't know that command. Send /start to see how to use me.",
    ),
    "throttled": (
        "消息太快啦，请稍等 {seconds} 秒再发。",
        "That's a lot of messages — please wait {seconds} s and try again.",
    ),
    "batch_progress": ("正在处理 {name}：{done}/{total}", "Working on {name}: {done}/{total}"),
    "batch_interrupted": (
        "未完成：{name} 处理到 {done}/{total} 时出错，没有结果文件。请稍后重新发送这个文件"
        "（已处理的评论不会重复计算）。",
        "Not finished: {name} failed at {done}/{total}, so there is no results file. Please "
        "send the file again later (reviews already done are not counted twice).",
    ),
    "batch_summary": (
        "完成：{total} 条评论，好评 {positive} 条，差评 {negative} 条，好评率 {rate}。",
        "Done: {total} reviews, {positive} positive, {negative} negative, positive rate {rate}.",
    ),
    "batch_skipped": (
        "跳过 {count} 行（空行或无法使用），如第 {rows} 行。",
        "Skipped {count} rows (empty or unusable), e.g. row {rows}.",
    ),
    "batch_fallback": (
        "其中 {count} 条由备用模型判断。",
        "{count} of them were answered by a fallback model.",
    ),
    "stats": (
        "最近 7 天：评论 {reviews} 条，好评率 {positive_rate}；"
        "已标注 {labelled} 条，更正 {corrections} 条（更正率 {correction_rate}）。",
        "Last 7 days: {reviews} reviews, positive rate {positive_rate}; "
        "{labelled} labelled, {corrections} corrected (correction rate {correction_rate}).",
    ),
    "stats_model": (
        "当前模型：#{id}（{backend}），留出集准确率 {accuracy}。",
        "Active model: #{id} ({backend}), holdout accuracy {accuracy}.",
    ),
    "no_model": ("还没有可用的模型。", "No model is active yet."),
    "queue_empty": (
        "最近 7 天没有待确认的评论 🎉",
        "Nothing waiting for you from the last 7 days 🎉",
    ),
    "queue_head": (
        "下面 {count} 条评论模型最没把握，请帮忙确认：",
        "These {count} reviews are the ones I'm least sure about — please check them:",
    ),
    "model": (
        "当前模型 #{id}（{backend}：{ref}），{promoted} 上线。\n"
        "留出集：准确率 {accuracy}，macro-F1 {macro_f1}，校准误差 ECE {ece}。",
        "Active model #{id} ({backend}: {ref}), promoted {promoted}.\n"
        "Holdout: accuracy {accuracy}, macro-F1 {macro_f1}, calibration error (ECE) {ece}.",
    ),
    "retrain_new": (
        "已记录重训请求 #{id}。调度器还没有上线：学习循环上线后会处理它"
        "（训练候选模型，在留出集上把关，不比现在差才上线），结束时会通知管理员。",
        "Retrain request #{id} is recorded. No scheduler runs yet: the learning loop will pick it "
        "up (train a candidate, gate it on the holdout, promote it only if it is not worse) and "
        "tell the admins when it is done.",
    ),
    "retrain_pending": (
        "已有一个待处理的重训请求 #{id}（{by} 提出），没有重复记录。",
        "Retrain request #{id} (by {by}) is still pending; no second one was recorded.",
    ),
    "retrain_promoted": (
        "重训完成：候选模型 #{id} 已上线。{reason}",
        "Retrain finished: candidate #{id} was promoted. {reason}",
    ),
    "retrain_rejected": (
        "重训完成：候选模型 #{id} 未上线。{reason}",
        "Retrain finished: candidate #{id} was rejected. {reason}",
    ),
    "apology": (
        "抱歉，出了点问题，我们已记录。请稍后再试。",
        "Sorry, something went wrong on our side; it has been logged. Please try again later.",
    ),
}

_FATES: dict[str, tuple[str, str]] = {
    "admin": (
        "已记录：管理员的标注，直接进入共享模型。",
        "Recorded: an admin's label joins the shared model.",
    ),
    "admin_agrees": (
        "已记录：管理员给了相同的标注，会进入共享模型。",
        "Recorded: an admin gave the same label, so it joins the shared model.",
    ),
    "dataset_agrees": (
        "已记录：和数据集的标注一致，会进入共享模型。",
        "Recorded: it agrees with the dataset, so it joins the shared model.",
    ),
    "corroborated": (
        "已记录：{n} 个商家给了相同的标注，会进入共享模型。",
        "Recorded: {n} merchants gave the same label, so it joins the shared model.",
    ),
    "awaiting_corroboration": (
        "已记录：会用于训练你自己的模型；有其他商家或管理员同意后再进入共享模型。",
        "Recorded: it will train your own model; it joins the shared model once another "
        "merchant or an admin agrees.",
    ),
    "contradicts_admin": (
        "已记录：管理员对这条评论的标注不同，只用于训练你自己的模型。",
        "Recorded: an admin labelled this review otherwise, so it trains your own model only.",
    ),
    "contradicts_dataset": (
        "已记录：数据集对这条评论的标注不同，只用于训练你自己的模型。",
        "Recorded: the dataset labels this review otherwise, so it trains your own model only.",
    ),
    "conflict": (
        "已记录：商家们对这条评论看法不一（已报告给管理员），只用于训练你自己的模型。",
        "Recorded: merchants disagree on this review (reported to the admins), so it trains "
        "your own model only.",
    ),
    "flagged": (
        "已记录：你的标注常和其他证据不一致（可信度 {trust:.0%}），只用于训练你自己的模型。",
        "Recorded: your labels often disagree with other evidence (trust {trust:.0%}), so they "
        "train your own model only.",
    ),
    "holdout": (
        "已记录：这条评论属于冻结的留出测试集，不会用于训练任何模型。",
        "Recorded: this review is in the frozen holdout, which no model ever trains on.",
    ),
    "superseded": (
        "已被你之后对这条评论的标注取代。",
        "Replaced by a later label of yours on this review.",
    ),
}

_ERRORS: dict[str, tuple[str, str]] = {
    "not_admitted": (
        "抱歉，这个机器人只对受邀商家开放。请向管理员索取邀请链接。",
        "Sorry, this bot is for invited merchants only. Ask an admin for an invite link.",
    ),
    "invalid_invite": (
        "这个邀请码无效或已被使用。请向管理员索取新的邀请链接。",
        "This invite code is unknown or already used. Ask an admin for a new invite link.",
    ),
    "admins_only": ("这个命令只对管理员开放。", "This command is for admins only."),
    "bad_button": ("这个按钮无效。", "This button is not valid."),
    "stale_button": ("这个按钮已过期。", "This button has expired."),
    "not_found": ("找不到这条记录，或它不属于你。", "Not found, or it isn't yours."),
    "forbidden": ("你不能操作这条记录。", "You may not do that."),
    "conflict": (
        "已经撤销过了，或已超过 {undo_minutes:g} 分钟的撤销时限。",
        "Already undone, or more than {undo_minutes:g} minutes have passed.",
    ),
    "invalid_input": (
        "无法处理这条评论：它是空的、太长（最多 {max_chars} 字）或不是文字。",
        "I can't use that review: it is empty, too long (at most {max_chars} characters) or "
        "not text.",
    ),
    "backend_unavailable": (
        "模型暂时无法回答，请稍后再试。",
        "No model can answer right now; please try again later.",
    ),
    "no_active_model": (
        "还没有可用的模型，请管理员先训练一个。",
        "No model is active yet; an admin needs to train one.",
    ),
    "file_type": (
        "只接受 CSV 或 TXT 文件。",
        "Only CSV or TXT files are accepted.",
    ),
    "file_too_big": (
        "文件太大：最多 {max_mb:g} MB。",
        "The file is too big: at most {max_mb:g} MB.",
    ),
    "file_no_reviews": (
        "文件里没有可用的评论。",
        "The file has no usable review.",
    ),
    "file_undecodable": (
        "无法读取文件的编码，请另存为 UTF-8 或 GBK 后再发。",
        "I can't read the file's encoding; save it as UTF-8 or GBK and send it again.",
    ),
    "file_unreadable": (
        "这不是一个能读的 CSV 文件。",
        "This is not a readable CSV file.",
    ),
}
_UNKNOWN_ERROR = ("操作没有成功。", "That didn't work: {detail}")


def lang_of(user: User | None) -> Lang:
    code = (user.language_code or "") if user is not None else ""
    return "en" if code.lower().startswith("en") else "zh"


def t(key: str, lang: Lang, **params: object) -> str:
    zh, en = _TEXTS[key]
    return (en if lang == "en" else zh).format(**params)


def fate(fate: Fate, lang: Lang) -> str:
    """What became of a label: whose model it teaches, and why."""
    zh, en = _FATES[fate.code]
    return (en if lang == "en" else zh).format(n=fate.n, trust=fate.trust)


def error(code: str, lang: Lang, *, detail: str, **limits: float) -> str:
    """A short reply for an AppError's code; ``detail`` is its (English) message, ``limits``
    the settings the texts mention (max_mb, max_chars, undo_minutes)."""
    zh, en = _ERRORS.get(code, _UNKNOWN_ERROR)
    return (en if lang == "en" else zh).format(detail=detail, **limits)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def verdict(label: Label, confidence: float | None, fallback: bool, lang: Lang) -> str:
    """``好评 👍 置信度 97%``, plus ``（备用模型）`` when a fallback answered."""
    parts = [f"{label.zh} {'👍' if label == Label.POSITIVE else '👎'}"]
    if confidence is not None:
        parts.append(t("confidence", lang, percent=percent(confidence)))
    line = " ".join(parts)
    return line + t("fallback", lang) if fallback else line


def label_name(label: Label, lang: Lang) -> str:
    return label.zh if lang == "zh" else f"{label.zh} ({label.api_name})"


def quoted(text: str, limit: int = 200) -> str:
    """A review on one line, shortened, in 「」."""
    flat = " ".join(text.split())
    return f"「{flat if len(flat) <= limit else flat[: limit - 1] + '…'}」"
