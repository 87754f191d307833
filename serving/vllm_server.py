"""The management side of a vLLM server: health, the models it serves, adapters loaded at runtime.

Runtime loading needs the server started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.
"""

from __future__ import annotations

from typing import Any

import httpx

from serving.base import BackendConfigError, BackendError

ADAPTER_LOAD_TIMEOUT_S = 120.0
"""Loading reads the adapter's weights from disk into the engine: slower than an answer."""


class VllmRefused(BackendError):
    """The server is up and answered, but with an error (a bad adapter, an unknown name)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ModelNotServed(VllmRefused):
    """The request named a model (an adapter) the server does not serve: it was never loaded
    there, or the server restarted since."""


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def error_text(response: httpx.Response) -> str:
    """The server's own message from an error body, or the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or response.reason_phrase


def refusal(response: httpx.Response, what: str) -> VllmRefused:
    """The error for a non-200 answer; ``ModelNotServed`` when it is about the model's name."""
    text = error_text(response)
    message = f"{what} answered {response.status_code}: {text}"
    if response.status_code == 404 and "does not exist" in text:
        return ModelNotServed(message, response.status_code)
    return VllmRefused(message, response.status_code)


class VllmServer:
    """Health, models and runtime adapter loading of one vLLM server."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = auth_headers(api_key)
        self._timeout_s = timeout_s

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        timeout = httpx.Timeout(timeout_s or self._timeout_s)
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=timeout
            ) as client:
                response = await client.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise BackendError(f"vLLM at {self.base_url} unreachable: {error!r}") from error
        if response.status_code != 200:
            raise refusal(response, f"vLLM {method} {path}")
        try:
            return response.json()
        except ValueError:
            return response.text

    async def health(self) -> None:
        """Return if the server and its engine are up, else BackendError."""
        await self._call("GET", "/health")

    async def models(self) -> list[str]:
        """The names the server answers to: the base model and every loaded adapter."""
        listed = await self._call("GET", "/v1/models")
        try:
            return [str(model["id"]) for model in listed["data"]]
        except (KeyError, TypeError) as error:
            raise BackendError(f"vLLM listed its models in an unknown shape: {listed!r}") from error

    async def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter in folder ``path`` (as the server sees it) under the new ``name``."""
        body = {"lora_name": name, "lora_path": path}
        await self._call("POST", "/v1/load_lora_adapter", body, timeout_s=ADAPTER_LOAD_TIMEOUT_S)

    async def ensure_adapter(self, name: str, path: str) -> bool:
        """Load adapter ``name`` from ``path`` unless the server serves it; True if loaded now.

        BackendConfigError if the server refuses it (a missing folder, say)."""
        if name in await self.models():
            return False
        try:
            await self.load_adapter(name, path)
        except VllmRefused as error:
            if name in await self.models():
                return False  # another process loaded it meanwhile
            raise BackendConfigError(
                f"vLLM at {self.base_url} refused to load adapter {name!r} from {path}: {error}"
            ) from error
        return True

    async def unload_adapter(self, name: str) -> None:
        await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
