"""Helpers shared by the training tests."""
import numpy as np
from PIL import Image


def synthetic_dataset(folder, n=64):
    """Images whose brightness encodes the age, listed in a CSV manifest (path,age,gender)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["path,age,gender"]
    for i in range(n):
        age = int(rng.integers(5, 80))
        pixels = np.clip(age * 3 + rng.normal(0, 5, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        lines.append(f"img{i:03d}.png,{age},{i % 2}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"
