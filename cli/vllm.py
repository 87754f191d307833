"""``waimai vllm``: the LoRA adapters served by vLLM: train, serve, promote, check."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from typing import Annotated
from urllib.parse import urlsplit

import typer

from cli.context import console, errors, friendly_errors, get_core, progress
from cli.models import describe
from core.config import VllmSettings
from core.wiring import Core
from retrain import promotion
from retrain.snapshot import snapshot_for
from serving.base import BackendError

app = typer.Typer(
    help="LoRA adapters on a vLLM server: train, serve, promote.", no_args_is_help=True
)


def serve_command(vllm: VllmSettings, adapters: dict[str, str]) -> list[str]:
    """The server command for a GPU machine, serving ``adapters`` (name → folder) from the start."""
    url = urlsplit(vllm.base_url)
    command = [
        "vllm",
        "serve",
        vllm.base_model,
        "--host",
        url.hostname or "127.0.0.1",
        "--port",
        str(url.port or 8000),
        "--enable-lora",
        "--max-lora-rank",
        str(vllm.lora_rank),
        "--max-loras",
        "2",
        "--max-model-len",
        str(vllm.max_seq_len),
        # vLLM's neutral sampling defaults, not the model's generation_config.json
        "--generation-config",
        "vllm",
    ]
    if adapters:
        command += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return command


def _adapters_to_serve(core: Core) -> dict[str, str]:
    vllm = core.settings.vllm
    return {
        v.model_ref: vllm.adapter_path_on_server(v.model_ref)
        for v in asyncio.run(promotion.serving_versions(core))
    }


@app.command("serve")
@friendly_errors
def serve(
    run: Annotated[bool, typer.Option("--run", help="Run it here instead of printing it")] = False,
) -> None:
    """Print (or run) the vLLM server command, with the active and previous adapters loaded."""
    core = get_core()
    vllm = core.settings.vllm
    command = serve_command(vllm, _adapters_to_serve(core))
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(command)
    if vllm.api_key:
        shown += ' --api-key "$VLLM__API_KEY"'
    if not run:
        console.print(shown, soft_wrap=True, highlight=False)
        return
    if shutil.which("vllm") is None:
        errors.print("[red]error[/red]: no `vllm` command here (pip install vllm on the GPU host)")
        raise typer.Exit(1)
    if vllm.api_key:
        command += ["--api-key", vllm.api_key.get_secret_value()]
    errors.print(shown)
    os.execvpe(command[0], command, {**os.environ, **env})  # noqa: S606 - it is the point


@app.command("train")
@friendly_errors
def train(
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Continue from the newest promoted adapter")
    ] = False,
    max_examples: Annotated[
        int | None, typer.Option("--max-examples", help="Train on the first N examples only")
    ] = None,
) -> None:
    """Fine-tune a new LoRA adapter on the current training set; it is recorded as a candidate."""
    from retrain.trainers import lora  # torch and friends: only when training

    core = get_core()
    snapshot = snapshot_for(core)
    with progress() as bar:
        task = bar.add_task(f"training a LoRA adapter on {core.settings.vllm.base_model}")
        version = asyncio.run(
            lora.train(
                core,
                snapshot,
                incremental=incremental,
                max_examples=max_examples,
                on_step=lambda step, steps: bar.update(task, completed=step, total=steps),
            )
        )
    console.print(describe(version))
    console.print(version.note)


@app.command("promote")
@friendly_errors
def promote(
    version_id: Annotated[int, typer.Argument(help="The LoRA model version to make active")],
    force: Annotated[
        bool, typer.Option("--force", help="Override the holdout gate (recorded on the version)")
    ] = False,
) -> None:
    """Load the adapter into the running server, check it on canary reviews, and make it active
    if the holdout gate lets it in (as `waimai models promote` does)."""
    core = get_core()
    with errors.status(f"judging version {version_id} on the holdout"):
        promoted = asyncio.run(core.gate.promote(version_id, by="cli", force=force))
    console.print(describe(promoted))


@app.command("load")
@friendly_errors
def load() -> None:
    """After a server restart: load the active and the previous adapters again."""
    loaded = asyncio.run(promotion.ensure_serving(get_core()))
    console.print(f"loaded: {', '.join(loaded)}" if loaded else "nothing to load")


@app.command("status")
@friendly_errors
def status() -> None:
    """Is the server up, and does it serve the adapters it should?"""
    core = get_core()
    vllm_server = promotion.server(core.settings.vllm)
    try:
        listed = asyncio.run(vllm_server.models())
    except BackendError as error:
        errors.print(f"[red]down[/red]: {error}")
        raise typer.Exit(1) from None
    console.print(f"vLLM at {vllm_server.base_url} serves: {', '.join(listed)}")
    serving = asyncio.run(promotion.serving_versions(core))
    missing = [v.model_ref for v in serving if v.model_ref not in listed]
    if missing:
        errors.print(f"[red]missing[/red]: {', '.join(missing)} (run `waimai vllm load`)")
        raise typer.Exit(1)
