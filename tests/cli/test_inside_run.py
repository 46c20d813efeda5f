"""Seeing inside the network, as a run delivers it: the layer table, the saliency picture and the embedding."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_cli


def test_a_cnn_run_has_its_layer_table_saliency_picture_and_embedding(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "model=cnn", "trainer.epochs=1", "logging.embedding_points=50"], run_dir)
    assert result.returncode == 0, result.stderr
    summary = (run_dir / "summary.md").read_text()
    assert "## Layers" in summary and "Conv2d" in summary and "98,554" in summary  # the default CNN's parameters
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "test/saliency" in events.Tags()["images"]
    metadata = next(run_dir.glob("**/metadata.tsv")).read_text().splitlines()
    tensors = next(run_dir.glob("**/tensors.tsv")).read_text().splitlines()
    assert len(metadata) == 51 and len(tensors) == 50, "a header and 50 evenly spaced test images"
    assert len(tensors[0].split("\t")) == 128, "the penultimate layer: the 128-unit hidden layer's output"


@pytest.mark.slow
def test_a_compiled_model_shows_the_same_pictures_and_embedding(tmp_path):
    """torch.compile leaves hooks put on after compiling out of its graph: the recorders must still see the model."""
    seen = {}
    for compiled in ("false", "true"):
        run_dir = tmp_path / f"compile-{compiled}"
        result = run_cli([*TINY, "model=cnn", "trainer.epochs=1", "logging.embedding_points=50", f"trainer.compile={compiled}"], run_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
        events.Reload()
        (saliency,) = events.Images("test/saliency")
        tensors = next(run_dir.glob("**/tensors.tsv")).read_text().splitlines()
        seen[compiled] = (saliency.width, saliency.height), len(tensors), len(tensors[0].split("\t"))
    assert seen["true"] == seen["false"], "the same saliency and Grad-CAM picture, 50 rows of the same features"
    assert seen["true"][1:] == (50, 128)


def test_summary_only_shows_the_table_and_trains_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "model=mlp", "summary_only=true"], run_dir)
    assert result.returncode == 0, result.stderr
    assert "Linear" in (run_dir / "summary.md").read_text()
    assert not any((run_dir / name).exists() for name in ("metrics.json", "last.pt"))
