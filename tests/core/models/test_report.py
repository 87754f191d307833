import io

from matplotlib.image import imread

from core.models.report import render
from core.store.tables import ModelStatus, ModelVersion

FIGURES = {
    "accuracy": 0.91,
    "macro_f1": 0.90,
    "confusion": {"labels": ["negative", "positive"], "matrix": [[2200, 180], [140, 1077]]},
    "ece": 0.015,
    "reliability": [
        {"low": 0.5, "high": 0.6, "n": 200, "confidence": 0.55, "accuracy": 0.6},
        {"low": 0.9, "high": 1.0, "n": 3000, "confidence": 0.97, "accuracy": 0.96},
    ],
    "curves": {
        "train": [{"step": s, "epoch": s / 10, "loss": 1 / (s + 1)} for s in range(1, 30)],
        "validation": [{"step": 10 * e, "epoch": e, "loss": 0.2 / e} for e in (1, 2)],
    },
}


def picture(version: ModelVersion, versions: list[ModelVersion]):
    png = render(version, versions)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(png))


def test_a_version_with_every_figure_is_drawn_in_four_panels():
    history = [
        ModelVersion(
            id=1,
            backend="local",
            model_ref="a",
            status=ModelStatus.RETIRED,
            metrics={"accuracy": 0.88, "macro_f1": 0.86},
        ),
        ModelVersion(
            id=2,
            backend="local",
            model_ref="b",
            status=ModelStatus.REJECTED,
            metrics={"accuracy": 0.80, "macro_f1": 0.79},
        ),
    ]
    version = ModelVersion(
        id=3, backend="vllm", model_ref="c", status=ModelStatus.ACTIVE, metrics=FIGURES
    )
    image = picture(version, [*history, version])
    assert image.shape[:2] == (900, 1200)
    blank = picture(ModelVersion(id=4, backend="local", model_ref="d", metrics={}), [])
    assert image.std() > blank.std()  # curves, bars and counts draw more than four notes do


def test_a_version_without_figures_still_gets_a_report():
    version = ModelVersion(id=1, backend="zhipu", model_ref="glm-4-flash", metrics={})
    assert picture(version, [version]).shape[:2] == (900, 1200)
