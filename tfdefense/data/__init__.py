"""Datasets (`load_dataset`) and tf.data pipelines."""

from tfdefense.data.datasets import list_datasets, load_dataset, load_npz_arrays, resize_images, to_float_images
from tfdefense.data.imagenet import imagenet_class_index, imagenet_wnids, load_imagenet_folder
from tfdefense.data.pipelines import make_paired_pipeline, make_pipeline, take_balanced

__all__ = [
    "imagenet_class_index",
    "imagenet_wnids",
    "list_datasets",
    "load_dataset",
    "load_imagenet_folder",
    "load_npz_arrays",
    "make_paired_pipeline",
    "make_pipeline",
    "resize_images",
    "take_balanced",
    "to_float_images",
]
