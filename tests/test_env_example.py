"""`.env.example` documents every setting, and only real ones."""

from pathlib import Path

from pydantic import BaseModel

from core.config import Settings

REPO = Path(__file__).resolve().parent.parent


def setting_names(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def documented_names() -> set[str]:
    names = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.removeprefix("# ").strip()
        if "=" in line and line.split("=", 1)[0].replace("_", "").isalnum():
            names.add(line.split("=", 1)[0])
    return names


def test_every_setting_is_documented_and_nothing_else():
    assert documented_names() == setting_names(Settings)


def test_the_example_file_loads_as_it_is():
    settings = Settings(_env_file=REPO / ".env.example")
    assert settings.serving.fallbacks == ["local"]
