"""Seeing inside the network, as a run delivers it: the layer table, the saliency picture and the embedding."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_cli


def what_the_run_shows(run_dir) -> tuple:
    """The test saliency picture's size (3 tiles per image with Grad-CAM, 2 without)
    and the embedding's rows and columns."""
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    (saliency,) = events.Images("test/saliency")
    tensors = next(run_dir.glob("**/tensors.tsv")).read_text().splitlines()
    return (saliency.width, saliency.height), len(tensors), len(tensors[0].split("\t"))


@pytest.mark.slow
def test_a_cnn_run_has_its_layer_table_saliency_picture_and_embedding_compiled_or_not(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "model=cnn", "trainer.epochs=1", "logging.embedding_points=50"]
    result = run_cli(args, run_dir)
    assert result.returncode == 0, result.stderr
    summary = (run_dir / "summary.md").read_text()
    assert "## Layers" in summary and "Conv2d" in summary and "98,554" in summary  # the default CNN's parameters
    metadata = next(run_dir.glob("**/metadata.tsv")).read_text().splitlines()
    assert len(metadata) == 51, "a header and 50 evenly spaced test images"
    shown = what_the_run_shows(run_dir)
    assert shown[1:] == (50, 128), "50 rows of the penultimate layer: the 128-unit hidden layer's output"
    # torch.compile leaves hooks put on after compiling out of its graph: the recorders must still see the model
    compiled = run_cli([*args, "trainer.compile=true"], tmp_path / "compiled")
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    assert what_the_run_shows(tmp_path / "compiled") == shown, (
        "the same saliency and Grad-CAM picture, 50 rows of the same features"
    )


def test_summary_only_shows_the_table_and_trains_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "model=mlp", "summary_only=true"], run_dir)
    assert result.returncode == 0, result.stderr
    assert "Linear" in (run_dir / "summary.md").read_text()
    assert not any((run_dir / name).exists() for name in ("metrics.json", "last.pt"))
