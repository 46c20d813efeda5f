"""The model layer by layer: each layer's output shape, parameters and FLOPs per image, and the totals.

One forward pass of a single image, in eval mode and without gradients, under torch's own
`FlopCounterMode`, which counts the FLOPs of every module it passes through (2 per multiply-add,
as torch counts them: matrix products and convolutions; additions, activations, normalization and
pooling count 0). Forward hooks on the leaf modules (those without children) record the output
shapes. What no leaf holds, a parameter of a parent module or a matrix product written in a
`forward()`, is one "outside the layers" row, so the rows always add up to the totals.

FlopCounterMode's first use would import torch._dynamo, which takes seconds and which a run that compiles
nothing does not need: it counts under patches.eager_without_dynamo, as the run trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from visionlab import patches
from visionlab.reporting.saliency import evaluating

log = logging.getLogger("visionlab")

OUTSIDE = "(outside the layers)"


@dataclass
class Layer:
    name: str  # the module's path in the model, as in state_dict keys: "features.0"
    kind: str  # its class: "Conv2d"
    shape: tuple[int, ...] | None  # its output for one image, batch dimension left out; None: not run
    params: int
    flops: int  # per image, forward


@dataclass
class LayerTable:
    model: str  # the model's class name
    in_shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)
    params: int = 0  # every parameter of the model
    trainable: int = 0
    flops: int = 0  # FlopCounterMode's total for one image
    note: str = ""  # why there is no table (a model without layers)

    def lines(self) -> list[tuple[str, str, str, str, str]]:
        """The table's cells: a header, one row per layer, the totals."""
        rows = [("layer", "type", "output shape", "parameters", "FLOPs per image")]
        rows += [
            (layer.name, layer.kind, shape_text(layer.shape), f"{layer.params:,}", f"{layer.flops:,}")
            for layer in self.layers
        ]
        rows.append(("total", "", "", f"{self.params:,}", f"{self.flops:,}"))
        return rows

    def headline(self) -> str:
        if self.note:
            return f"{self.model}: {self.note}"
        frozen = f" ({self.params - self.trainable:,} frozen)" if self.trainable != self.params else ""
        return (
            f"{self.model} on {shape_text(self.in_shape)} images: {len(self.layers)} layers, "
            f"{self.params:,} parameters{frozen}, "
            f"{self.flops:,} FLOPs per image forward ({human(self.flops)}FLOPs; 2 per multiply-add)"
        )

    def text(self) -> str:
        """Fixed-width columns, for the log."""
        if self.note:
            return self.headline()
        rows = self.lines()
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        right = (False, False, False, True, True)
        out = [self.headline()]
        for row in rows:
            out.append(
                "  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)).rstrip()
            )
        return "\n".join(out)

    def markdown(self) -> str:
        """A `## Layers` section, for summary.md."""
        out = ["## Layers", "", self.headline()]
        if not self.note:
            header, *rows, total = self.lines()
            out += ["", "| " + " | ".join(header) + " |", "| --- | --- | --- | ---: | ---: |"]
            out += ["| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |" for row in rows]
            out.append("| " + " | ".join(f"**{cell}**" if cell else "" for cell in total) + " |")
        return "\n".join(out) + "\n"


def shape_text(shape: tuple[int, ...] | None) -> str:
    return "not run" if shape is None else "x".join(map(str, shape))


def human(count: float) -> str:
    """40367872 -> "40.4 M"; the unit prefix that keeps 1-3 digits before the point."""
    for prefix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {prefix}"
    return f"{count:g} "


def layer_table(model: nn.Module, in_shape: tuple[int, ...]) -> LayerTable:
    """Measure `model` on one all-zeros image of `in_shape`; the model's mode and weights are left as they were."""
    table = LayerTable(type(model).__name__, tuple(in_shape))
    parameters = list(model.parameters())
    if not parameters:
        table.note = "no layers: it has no parameters (a kNN compares each image with the training images it memorized)"
        return table
    # imported here: it loads sympy and friends, for runs that train
    from torch.utils.flop_counter import FlopCounterMode

    leaves = [(name, module) for name, module in model.named_modules() if name and not any(module.children())]
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def hook(module, inputs, output):
            first = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(first, torch.Tensor):
                shapes[name] = tuple(first.shape[1:])

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in leaves]
    example = torch.zeros(1, *in_shape, device=parameters[0].device)
    try:
        with (
            patches.eager_without_dynamo(),
            evaluating(model),
            torch.no_grad(),
            FlopCounterMode(display=False) as counter,
        ):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def flops_of(name: str) -> int:
        return int(sum(counts.get(f"{root}.{name}", {}).values()))

    for name, module in leaves:
        own = sum(p.numel() for p in module.parameters(recurse=False))
        table.layers.append(Layer(name, type(module).__name__, shapes.get(name), own, flops_of(name)))
    table.params = sum(p.numel() for p in parameters)
    table.trainable = sum(p.numel() for p in parameters if p.requires_grad)
    table.flops = int(counter.get_total_flops())
    outside_params = table.params - sum(layer.params for layer in table.layers)
    outside_flops = table.flops - sum(layer.flops for layer in table.layers)
    if outside_params or outside_flops:
        table.layers.append(Layer(OUTSIDE, "", None, outside_params, outside_flops))
    return table


def report_layers(model: nn.Module, in_shape: tuple[int, ...], run_dir: Path, command: str) -> LayerTable:
    """At the start of a run: the table in the log, and summary.md holding it until the run's end writes the full
    summary.

    `command` is the run's command line (`reporting.summary.command_line()`), so the early
    summary.md says how to get it again.
    """
    table = layer_table(model, in_shape)
    log.info("model: %s (layer by layer: train.log and summary.md)", table.headline())
    log.info("layers: %s", table.text(), extra={"file_only": True})  # the terminal keeps the one line
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.md").write_text(
        "\n".join(
            [
                "# Run summary",
                "",
                "```",
                command,
                "```",
                "",
                "The run has not finished (or was only asked for this summary).",
                "",
                table.markdown(),
            ]
        )
    )
    return table
