"""A model version's report as one picture: training curves, the holdout figures of every
version with the gate's decisions, the confusion matrix and the reliability diagram.

Drawn from what the store keeps on each version (``ModelVersion.metrics``); a panel whose
figures a version lacks says so instead (the CPU model trains in one pass: no curves).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.models.registry import ModelVersions
from core.store.tables import ModelStatus, ModelVersion, saved_id

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PROMOTED = (ModelStatus.ACTIVE, ModelStatus.RETIRED)
COLOURS = {"train": "#1f77b4", "validation": "#ff7f0e", "accuracy": "#2ca02c", "f1": "#9467bd"}


class Reports:
    """Model reports for front doors: the picture of one version among all of them."""

    def __init__(self, versions: ModelVersions) -> None:
        self._versions = versions

    async def png(self, version_id: int | None = None) -> bytes:
        """The report of ``version_id`` (default: the active version) as a PNG."""
        version = await (
            self._versions.get(version_id) if version_id is not None else self._versions.active()
        )
        every = await self._versions.all()
        return await asyncio.to_thread(render, version, every)


def render(version: ModelVersion, versions: Sequence[ModelVersion]) -> bytes:
    """The report of ``version``, beside ``versions`` (all of them, any order), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 9), dpi=100, layout="constrained")
    curves, history, confusion, calibration = figure.subplots(2, 2).flat
    figure.suptitle(_title(version), fontsize=14)
    _curves(curves, version.metrics.get("curves"))
    _history(history, version, versions)
    _confusion(confusion, version.metrics.get("confusion"))
    _reliability(calibration, version.metrics.get("reliability"), version.metrics.get("ece"))
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _title(version: ModelVersion) -> str:
    figures = version.metrics
    parts = [f"model version {version.id}: {version.backend} {version.model_ref}"]
    status = str(version.status)
    if version.promoted_at is not None:
        status += f", promoted {version.promoted_at:%Y-%m-%d %H:%M} UTC"
    parts.append(status)
    if "accuracy" in figures:
        parts.append(
            f"holdout accuracy {figures['accuracy']:.4f}, macro-F1 {figures.get('macro_f1', 0):.4f}"
        )
    return "\n".join(parts)


def _nothing(axes: Axes, title: str, why: str) -> None:
    axes.set_title(title)
    axes.text(0.5, 0.5, why, ha="center", va="center", wrap=True, color="#666666")
    axes.set_xticks([])
    axes.set_yticks([])


def _curves(axes: Axes, curves: dict[str, list[dict[str, Any]]] | None) -> None:
    title = "training loss"
    if not curves or not any(curves.values()):
        _nothing(
            axes, title, "no training curves for this version\n(the CPU model trains in one pass)"
        )
        return
    for name in ("train", "validation"):
        points = curves.get(name) or []
        if points:
            steps = [p["step"] for p in points]
            losses = [p["loss"] for p in points]
            style = "-" if name == "train" else "o-"
            axes.plot(steps, losses, style, label=name, color=COLOURS[name], markersize=4)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()


def _history(axes: Axes, version: ModelVersion, versions: Sequence[ModelVersion]) -> None:
    from matplotlib.ticker import MaxNLocator

    title = "holdout figures of every version"
    judged = sorted((v for v in versions if "accuracy" in v.metrics), key=saved_id)
    if not judged:
        _nothing(axes, title, "no version has holdout figures yet")
        return
    promoted = [v for v in judged if v.status in PROMOTED]
    ids = [saved_id(v) for v in promoted]
    axes.plot(ids, [v.metrics["accuracy"] for v in promoted], "-", color=COLOURS["accuracy"],
              label="accuracy (promoted)", alpha=0.6)  # fmt: skip
    axes.plot(ids, [v.metrics.get("macro_f1", float("nan")) for v in promoted], "--",
              color=COLOURS["f1"], label="macro-F1 (promoted)", alpha=0.6)  # fmt: skip
    for status, marker, colour, name in (
        (PROMOTED, "o", "#2ca02c", "promoted"),
        ((ModelStatus.REJECTED,), "x", "#d62728", "rejected"),
        ((ModelStatus.CANDIDATE,), "s", "#7f7f7f", "candidate"),
    ):
        chosen = [v for v in judged if v.status in status]
        if chosen:
            axes.scatter(
                [saved_id(v) for v in chosen],
                [v.metrics["accuracy"] for v in chosen],
                marker=marker,
                color=colour,
                label=name,
                zorder=3,
                s=50,
            )
    if "accuracy" in version.metrics:
        axes.scatter(
            [saved_id(version)],
            [version.metrics["accuracy"]],
            s=250,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            label="this version",
            zorder=4,
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.set_xlabel("model version")
    axes.set_ylabel("on the frozen holdout")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def _confusion(axes: Axes, confusion: dict[str, Any] | None) -> None:
    title = "confusion matrix (holdout)"
    if not confusion:
        _nothing(axes, title, "not evaluated on the holdout")
        return
    matrix = confusion["matrix"]
    names = confusion.get("labels", ["negative", "positive"])
    axes.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axes.text(j, i, f"{count:,}", ha="center", va="center", color=colour, fontsize=13)
    axes.set_xticks(range(len(names)), names)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)


def _reliability(axes: Axes, bins: list[dict[str, float]] | None, ece: float | None) -> None:
    title = "reliability (calibration)"
    if not bins:
        _nothing(axes, title, "no confidences to calibrate\n(the backend gives none)")
        return
    width = bins[0]["high"] - bins[0]["low"]
    axes.bar(
        [b["low"] for b in bins],
        [b["accuracy"] for b in bins],
        width=width,
        align="edge",
        edgecolor="black",
        color="#aec7e8",
        label="accuracy in bin",
    )
    axes.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o",
        color="#1f77b4",
        label="mean confidence",
    )
    axes.plot([0, 1], [0, 1], "--", color="#999999", label="perfectly calibrated")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(title + ("" if ece is None else f": ECE {ece:.4f}"))
    axes.legend(fontsize=8, loc="upper left")
