"""The bag of visual words' codebook as a picture: each word de-whitened back into a patch of pixels.

k-means learns the words in whitened space, where every direction has unit variance; multiplied
by the inverse whitening and shifted by the patches' mean, a word is a normalized patch again, and
stretched to [0, 1] on its own it shows the edge, bar or colour blob it stands for.
"""

from __future__ import annotations

import torch

from visionlab.features.bow import BagOfWords
from visionlab.reporting import visuals

SHOWN = 256  # words drawn, most frequent first: all 1,600 would make a picture 3,900 pixels wide
PER_ROW = 16


def word_patches(bow: BagOfWords) -> torch.Tensor:
    """Every word as the normalized patch it matches best, `[words, C, p, p]` on the CPU (the codebook's order)."""
    patches = bow.codebook.cpu() @ bow.unwhitening.cpu() + bow.mean.cpu()
    return patches.view(bow.words, -1, bow.patch_size, bow.patch_size)


def codebook_picture(bow: BagOfWords, shown: int = SHOWN) -> torch.Tensor:
    """uint8 `[3, H, W]`: the `shown` most frequent words (by training patches nearest them), most frequent first."""
    order = bow.counts.cpu().argsort(descending=True, stable=True)[:shown]
    tiles = visuals.rescaled(word_patches(bow)[order])
    whitened = "de-whitened, " if bow.whiten else ""
    title = (
        f"bag of words: the {len(order)} most frequent of {bow.words} words, {bow.patch_size}x{bow.patch_size} patches "
        f"({whitened}each stretched to full contrast), most frequent first"
    )
    return visuals.picture(tiles, PER_ROW, title=title)
