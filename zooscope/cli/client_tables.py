"""Rich tables for `zooscope client`: the shapes of the API's answers, read defensively.

Report field names may differ slightly between service versions, so every lookup tolerates a
missing key and unknown aggregate entries are shown as they come.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

ITEM_COLUMNS = (
    ("checkpoint_id", "checkpoint"),
    ("original_accuracy", "orig. acc"),
    ("reconstructed_accuracy", "recon. acc"),
    ("agreement", "agreement"),
    ("structural_distance", "struct. dist"),
    ("behavioural_distance", "behav. dist"),
    ("reconstruction_id", "reconstruction"),
)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return f"[{len(value)} values]"
    return str(value)


def jobs_table(jobs: Iterable[dict[str, Any]]) -> Table:
    table = Table("id", "kind", "state", "progress", "created", "message / error")
    for job in jobs:
        progress = job.get("progress")
        table.add_row(
            str(job.get("id")),
            fmt(job.get("kind")),
            fmt(job.get("state")),
            f"{100 * progress:.0f}%" if isinstance(progress, int | float) else "-",
            fmt(job.get("created_at")),
            fmt(job.get("error") or job.get("message")),
        )
    return table


def checkpoints_table(checkpoints: Iterable[dict[str, Any]]) -> Table:
    table = Table("id", "name", "architecture", "parameters", "sha256", "created")
    for ckpt in checkpoints:
        table.add_row(
            str(ckpt.get("id")),
            fmt(ckpt.get("name")),
            fmt(ckpt.get("architecture")),
            fmt(ckpt.get("n_parameters")),
            str(ckpt.get("sha256") or "-")[:12],
            fmt(ckpt.get("created_at")),
        )
    return table


def mapping_table(title: str, mapping: dict[str, Any]) -> Table:
    table = Table("", "value", title=title)
    for key, value in mapping.items():
        table.add_row(key, fmt(value))
    return table


def generated_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """[{checkpoint_id, accuracy}] from the contract's `generated`, or generated_ids beside accuracies."""
    if isinstance(report.get("generated"), list):
        return report["generated"]
    ids = report.get("generated_ids") or []
    accuracies = report.get("accuracies") or []
    return [
        {"checkpoint_id": ids[i] if i < len(ids) else None, "accuracy": a} for i, a in enumerate(accuracies)
    ]


def _is_embedding_report(report: dict[str, Any]) -> bool:
    items = report.get("items")
    first = items[0] if isinstance(items, list) and items else None
    return isinstance(report.get("embeddings"), list) or (isinstance(first, dict) and "embedding" in first)


def _embedding_tables(report: dict[str, Any]) -> list[Table]:
    embeddings = report.get("embeddings") or report.get("items") or []
    first = embeddings[0] if embeddings else None
    vector = first.get("embedding") if isinstance(first, dict) else first
    width = report.get("dim") or (len(vector) if isinstance(vector, list) else 0)
    return [mapping_table("embeddings", {"count": len(embeddings), "width": width})]


def _generation_tables(report: dict[str, Any]) -> list[Table]:
    rows = generated_rows(report)
    table = Table("checkpoint", "accuracy", title="generated models")
    for item in rows:
        table.add_row(fmt(item.get("checkpoint_id")), fmt(item.get("accuracy")))
    tables = [table]
    if isinstance(report.get("accuracy"), dict):
        tables.append(mapping_table("generated accuracy", report["accuracy"]))
    anchors = report.get("anchors")
    if isinstance(anchors, dict):
        accs = [a for a in anchors.get("accuracies") or [] if isinstance(a, int | float)]
        summary = {k: v for k, v in anchors.items() if k != "accuracies"}
        if accs:
            summary["mean accuracy"] = sum(accs) / len(accs)
        tables.append(mapping_table("anchors", summary))
    diversity = report.get("diversity")
    if isinstance(diversity, dict):
        tables.append(mapping_table("diversity", diversity))
    return tables


def _reconstruction_tables(report: dict[str, Any]) -> list[Table]:
    tables = []
    if isinstance(report.get("aggregate"), dict):
        tables.append(mapping_table("aggregate", report["aggregate"]))
    table = Table(*(label for _, label in ITEM_COLUMNS), title="per checkpoint")
    for item in report.get("items") or []:
        table.add_row(*(fmt(item.get(key)) for key, _ in ITEM_COLUMNS))
    tables.append(table)
    return tables


def report_tables(report: dict[str, Any]) -> list[Table]:
    """Tables for the report's kind; a report of an unknown shape falls back to key/value."""
    if _is_embedding_report(report):
        return _embedding_tables(report)
    if isinstance(report.get("generated"), list) or isinstance(report.get("generated_ids"), list):
        return _generation_tables(report)
    if isinstance(report.get("items"), list) or isinstance(report.get("aggregate"), dict):
        return _reconstruction_tables(report)
    return [mapping_table("report", report)]
