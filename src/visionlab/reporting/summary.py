"""The run summary a student reads first: how to rerun it, how it went, where to look next.

One `RunSummary` renders twice from the same facts: a rich table in the terminal and `summary.md`
in the run directory, so the two never disagree.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from rich.console import Group
from rich.table import Table
from rich.text import Text

RUN_FACTS = ("status", "epochs", "steps", "seconds", "device")  # told in a sentence, not in the metrics table


def command_line() -> str:
    """The run as one command: `vl-train` plus its command-line overrides (none: the defaults)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return " ".join(["vl-train", *map(shlex.quote, overrides)])


def best_epoch(val_acc: dict[int, float]) -> tuple[int, float] | None:
    """(epoch, val/acc) of the best epoch by val/acc, the earliest on ties; None when there were no epochs."""
    if not val_acc:
        return None
    epoch = max(val_acc, key=lambda e: (val_acc[e], -e))
    return epoch, val_acc[epoch]


def _shown(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@dataclass
class RunSummary:
    command: str
    metrics: dict[str, Any]
    val_acc: dict[int, float]  # val/acc after each epoch
    image_tags: list[str]
    run_dir: Path
    layers: str = ""  # the model's "## Layers" section (reporting.layer_summary), empty when not measured

    def facts(self) -> list[str]:
        """The run in a few sentences, each one line."""
        m = self.metrics
        trained = (
            f" after {plural(m['epochs'], 'epoch')} ({plural(m.get('steps', 0), 'step')})" if m.get("epochs") else ""
        )  # kNN: none
        lines = [f"{m.get('status', 'unknown')}{trained} in {m.get('seconds', 0.0):.1f} s on {m.get('device', '?')}"]
        best = best_epoch(self.val_acc)
        if best is not None:
            last = max(self.val_acc)
            tested = m.get("tested_epoch", last)  # trainer.test_on=best: best.pt's epoch
            lines.append(
                f"best epoch by val/acc: {best[0]} of {last} (val/acc {best[1]:.4f})"
                + ("" if best[0] == tested else f"; the model tested, and test/…, are from epoch {tested}")
            )
        return lines

    def metric_rows(self) -> list[tuple[str, str]]:
        return [(key, _shown(value)) for key, value in self.metrics.items() if key not in RUN_FACTS]

    def markdown(self) -> str:
        lines = ["# Run summary", "", "```", self.command, "```", ""]
        lines += [f"- {fact}" for fact in self.facts()]
        lines += [
            f"- run directory: `{self.run_dir}`",
            "",
            "## Final metrics",
            "",
            "| metric | value |",
            "| --- | --- |",
        ]
        lines += [f"| {key} | {value} |" for key, value in self.metric_rows()]
        if self.image_tags:
            lines += [
                "",
                "## Pictures in TensorBoard",
                "",
                f"`tensorboard --logdir {shlex.quote(str(self.run_dir))}`, then the Images tab:",
                "",
            ]
            lines += [f"- `{tag}`" for tag in self.image_tags]
        if self.layers:
            lines += ["", self.layers.rstrip("\n")]
        return "\n".join(lines) + "\n"

    def rich(self) -> Group:
        table = Table(title="final metrics", show_header=False, box=None, pad_edge=False)
        for key, value in self.metric_rows():
            table.add_row(key, value)
        parts = [Text(self.command, style="bold"), *(Text(fact) for fact in self.facts()), table]
        if self.image_tags:
            parts.append(Text(f"pictures in TensorBoard: {', '.join(self.image_tags)}"))
        parts.append(Text(f"summary: {self.run_dir / 'summary.md'}"))
        return Group(*parts)


def plural(count: int, noun: str) -> str:
    """1 epoch, 2 epochs, 1,170 steps."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
