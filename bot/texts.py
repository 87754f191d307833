"""Every word the bot says: Chinese first, English when the user's Telegram language is English.

Past 300 lines: it is the bot's whole vocabulary, a table for each kind of text (replies, the
fates of labels, error codes, the command menu), each text beside its translation.
"""

from __future__ import annotations

from typing import Literal

from aiogram.types import User

from core.labels.rules import Fate
from serving.base import Label

Lang = Literal["zh", "en"]

_TEXTS: dict[str, tuple[str, str]] = {
    "welcome": (
        "你好！我把外卖评论分成好评或差评。\n"
        "直接发一条评论给我；一条消息里有多行时，我会问你要不要逐行判断。\n"
        "也可以发一个 CSV、TXT 或 Excel（.xlsx）文件批量判断（每行一条，或 review 列），"
        "结果文件和你发的格式一样（TXT 的结果是 CSV）。\n"
        "判断不对就点按钮纠正；/stats 看统计，/queue 看模型最没把握的评论。",
        "Hi! I classify takeaway reviews as 好评 (positive) or 差评 (negative).\n"
        "Send me a review; when a message has several lines, I ask whether to judge each line.\n"
        "Or send a CSV, TXT or Excel (.xlsx) file (one review a line, or a review column) for a "
        "batch: the results come back in the same format (a CSV for a TXT).\n"
        "Tap a button to correct me; /stats for your numbers, /queue for the reviews I'm least "
        "sure about.",
    ),
    "welcome_admin": (
        "管理员命令：/model 当前模型和它的报告图，/retrain 申请重新训练。",
        "Admin commands: /model for the active model and its report, /retrain to request a "
        "retrain.",
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
        "请发一条文字评论，或一个 CSV、TXT 或 XLSX 文件。",
        "Please send a review as text, or a CSV, TXT or XLSX file.",
    ),
    "unknown_command": (
        "没有这个命令。发 /start 看看怎么用。",
        "I don't know that command. Send /start to see how to use me.",
    ),
    "queued": (
        "消息有点多：每 {window} 秒我最多处理 {limit} 条，后面的先排队，会按顺序逐条回复"
        "（下一条大约 {seconds} 秒后）。",
        "That's a lot of messages: I answer at most {limit} every {window} s, so the rest wait "
        "in line and are answered in order (the next in about {seconds} s).",
    ),
    "not_taken": (
        "排队的消息已满（最多 {queue} 条），下面 {count} 条没有收下，也没有保存：",
        "The line is full (at most {queue} messages), so these {count} were not taken, nor stored:",
    ),
    "not_taken_more": ("（续）没有收下的消息：", "(continued) Messages not taken:"),
    "not_taken_hint": (
        "请稍后再发这些消息；评论多的话，把它们放进一个 CSV、TXT 或 XLSX 文件（每行一条）"
        "发给我，一次全部判断。",
        "Send them again later; for many reviews, put them in a CSV, TXT or XLSX file (one a "
        "line) and send me that: I classify a whole file at once.",
    ),
    "not_text_message": ("（一条非文字消息）", "(a message without text)"),
    "press_throttled": (
        "点得太快啦，请 {seconds} 秒后再点。",
        "Too many taps: please try again in {seconds} s.",
    ),
    "lines_offer": (
        "这条消息有 {count} 行。要把每一行当作一条评论分别判断吗？",
        "This message has {count} lines. Shall I judge each line as a review of its own?",
    ),
    "button_lines": ("📋 逐行判断（{count} 条）", "📋 Each line ({count} reviews)"),
    "button_whole": ("整条算一条评论", "The whole message is one review"),
    "lines_chosen": (
        "逐行判断这 {count} 条：",
        "Judging the {count} lines one by one:",
    ),
    "lines_file": (
        "逐行判断这 {count} 条：行数较多，结果放在文件里。",
        "Judging the {count} lines one by one: that is many, so the results come as a file.",
    ),
    "whole_chosen": ("整条当作一条评论判断：", "Judging the whole message as one review:"),
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
    "model_report_missing": (
        "（报告图暂时画不出来，已记录。）",
        "(The report picture could not be drawn; it has been logged.)",
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
    "backend_alert": (
        "⚠️ {backend} 模型暂时无法使用，评论改由备用模型判断。{message}",
        "⚠️ The {backend} model cannot answer for now; the fallback answers meanwhile. {message}",
    ),
    "finetune_refused": (
        "⚠️ 智谱拒绝了微调任务 #{job}，不会自动重试：{reason}",
        "⚠️ Zhipu refused fine-tune job #{job}; nothing retries it: {reason}",
    ),
    "finetune_failed": (
        "⚠️ 智谱微调任务 #{job} 训练失败：{reason}",
        "⚠️ Zhipu fine-tune job #{job} failed while training: {reason}",
    ),
    "finetune_paused": (
        "⏸ 智谱微调暂停（任务 #{job}）：{reason}",
        "⏸ Zhipu fine-tunes are paused (job #{job}): {reason}",
    ),
    "finetune_over_budget": (
        "💰 智谱微调未发起，本月预算不够：{reason}",
        "💰 No Zhipu fine-tune was launched: this month's budget would be passed. {reason}",
    ),
    "finetune_deploy": (
        "🚀 智谱微调任务 #{job} 已完成，需先在智谱控制台部署才能调用：{reason}",
        "🚀 Zhipu fine-tune job #{job} is done, and answers only once deployed: {reason}",
    ),
    "drift_correction_rate": (
        "📈 商家 {tenant} 最近 {hours:g} 小时的 {count} 条标注中，{rate} 在纠正模型"
        "（阈值 {threshold}）。可在 /admin 查看，或安排重训。",
        "📈 Merchant {tenant} corrected {rate} of the model's verdicts in {count} labels over the "
        "last {hours:g} hours (the threshold is {threshold}). See /admin, or ask for a retrain.",
    ),
    "drift_fallback_rate": (
        "📉 最近 {hours:g} 小时的 {count} 条评论中，{rate} 由备用模型判断（阈值 {threshold}）。"
        "请检查当前模型的后端。",
        "📉 A fallback answered {rate} of {count} reviews over the last {hours:g} hours (the "
        "threshold is {threshold}): check the active model's backend.",
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

_COMMANDS: dict[str, tuple[str, str]] = {
    "start": ("开始使用，看看怎么用", "Start, and how to use me"),
    "help": ("使用说明", "How to use me"),
    "stats": ("我最近 7 天的评论统计", "Your reviews of the last 7 days"),
    "queue": ("模型最没把握的评论，帮忙确认", "The reviews I'm least sure about"),
}
ADMIN_COMMANDS: dict[str, tuple[str, str]] = {
    "model": ("当前模型和它的报告图", "The active model and its report"),
    "retrain": ("申请重新训练模型", "Request a retrain"),
}

DESCRIPTION = (
    "我把外卖评论分成好评或差评。发一条评论，或一个 CSV、TXT、XLSX 文件批量判断；"
    "判断不对点一下就能纠正，模型会从你的纠正中学习。仅对受邀商家开放。",
    "I classify Chinese takeaway reviews as 好评 (positive) or 差评 (negative). Send a review, "
    "or a CSV, TXT or XLSX file for a batch; tap to correct me, and the model learns from your "
    "corrections. For invited merchants.",
)
SHORT_DESCRIPTION = (
    "外卖评论好评/差评分类，点一下纠正，模型就会学。",
    "Classifies takeaway reviews as positive or negative, and learns from your corrections.",
)

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
        "只接受 CSV、TXT 或 Excel（.xlsx）文件；旧版 .xls 请另存为 .xlsx 或 CSV。",
        "Only CSV, TXT or Excel (.xlsx) files are accepted; save an old .xls as .xlsx or CSV.",
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
        "这个文件读不出来：它不是有效的 CSV 或 Excel（.xlsx）文件。",
        "I can't read this file: it is not a valid CSV or Excel (.xlsx) file.",
    ),
    "message_gone": (
        "原来那条消息已经删除了，请重新发送评论。",
        "The message this button belongs to was deleted; please send the reviews again.",
    ),
    "app_error": ("操作没有成功：{detail}", "That didn't work: {detail}"),
    "data_error": (
        "数据集文件有问题：{detail}",
        "The dataset file has a problem: {detail}",
    ),
    "store_unavailable": (
        "数据库暂时连不上，请稍后再试。",
        "The database cannot be reached right now; please try again shortly.",
    ),
    "unauthenticated": (
        "无法确认你的身份（缺少或无效的密钥）。",
        "I could not tell who you are (a missing or invalid key).",
    ),
    "rate_limited": ("请求太多，请稍后再试。", "Too many requests; please try again later."),
    "idempotency_conflict": (
        "这个投递编号已经用于另一份内容；新的投递需要新的编号。",
        "This delivery id was already used with another body; a new delivery needs a new id.",
    ),
    "gate_refused": (
        "把关没有通过，模型没有上线：{detail}",
        "The gate kept the model out, so it was not promoted: {detail}",
    ),
    "adapter_refused": (
        "vLLM 拒绝了这个 LoRA 适配器，模型没有上线：{detail}",
        "vLLM refused the LoRA adapter, so the model was not promoted: {detail}",
    ),
    "not_configured": (
        "智谱没有配置好（检查 ZHIPU__API_KEY）：{detail}",
        "Zhipu is not configured (check ZHIPU__API_KEY): {detail}",
    ),
    "over_budget": (
        "超出预算，微调没有发起：{detail}",
        "Over budget, so no fine-tune was launched: {detail}",
    ),
    "too_few_new_labels": (
        "新标注太少，不值得再做一次微调：{detail}",
        "Too few new labels to be worth another fine-tune: {detail}",
    ),
    "finetune_refused": (
        "智谱拒绝了这个微调，重试也没用：{detail}",
        "Zhipu refused the fine-tune, and would again: {detail}",
    ),
    "finetune_paused": (
        "智谱微调暂停中（额度用完或账号被锁）：{detail}",
        "Zhipu fine-tunes are paused (a used-up quota or a locked account): {detail}",
    ),
}


def lang_of(user: User | None) -> Lang:
    return language((user.language_code or "") if user is not None else "")


def language(code: str) -> Lang:
    """English for a Telegram language code of English (``en``, ``en-GB``), else Chinese."""
    return "en" if code.lower().startswith("en") else "zh"


def pick(pair: tuple[str, str], lang: Lang) -> str:
    zh, en = pair
    return en if lang == "en" else zh


def t(key: str, lang: Lang, **params: object) -> str:
    return pick(_TEXTS[key], lang).format(**params)


def fate(fate: Fate, lang: Lang) -> str:
    """What became of a label: whose model it teaches, and why."""
    zh, en = _FATES[fate.code]
    return (en if lang == "en" else zh).format(n=fate.n, trust=fate.trust)


def error(code: str, lang: Lang, *, detail: str, **limits: float) -> str:
    """A short reply for an AppError's code; ``detail`` is its (English) message, ``limits``
    the settings the texts mention (max_mb, max_chars, undo_minutes)."""
    return pick(_ERRORS.get(code, _ERRORS["app_error"]), lang).format(detail=detail, **limits)


def error_codes() -> frozenset[str]:
    """The AppError codes that have a reply of their own."""
    return frozenset(_ERRORS)


def commands(lang: Lang, *, admin: bool = False) -> list[tuple[str, str]]:
    """The "/" menu: (command, description), the admin commands after the others."""
    menu = {**_COMMANDS, **ADMIN_COMMANDS} if admin else _COMMANDS
    return [(command, pick(pair, lang)) for command, pair in menu.items()]


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
    return f"「{shortened(' '.join(text.split()), limit)}」"


def shortened(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and ``…``."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
