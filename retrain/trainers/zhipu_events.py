"""The events of a Zhipu fine-tune job: the loss curves they carry, and a line to show.

Zhipu lists a job's events newest first, a page at a time (``after`` goes to older ones). Each
look reads only the events that came since the previous one, so the curves grow while the job
trains and are complete when it ends, whatever Zhipu keeps afterwards. A metrics event's data
has ``current_steps``, ``epoch``, ``loss`` and, when a validation file was given, ``eval_loss``
(the SDK's ``Metric``); Zhipu's console draws the same two curves.
"""

from __future__ import annotations

from typing import Any

PAGE_SIZE = 100
MAX_PAGES = 100
"""Ten thousand events between two looks is more than a job logs (a look is made every
ZHIPU__POLL_INTERVAL_S); older ones are left unread rather than paged through for ever."""


def events_since(client: Any, job_id: str, newest_read: str | None) -> list[Any]:
    """The job's events after the one with id ``newest_read`` (all, without it), oldest first."""
    found: list[Any] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        page = client.fine_tuning.jobs.list_events(
            job_id, limit=PAGE_SIZE, **({"after": after} if after else {})
        )
        for event in page.data:
            if newest_read is not None and event.id == newest_read:
                return found[::-1]
            found.append(event)
        if not page.has_more or not page.data:
            break
        after = page.data[-1].id
    return found[::-1]


def with_losses(curves: dict[str, Any], events: list[Any]) -> dict[str, Any]:
    """``curves`` (``{"train": [...], "validation": [...]}``, points ``{"step", "epoch",
    "loss"}`` by step) with the losses the metrics ``events`` report."""
    points: dict[str, dict[int, dict[str, Any]]] = {
        kind: {point["step"]: point for point in curves.get(kind, [])}
        for kind in ("train", "validation")
    }
    for event in events:
        data = event.data
        step = _number(data.current_steps) if data is not None else None
        if data is None or step is None:
            continue
        epoch = _number(data.epoch)
        for kind, loss in (("train", _number(data.loss)), ("validation", _number(data.eval_loss))):
            if loss is not None:
                points[kind][int(step)] = {"step": int(step), "epoch": epoch, "loss": loss}
    return {kind: [by_step[s] for s in sorted(by_step)] for kind, by_step in points.items()}


def describe(event: Any) -> str:
    data = event.data
    if data is not None and data.loss is not None:
        return f"{event.message} (epoch {data.epoch}, loss {data.loss})"
    return str(event.message or event.type or "")


def _number(value: Any) -> float | None:
    """A metric as a float: Zhipu sends them as numbers or as strings."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
