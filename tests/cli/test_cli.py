"""The ``waimai`` command as a user runs it, on a fresh SQLite store in a temporary folder."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.config import get_settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("DATA__SOURCE", str(dataset))
    monkeypatch.setenv("DATA__DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOCAL__DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def waimai(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_the_whole_first_run(env: Path):
    assert waimai("db", "upgrade").exit_code == 0

    prepared = waimai("data", "prepare")
    assert prepared.exit_code == 0, prepared.output
    assert "8,390 / 3,597" in prepared.output
    assert (env / "data" / "train.jsonl").is_file()

    trained = waimai("train", "local")
    assert trained.exit_code == 0, trained.output
    assert "is active" in trained.output
    assert "already active" in waimai("train", "local", "--if-none-active").output

    evaluated = waimai("eval", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.output)
    assert figures["accuracy"] >= 0.905
    assert figures["n"] == 3597
    assert sum(map(sum, figures["confusion"]["matrix"])) == 3597

    classified = waimai("classify", "太难吃了，送得又慢", "好吃，还会再来")
    assert classified.exit_code == 0
    lines = classified.output.strip().splitlines()
    assert lines[0].startswith("差评") and lines[1].startswith("好评")

    typed = waimai("classify", input="超级好吃\n\n难吃死了\n")
    assert [line[:2] for line in typed.output.strip().splitlines()] == ["好评", "差评"]

    listed = waimai("models", "list")
    assert "active" in listed.output

    reported = waimai("models", "report", "--out", str(env / "report.png"))
    assert reported.exit_code == 0, reported.output
    assert (env / "report.png").read_bytes().startswith(b"\x89PNG")


def test_errors_are_one_clear_line_and_a_failing_exit_code(env: Path, tmp_path: Path):
    waimai("db", "upgrade")
    no_model = waimai("classify", "好吃")
    assert no_model.exit_code == 1
    assert "no_active_model" in no_model.output and "Traceback" not in no_model.output

    bad = tmp_path / "bad.csv"
    bad.write_text("label,text\n1,好\n")
    failed = waimai("data", "prepare", "--source", str(bad))
    assert failed.exit_code == 1
    assert "missing column(s) review" in failed.output

    assert waimai("eval", "--model", "42").exit_code == 1
    assert "does not exist" in waimai("models", "promote", "42").output
