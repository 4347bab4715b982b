"""One reader per public age dataset, each taking the dataset exactly as its authors distribute it.

Every reader lists files and parses labels only (no image is decoded), returns records sorted by key,
and puts each entry it cannot use into ReadResult.skipped with a reason instead of failing.
Conventions shared by all readers: gender 0 = male, 1 = female; race uses UTKFace's integer codes
(RACE_NAMES) so that race counts mean the same thing across datasets.

Modules: common (conventions, the record builder, label-file helpers), named (datasets whose labels are in
the file names: UTKFace, FG-NET, AFAD, MORPH, CACD, AgeDB, AAF), tables (datasets with label files:
IMDB-WIKI, APPA-REAL, ChaLearn LAP, a user's CSV), identify (which dataset a folder holds).
"""
from agekit.data.readers import named, tables  # noqa: F401  (registration)
from agekit.data.readers.common import IMAGE_EXTENSIONS, RACE_NAMES, list_datasets
from agekit.data.readers.identify import detect_dataset
from agekit.data.readers.named import read_pts

__all__ = ["IMAGE_EXTENSIONS", "RACE_NAMES", "detect_dataset", "list_datasets", "read_pts"]
