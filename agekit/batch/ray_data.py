"""Ray Data: photos -> per-face rows -> Parquet, over every CPU of a Ray cluster (or of this machine).

    import ray
    from agekit.batch.ray_data import predict_dataset
    ray.init()                                  # or ray.init(address="auto") on a cluster
    predict_dataset("photos/", "ages.parquet", concurrency=8)

The pipeline is Ray's own: `from_items` (or `read_csv` / `read_text` / `read_parquet` for a manifest) ->
`map_batches(FacePredictor, compute=ActorPoolStrategy(size=N))`, N actors that each load the model once
-> `write_parquet`.
Files are read by the actors, so every node must see the paths (a shared or network filesystem); for an
object store, read the bytes with `ray.data.read_binary_files(..., include_paths=True)` and map the same
FacePredictor over them (docs/batch.md). Needs `pip install "agekit[batch]"` (ray[data], pyarrow).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from agekit.batch.predictor import FacePredictor
from agekit.errors import AgekitError
from agekit.runtime.inputs import expand_inputs

MANIFEST_SUFFIXES = (".csv", ".txt", ".parquet")


def _ray():
    try:
        import ray
        import ray.data
    except ModuleNotFoundError:
        raise AgekitError('batch prediction on Ray needs Ray Data: pip install "agekit[batch]"') from None
    return ray


def read_source(source):
    """A Ray Dataset with a `path` column (and `error` for folder entries that cannot be used), and the root
    that relative paths are read under.

    source: a folder (walked by the rules of `agekit predict FOLDER`: recursive, image extensions, hidden
    entries skipped); a manifest (.csv with a `path` column, .txt with one path a line, .parquet with a
    `path` column; relative paths are taken from the manifest's folder); or a list of paths."""
    ray = _ray()
    if isinstance(source, (list, tuple)):
        return ray.data.from_items([{"path": str(p)} for p in source]), os.getcwd()
    path = Path(source).expanduser()
    if path.is_dir():

        items = expand_inputs([str(path.resolve())]).items
        if not items:
            raise AgekitError(f"{source}: no images in this folder")
        return ray.data.from_items([{"path": item.name, "error": item.error} for item in items]), None
    if not path.is_file():
        raise AgekitError(f"{source}: no such folder or manifest file")
    root = str(path.resolve().parent)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return ray.data.read_text(str(path.resolve())).rename_columns({"text": "path"}), root
    if suffix not in (".csv", ".parquet"):
        raise AgekitError(f"{source}: a manifest is a .csv or .parquet file with a 'path' column, or a .txt "
                          "file with one path a line")
    reader = ray.data.read_csv if suffix == ".csv" else ray.data.read_parquet
    dataset = reader(str(path.resolve()))
    if "path" not in dataset.columns():
        raise AgekitError(f"{source}: the manifest has no 'path' column (it has {', '.join(dataset.columns())})")
    return dataset.select_columns(["path"]), root


def check_out(out) -> Path:
    """The Parquet folder to write: refused when it holds anything (nothing is overwritten unless asked)."""
    path = Path(out).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise AgekitError(f"{out} already exists and is not an empty folder; give a new one (nothing is overwritten)")
    return path


def predict_dataset(source, out, *, concurrency: int | tuple | None = None, batch_size: int = 32,
                    num_cpus: float = 1, **options) -> Path:
    """Predict every face of `source` (see read_source) into Parquet files under the folder `out`, one row
    per face (agekit.batch.predictor.COLUMNS) and one row with `error` set per file that failed.

    concurrency: how many actors (each one model; default: the cluster's CPUs / num_cpus); an (min, max)
    tuple lets Ray scale the pool. batch_size: files per model call (32, as `agekit predict`). num_cpus: CPUs
    reserved per actor (its onnxruntime threads follow). options: FacePredictor's (model, level, detector,
    threshold, min_face, max_faces, threads, detector_options, no_detect). Starts a local Ray instance when
    none is running (ray.init() before it to choose one). Returns the output folder."""
    ray = _ray()
    # usage errors (a missing or unreadable model, an unknown detector, a bad level) here, as one AgekitError,
    # not as actors that die in Ray: make the actors' predictor once (a fraction of a second)
    FacePredictor(**options)
    out_path = Path(os.path.abspath(check_out(out)))  # absolute: OUT may be "." (an empty folder)
    if not ray.is_initialized():
        ray.init()
    dataset, root = read_source(source)
    if concurrency is None:
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 1) // num_cpus))
    sizes = {"min_size": concurrency[0], "max_size": concurrency[1]} if isinstance(concurrency, tuple) \
        else {"size": int(concurrency)}
    predicted = dataset.map_batches(FacePredictor, fn_constructor_kwargs=dict(options, root=root),
                                    batch_size=batch_size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(**sizes), num_cpus=num_cpus)
    # written beside OUT under a temporary name and renamed when complete: a run that fails part-way
    # (Ray writes file by file) leaves nothing at OUT that could pass for the whole result
    partial = out_path.with_name(f".{out_path.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        predicted.write_parquet(str(partial.resolve()))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        os.replace(partial, out_path)  # replaces OUT only when it is still an empty folder (check_out)
    except OSError as exc:
        raise AgekitError(f"{out}: could not be written ({exc.strerror}); the results are in {partial}") from None
    return out_path
