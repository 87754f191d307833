"""Zhipu's errors: an HTTP status and a body ``{"error": {"code": "1302", "message": "..."}}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse

MESSAGES = {
    "1002": "Authorization Token非法，请确认Authorization Token正确传递。",
    "1113": "您的账户已欠费，请充值后重试。",
    "1211": "模型不存在，请检查模型代码。",
    "1214": "参数非法，请检查文档。",
    "1301": "系统检测到输入或生成内容可能包含不安全或敏感内容，请您避免输入易产生敏感内容的提示语",
    "1302": "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。",
    "1303": "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。",
    "1305": "当前API请求过多，请稍后重试。",
    "500": "Internal Error",
}


class ZhipuError(Exception):
    """Raised by a route; answered as Zhipu answers an error."""

    def __init__(self, status: int, code: str, message: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(code, "error"))
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, "error")

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status)
