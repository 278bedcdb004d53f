"""Target classifiers (all return logits) and the classifier registry."""

from tfdefense.models import applications, classifiers, densenet, resnet  # noqa: F401  (registers builders)
from tfdefense.models.applications import ImageNetPreprocessing, imagenet_classifier
from tfdefense.models.classifiers import model_a, model_b, model_c, model_d
from tfdefense.models.densenet import small_densenet
from tfdefense.models.registry import get_classifier, list_classifiers, register_classifier
from tfdefense.models.resnet import cifar_resnet, resnet20
from tfdefense.models.training import compile_classifier, train_classifier, trainable_copy

__all__ = [
    "ImageNetPreprocessing",
    "cifar_resnet",
    "compile_classifier",
    "trainable_copy",
    "get_classifier",
    "imagenet_classifier",
    "list_classifiers",
    "model_a",
    "model_b",
    "model_c",
    "model_d",
    "register_classifier",
    "resnet20",
    "small_densenet",
    "train_classifier",
]

# pix2pix purifier networks and perceptual features.
from tfdefense.models.patchgan import list_discriminator_presets, patchgan_discriminator, patchgan_preset  # noqa: E402
from tfdefense.models.perceptual import perceptual_feature_extractor  # noqa: E402
from tfdefense.models.unet import list_generator_presets, unet_generator, unet_generator_preset  # noqa: E402

__all__ += [
    "list_discriminator_presets",
    "list_generator_presets",
    "patchgan_discriminator",
    "patchgan_preset",
    "perceptual_feature_extractor",
    "unet_generator",
    "unet_generator_preset",
]

# The defenses' networks (one module per family; the defenses build them through their presets).
from tfdefense.models.advgan_nets import advgan_generator  # noqa: E402
from tfdefense.models.defensegan_nets import defensegan_critic, defensegan_generator  # noqa: E402
from tfdefense.models.denoiser_nets import conv_autoencoder_network, dncnn_network  # noqa: E402
from tfdefense.models.magnet_nets import magnet_autoencoder  # noqa: E402
from tfdefense.models.superres_nets import PixelShuffle, super_resolution_net  # noqa: E402

__all__ += [
    "PixelShuffle",
    "advgan_generator",
    "conv_autoencoder_network",
    "defensegan_critic",
    "defensegan_generator",
    "dncnn_network",
    "magnet_autoencoder",
    "super_resolution_net",
]
