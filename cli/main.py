"""The ``waimai`` command."""

from __future__ import annotations

import typer

from cli import data, db, models, train
from cli.classify import classify_command
from cli.evaluate import eval_command

app = typer.Typer(
    help="The waimai review loop: classify takeaway reviews as 好评/差评, learn from corrections.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.add_typer(db.app, name="db")
app.command("eval")(eval_command)
app.command("classify")(classify_command)
