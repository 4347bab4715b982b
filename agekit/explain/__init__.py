"""Explanations of age estimates: which regions of the face move the estimate, and where a model goes wrong.

The package sits above agekit.engine (gradcam loads checkpoints; docs/architecture.md), but these modules
import no torch (ONNX runtime, OpenCV, numpy):
- occlusion: occlusion-sensitivity maps over the crop the model saw (`AgeEstimator.explain` uses it);
- geometry: the crop's matrix, to put a map back onto the photo;
- render: heat-map overlays and the age-distribution chart, drawn with OpenCV;
- bands: mean maps per age band over a dataset split, and the deletion check (do the maps mean something?);
  band_figures draws them (matplotlib) for `agekit saliency`.

Needs torch (a training checkpoint):
- gradcam: Grad-CAM, feature maps of chosen layers, and the channels that respond most to each age band.

See docs/explain.md.
"""
