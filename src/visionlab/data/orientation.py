"""Photos the right way up: the EXIF orientation tag (1 to 8) read and applied
as Pillow's `ImageOps.exif_transpose` does.

A phone stores a portrait photo as a landscape one and says so in EXIF tag 0x0112; every viewer
turns it upright, so a model must too, in training, `vl-eval` and `vl-predict` alike. JPEGs that
simplejpeg decodes have their tag read here from the APP1 segment's first IFD (a few microseconds;
opening the file with Pillow to ask would cost more than decoding it). Pillow reads the others'.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

TAG = 0x0112
TRANSPOSED = (5, 6, 7, 8)  # orientations whose upright image has the stored one's height and width swapped
EXIF = b"Exif\x00\x00"
SOS, EOI = 0xDA, 0xD9  # markers after which no more metadata segments come


def turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(height, width) of a stored image once upright."""
    return (size[1], size[0]) if orientation in TRANSPOSED else size


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`[H, W]` or `[H, W, C]` pixels as `ImageOps.exif_transpose` turns them
    (a view; 1 or an unknown value: unchanged)."""
    if orientation in TRANSPOSED:
        pixels = pixels.swapaxes(0, 1)  # 5 (transpose); the others are it and a flip
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    return pixels


def of_image(image: Image.Image) -> int:
    """The orientation Pillow reads from an opened image's EXIF (1 when it has none, or none that can be read)."""
    try:
        return int(image.getexif().get(TAG, 1))
    except Exception:  # a broken EXIF block leaves the pixels readable: treat it as no tag, as a viewer does
        return 1


def of_jpeg(data: bytes) -> int:
    """The orientation in a JPEG's first APP1 Exif segment, as Pillow finds it;
    1 when there is none or it cannot be read."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return 1
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (SOS, EOI):
            return 1
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and segment.startswith(EXIF):
            return _ifd0_orientation(segment[len(EXIF) :])
        position += 2 + length
    return 1


def _ifd0_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of a TIFF block's first IFD: a SHORT (or a LONG), its value in the entry itself."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind = struct.unpack_from(order + "HH", tiff, entry)
            if tag == TAG:
                return struct.unpack_from(order + {3: "H", 4: "I"}[kind], tiff, entry + 8)[0]
    except (KeyError, struct.error):
        pass
    return 1
