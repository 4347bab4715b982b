"""Batch prediction over very many photos, on an existing engine rather than a home-made one.

- agekit.batch.predictor: `FacePredictor`, a stateful callable (one estimator per instance, loaded once)
  turning a batch of image paths (or their bytes) into per-face rows as an Arrow table: the UDF for Ray Data's
  `map_batches` and for Spark (docs/batch.md). Needs pyarrow, not Ray.
- agekit.batch.ray_data: `predict_dataset(source, out)`: a folder, a manifest or a list of paths ->
  Ray Data -> Parquet. Ray is imported only there (`pip install "agekit[batch]"`).

On one machine, `agekit predict --workers N` (agekit.runtime.workers) is the simpler tool.
"""
