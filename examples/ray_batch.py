"""Age and gender of every face in a folder (or a manifest) of photos, on Ray Data, into Parquet.

    pip install "agekit[batch]"
    python examples/ray_batch.py photos/ ages.parquet                       # a local Ray instance, all CPUs
    python examples/ray_batch.py manifest.csv ages.parquet --address auto   # a running cluster
    ray job submit --working-dir . -- python examples/ray_batch.py /shared/photos /shared/ages.parquet

SOURCE: a folder (walked as `agekit predict FOLDER` walks it), a manifest (.csv or .parquet with a `path`
column, .txt with one path a line; relative paths are read from the manifest's folder) or several files.
OUT: a new folder of Parquet files, one row per face and one row with `error` set per file that failed
(docs/batch.md lists the columns). Prints a summary; exit code 1 when any file failed, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="+", help="a folder, a manifest (.csv/.txt/.parquet) or image files")
    p.add_argument("out", help="a new folder for the Parquet files")
    p.add_argument("--address", help="a Ray cluster to join (e.g. auto); default: start a local instance")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local instance (default: all)")
    p.add_argument("--concurrency", type=int, help="model actors (default: the cluster's CPUs)")
    p.add_argument("--batch-size", type=int, default=32, help="files per model call (default 32)")
    p.add_argument("--model", help="'default', 'fast' or an ONNX file from `agekit export`")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    args = p.parse_args(argv)

    import pyarrow.dataset as pads
    import ray

    from agekit.batch.ray_data import predict_dataset
    from agekit.errors import AgekitError

    source = args.source[0] if len(args.source) == 1 else args.source
    ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None,
             include_dashboard=False, log_to_driver=False)
    try:
        out = predict_dataset(source, args.out, concurrency=args.concurrency, batch_size=args.batch_size,
                              model=args.model, level=args.level)
    except AgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    table = pads.dataset(out, format="parquet").to_table(columns=["path", "error"])
    paths, errors = table.column("path").to_pylist(), table.column("error").to_pylist()
    failed = {p for p, e in zip(paths, errors) if e is not None}
    print(f"{len(set(paths))} files, {len(failed)} failed, {len(paths) - len(failed)} faces -> {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
