"""What the tests build, by kind (tests/ is on sys.path under pytest, so `from support.X import ...`):

- `support.images`: image files good and bad (JPEGs, truncated, empty, not-an-image, PNG headers that claim
  a huge size);
- `support.datasets`: tiny fake copies of each dataset's layout, and a synthetic training set;
- `support.scenes`: photos composed in memory: blurred noise with UTKFace chips pasted in, and their true
  face boxes;
- `support.models`: the committed tiny ONNX model (tests/data/tiny-age.onnx) and the 2-step training run
  that makes it;
- `support.torchless`: the train-only packages, and the import blocker of the torch-free run.
"""
