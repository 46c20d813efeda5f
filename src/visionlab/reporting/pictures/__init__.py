"""The run's pictures in TensorBoard, one module per picture (docs/pictures.md, "How to add a picture").

`picture.py`: what a picture is (`Picture`, its hooks) and what it is told (`Subject`, `Evaluation`);
`log.py`: the `logging` group's list (`PictureList`) and the composite that draws it (`PictureLog`);
`mistake_finder.py`: the mistakes the pictures share. Every other module is one picture, listed by
conf/logging/default.yaml.
"""

from visionlab.reporting.pictures.log import PictureList, PictureLog
from visionlab.reporting.pictures.picture import Evaluation, Picture, Subject

__all__ = ["Evaluation", "Picture", "PictureList", "PictureLog", "Subject"]
