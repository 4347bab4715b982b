"""The record every dataset reader produces, and the reader registry."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from agekit.crop import five_points
from agekit.registry import Registry

# Folder names under $AGEKIT_DATA (default ../shared/data) when no dataset root is given.
DEFAULT_FOLDERS = {"utkface": "UTKFace", "fgnet": "FGNET", "afad": "AFAD", "morph": "MORPH",
                   "imdb_wiki": "IMDB-WIKI", "appa_real": "APPA-REAL", "chalearn_lap": "ChaLearn",
                   "cacd": "CACD2000", "agedb": "AgeDB", "aaf": "AAF"}
MALE, FEMALE = 0, 1  # gender codes used everywhere in agekit (UTKFace's convention)
AGE_VALID_RANGE = (0.0, 120.0)  # a label outside this is a data error, not an old person


@dataclass
class FaceRecord:
    """One labelled face image.

    path: absolute image path. key: stable name used by split files (relative to the dataset root).
    age: real (or apparent-mean) age in years. age_std: apparent-age std where the dataset gives it.
    gender: MALE/FEMALE or None. subject: person id where known. race: dataset's race code or None.
    landmarks: (N, 2) float array in image pixels (68 or 5 points) or None, in `landmark_layout`
    ("ibug68", "fgnet68"; None = 5 points or iBUG 68). face_points() gives the 5 points crops use.
    box: (x1, y1, x2, y2) face box in image pixels or None.
    """

    path: str
    key: str
    age: float
    dataset: str
    gender: Optional[int] = None
    subject: Optional[str] = None
    race: Optional[int] = None
    age_std: Optional[float] = None
    landmarks: Optional[np.ndarray] = field(default=None, repr=False)
    box: Optional[tuple] = None
    landmark_layout: Optional[str] = None

    def face_points(self) -> Optional[np.ndarray]:
        """The (5, 2) alignment points (eyes, nose tip, mouth corners), or None without landmarks."""
        if self.landmarks is None:
            return None

        return five_points(self.landmarks, self.landmark_layout)


@dataclass
class ReadResult:
    """Records a reader produced plus the entries it skipped, each with a reason."""

    records: list
    skipped: list = field(default_factory=list)  # [(path_or_entry, reason)]


# name -> reader(root, **options) -> ReadResult; agekit.data.readers registers the built-in ones
READERS = Registry("dataset", fill="agekit.data.readers")


def register_reader(name: str):
    """Decorator adding a dataset reader under `name`."""
    return READERS.register(name)


def default_root(dataset: str):
    """$AGEKIT_DATA (default ../shared/data) / the dataset's usual folder name."""

    return Path(os.environ.get("AGEKIT_DATA", "../shared/data")) / DEFAULT_FOLDERS.get(dataset, dataset)


def read_dataset(name: str, root, **kwargs) -> ReadResult:
    """Read dataset `name` from `root` into records. Unknown name or missing folder -> AgekitError."""
    return READERS.get(name)(root, **kwargs)
