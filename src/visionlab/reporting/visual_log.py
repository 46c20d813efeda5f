"""What the pictures were configured by before reporting/pictures/: kept so that what names it still builds.

A checkpoint stored before names `_target_: visionlab.reporting.visual_log.VisualSettings` in its
config, with that time's settings under `logging` and no list of pictures; `resume=` and `vl-eval`
rebuild that config (trust.RETIRED_TARGETS lets the name through). It builds the pictures such a run
drew, with its settings.
"""

from __future__ import annotations

from typing import Any

from visionlab.reporting.pictures.log import PictureList

__all__ = ["PICTURES_THEN", "VisualSettings"]

# The pictures a run drew when conf/logging/ named VisualSettings, in the order it drew them.
PICTURES_THEN = {
    name: {"_target_": f"visionlab.reporting.pictures.{name}.{kind}"}
    for name, kind in (
        ("data_preview", "DataPreview"),
        ("feature_preview", "FeaturePreview"),
        ("graph", "Graph"),
        ("confusion", "Confusion"),
        ("saliency", "Saliency"),
        ("mistakes", "Mistakes"),
        ("first_layer", "FirstLayer"),
        ("histograms", "Histograms"),
        ("embedding", "Embedding"),
        ("neighbours", "Neighbours"),
    )
}


class VisualSettings(PictureList):
    """A stored `logging` node of then: its settings (data_preview, confusion_every_n_epochs, ...) alone."""

    def __init__(self, **settings: Any):
        super().__init__(pictures=PICTURES_THEN, **settings)
