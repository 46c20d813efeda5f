"""Classical image features (HOG, colour histograms) that a linear model, an MLP or kNN can use instead of pixels."""

from visionlab.features.base import Features
from visionlab.features.splits import FeatureSplits

__all__ = ["Features", "FeatureSplits"]
