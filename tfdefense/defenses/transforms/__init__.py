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
    "train_super_resolution",
]
