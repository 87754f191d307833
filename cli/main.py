"""The ``waimai`` command."""

from __future__ import annotations

import typer

from cli import bot, data, db, finetune, keys, labels, models, train, vllm
from cli.api import api_command
from cli.classify import classify_command
from cli.evaluate import eval_command
from cli.serve import serve_command
from cli.worker import retrain_command, worker_command

app = typer.Typer(
    help="The waimai review loop: classify takeaway reviews as 好评/差评, learn from corrections.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.add_typer(db.app, name="db")
app.add_typer(finetune.app, name="finetune")
app.add_typer(keys.app, name="keys")
app.add_typer(bot.app, name="bot")
app.add_typer(labels.app, name="labels")
app.add_typer(vllm.app, name="vllm")
app.command("eval")(eval_command)
app.command("classify")(classify_command)
app.command("api")(api_command)
app.command("serve")(serve_command)
app.command("worker")(worker_command)
app.command("retrain")(retrain_command)
