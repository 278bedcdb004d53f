"""Input transforms: fixed (or separately trained) image-to-image maps, BPDA-ready, with a registry."""

from tfdefense.defenses.transforms.classic import (
    BitDepthReduction,
    InputTransform,
    JpegCompression,
    MedianSmoothing,
    PixelDeflection,
    RandomResizePad,
    TotalVarianceMinimization,
    WaveletDenoise,
    get_transform,
    list_transforms,
    register_transform,
)
from tfdefense.defenses.transforms.superres import SuperResolutionWavelet, train_super_resolution
from tfdefense.models.superres_nets import super_resolution_net

__all__ = [
    "BitDepthReduction",
    "InputTransform",
    "JpegCompression",
    "MedianSmoothing",
    "PixelDeflection",
    "RandomResizePad",
    "SuperResolutionWavelet",
    "TotalVarianceMinimization",
    "WaveletDenoise",
    "get_transform",
    "list_transforms",
    "register_transform",
    "super_resolution_net",
    "train_super_resolution",
]
