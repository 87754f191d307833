"""Zhipu's errors: an HTTP status and a body ``{"error": {"code": "1302", "message": "..."}}``.

Codes and wording from Zhipu's error-code page (docs.bigmodel.cn/cn/api/api-code). Quotas,
balance and locked accounts come as 429 like throttling does; only the code tells them apart.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from fastapi.responses import JSONResponse

BEIJING = timezone(timedelta(hours=8))
QUOTA_WINDOW_S = 5 * 3600.0
"""What a 1308 (or 1310) says when nobody chose: the quota resets five hours from now."""

MESSAGES = {
    "1002": "Authorization Token非法，请确认Authorization Token正确传递。",
    "1112": "您的账户已被锁定，请联系客服解锁。",
    "1113": "您的账户已欠费，请充值后重试。",
    "1121": "账户存违规行为，账号已被锁定。",
    "1211": "模型不存在，请检查模型代码。",
    "1214": "参数非法，请检查文档。",
    "1220": "您无权访问该模型。",
    "1301": "系统检测到输入或生成内容可能包含不安全或敏感内容，"
    "请您避免输入易产生敏感内容的提示语，感谢您的配合",
    "1302": "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。",
    "1303": "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。",
    "1304": "该 API 已达今日调用次数限额，如有更多需求，请联系客服购买。",
    "1305": "当前API请求过多，请稍后重试。",
    "1308": "已达到 5 小时的使用上限。您的限额将在 {next_flush_time} 重置。",
    "1310": "您已达到每周/每月使用上限，您的限额将在 {next_flush_time} 重置。",
    "500": "Internal Error",
}


def zhipu_time(unix_time: float) -> str:
    """A time as Zhipu writes it in its messages: Beijing time, to the second."""
    return f"{datetime.fromtimestamp(unix_time, BEIJING):%Y-%m-%d %H:%M:%S}"


def quota_message(code: str, resets_at: float) -> str:
    """The message of a 1308 or 1310 whose quota resets at ``resets_at`` (a Unix time)."""
    return MESSAGES[code].format(next_flush_time=zhipu_time(resets_at))


class ZhipuError(Exception):
    """Raised by a route; answered as Zhipu answers an error."""

    def __init__(self, status: int, code: str, message: str | None = None) -> None:
        if message is None and code in ("1308", "1310"):
            message = quota_message(code, time.time() + QUOTA_WINDOW_S)
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, "error")
        super().__init__(self.message)

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status)
