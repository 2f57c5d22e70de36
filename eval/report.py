"""What an evaluation leaves behind: a result table and a JSON with every number and the exact settings.

A model whose weights did not all load (evaluated with ``--allow-incomplete-weights``) is flagged in the
table title, its caption and the JSON (``"weights_complete": false``), so such numbers cannot pass unnoticed.
"""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.table import Table

from eval.models import EvalModel
from eval.runner import EvalResult

INCOMPLETE_BANNER = "INCOMPLETE WEIGHTS — not a valid result"


@dataclass
class EvalReport:
    """One benchmark run: ``benchmark`` name, the model, the benchmark's settings and its result."""

    benchmark: str
    model: EvalModel
    settings: dict[str, Any]
    result: EvalResult

    def model_info(self) -> dict[str, Any]:
        info = self.model.info()
        spec = getattr(self.model.predictor, "spec", None)
        if spec is not None and is_dataclass(spec):
            info["input"] = asdict(spec)
        return info

    def table(self) -> Table:
        title = f"{self.benchmark} — {self.model.source}"
        if not self.model.complete:
            title = f"[bold red]{INCOMPLETE_BANNER}[/] {title}"
        counts = ", ".join(f"{n} {name}" for name, n in self.result.counts.items())
        caption = counts if self.model.complete else f"{counts}\n[bold red]{self.model.load_summary}[/]"
        table = Table(title=title, caption=caption)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in self.result.rows:
            table.add_row(name, _format(value))
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "metrics": {k: _json_number(v) for k, v in self.result.metrics.items()},
            "counts": self.result.counts,
            "per_category": {k: _json_number(v) for k, v in self.result.per_category.items()},
            "model": self.model_info(),
            "settings": self.settings,
            "weights_complete": self.model.complete,
            "warning": None if self.model.complete else f"{INCOMPLETE_BANNER}: {self.model.load_summary}",
            "environment": {"gleekit": version("gleekit"), "torch": version("torch"), "python": platform.python_version()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _format(value: float | int) -> str:
    """Counts as they are; scores in percent with one decimal, as the papers print them."""
    if isinstance(value, int):
        return str(value)
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _json_number(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value
