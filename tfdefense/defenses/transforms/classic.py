"""Input-transformation baselines: image-to-image Keras models to put in front of a classifier.

Every transform maps float32 NHWC images in [0, 1] to images of the same shape
in [0, 1], is a serialisable `keras.Model` (`.keras` save/load round-trips), and
plugs into `DefendedClassifier(transform, classifier)`, so the adaptive
(white-box) evaluation works out of the box:

* `differentiable = False` transforms (JPEG, bit-depth reduction, median
  smoothing, total-variation minimisation, wavelet denoising, pixel deflection)
  run their forward pass outside TensorFlow's autodiff (`tf.numpy_function` or
  quantising ops) and, by default (`bpda=True`), backpropagate as the identity
  (BPDA, Athalye et al. 2018) through `tfdefense.attacks.adaptive`. With
  `bpda=False` the gradient through the transform is zero: what a naive
  gradient attacker sees (gradient masking), useful only to show the masking.
* `stochastic = True` transforms (random resize + pad, pixel deflection,
  total-variation minimisation with its random pixel mask) draw fresh
  randomness on every call from a `keras.random.SeedGenerator` seeded by
  `seed`: evaluate them with EOT (`eot_samples=N` of the gradient attacks).

    from tfdefense.defenses import DefendedClassifier, get_transform, list_transforms
    defended = DefendedClassifier(get_transform("bit_depth", bits=1), classifier)

ART's preprocessors are used where they exist (JPEG, feature squeezing,
spatial smoothing, total variance minimisation); PyWavelets / scikit-image do
the wavelet denoising. All are weak against adaptive attacks: see
https://arxiv.org/abs/1802.00420 and docs/baselines.md.
"""

import fnmatch
import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.attacks.adaptive import bpda_apply

_TRANSFORMS = {}


def register_transform(name):
    """Class decorator adding a transform to the `get_transform` registry under `name`."""

    def decorator(cls):
        if name in _TRANSFORMS and _TRANSFORMS[name] is not cls:
            raise ValueError(f"A transform named {name!r} is already registered ({_TRANSFORMS[name].__name__}).")
        _TRANSFORMS[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def list_transforms(filter=None):  # noqa: A002  (timm's argument name)
    """Sorted names of the registered transforms, optionally matching a wildcard `filter`."""
    names = sorted(_TRANSFORMS)
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n, filter)]
    return names


def get_transform(name, **params):
    """Builds the registered transform `name` with `params` (its constructor arguments)."""
    check_choice("name", name, list_transforms())
    cls = _TRANSFORMS[name]
    allowed = {"name"}
    for klass in cls.__mro__:
        if klass is InputTransform or (isinstance(klass, type) and issubclass(klass, InputTransform)):
            allowed |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    if not cls.stochastic:
        allowed.discard("seed")
    for key in params:
        if key not in allowed:
            raise invalid_value("params", f"arguments of {cls.__name__}: {sorted(allowed)}", key)
    return cls(**params)


def check_bool(argument, value):
    if not isinstance(value, (bool, np.bool_)):
        raise invalid_value(argument, "True or False", value)
    return bool(value)


class InputTransform(keras.Model):
    """Base class: an image-to-image transform without trainable weights.

    Subclasses implement `transform(x)` on a float32 NHWC tensor (graph
    compatible), set the class attributes `differentiable` and `stochastic`,
    and list their constructor arguments in `get_config`.

    Args:
      bpda: for non-differentiable transforms, backpropagate as the identity
        (True, default) or not at all (False: zero gradient, gradient masking).
      seed: int or None, seeds the randomness of stochastic transforms.
    """

    differentiable = True
    stochastic = False

    def __init__(self, bpda=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.bpda = check_bool("bpda", bpda)
        check_number("seed", seed, minimum=0, integer=True, allow_none=True)
        if seed is not None and not self.stochastic:
            raise invalid_value("seed", f"None ({type(self).__name__} is deterministic)", seed)
        self.seed = seed
        if self.stochastic:
            self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.built = True

    # -- to implement ---------------------------------------------------------------
    def transform(self, x):
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------
    def _random_int_seed(self):
        """A fresh int64 scalar drawn from the seed generator (for numpy-side randomness)."""
        return tf.cast(keras.random.randint((), 0, 2**31 - 1, dtype="int32", seed=self.seed_generator), tf.int64)

    @staticmethod
    def _numpy(fn, x, *args):
        """Runs numpy `fn(x, *args)` as a graph op; the output keeps x's static shape."""
        y = tf.numpy_function(lambda *a: np.asarray(fn(*a), dtype=np.float32), [x, *args], tf.float32)
        y.set_shape(x.shape)
        return y

    # -- keras ----------------------------------------------------------------------
    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank is not None and x.shape.rank != 4:
            raise invalid_value("inputs", "a rank-4 NHWC batch of images", f"tensor of shape {tuple(x.shape)}")
        if not x.dtype.is_floating:
            raise invalid_value("inputs", "float images with values in [0, 1]", f"tensor of dtype {x.dtype.name}")
        x = tf.clip_by_value(tf.cast(x, tf.float32), 0.0, 1.0)
        if self.differentiable:
            return self.transform(x)
        if self.bpda:
            return bpda_apply(self.transform, None, x)
        return tf.stop_gradient(self.transform(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"bpda": self.bpda})
        if self.stochastic:
            config["seed"] = self.seed
        return config

    def purify(self, x, batch_size=256):
        """Transforms a numpy batch (in batches); returns a float32 numpy array."""
        x = np.asarray(x, np.float32)
        outs = [np.asarray(self(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else x.copy()


# ------------------------------------------------------------------------------ ART-based


def _art(name, **params):

    with warnings.catch_warnings():  # ART warns about missing PyTorch-only features on import
        warnings.simplefilter("ignore", UserWarning)
        import art.defences.preprocessor as pre

    return getattr(pre, name)(**params)


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("jpeg")
class JpegCompression(InputTransform):
    """JPEG compression at `quality` (1-100), ART's `JpegCompression` (PIL encoder).

    Paper: Dziugaite et al. 2016 (https://arxiv.org/abs/1608.00853); Guo et al.
    2018 (https://arxiv.org/abs/1711.00117). Pixels are quantised to 8 bits
    (ART truncates) before encoding. Non-differentiable: BPDA identity backward.
    Limits: removes high-frequency perturbations only partly and does little
    against large MNIST perturbations (eps 0.3); broken by BPDA.
    """

    differentiable = False

    def __init__(self, quality=75, **kwargs):
        super().__init__(**kwargs)
        self.quality = check_number("quality", quality, minimum=1, maximum=100, integer=True)
        self._art = _art("JpegCompression", clip_values=(0.0, 1.0), quality=int(quality), channels_first=False)

    def transform(self, x):
        return self._numpy(lambda a: self._art(np.clip(a, 0.0, 1.0))[0], x)

    def get_config(self):
        return {**super().get_config(), "quality": self.quality}


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("bit_depth")
class BitDepthReduction(InputTransform):
    """Reduces each pixel to `bits` bits (1-8): feature squeezing, ART's `FeatureSqueezing`.

    Paper: Xu et al. 2018, https://arxiv.org/abs/1704.01155 (1-bit on MNIST).
    `round(x * (2**bits - 1)) / (2**bits - 1)`. Non-differentiable: BPDA
    identity backward. Limits: on MNIST 1-bit squeezing undoes FGSM eps 0.3
    almost entirely (pixels at 0 or 1 stay on their side of 0.5), but an
    adaptive BPDA attack breaks it.
    """

    differentiable = False

    def __init__(self, bits=1, **kwargs):
        super().__init__(**kwargs)
        self.bits = check_number("bits", bits, minimum=1, maximum=8, integer=True)
        self._art = _art("FeatureSqueezing", clip_values=(0.0, 1.0), bit_depth=int(bits))

    def transform(self, x):
        return self._numpy(lambda a: self._art(a)[0], x)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("median")
class MedianSmoothing(InputTransform):
    """Median filter over `window` x `window` pixels per channel, ART's `SpatialSmoothing`.

    Paper: Xu et al. 2018, https://arxiv.org/abs/1704.01155. Non-differentiable:
    BPDA identity backward. Limits: a 2x2/3x3 median removes isolated pixel
    noise but thins MNIST strokes; broken by BPDA.
    """

    differentiable = False

    def __init__(self, window=3, **kwargs):
        super().__init__(**kwargs)
        self.window = check_number("window", window, minimum=1, maximum=15, integer=True)
        self._art = _art("SpatialSmoothing", window_size=int(window), channels_first=False, clip_values=(0.0, 1.0))

    def transform(self, x):
        return self._numpy(lambda a: self._art(a)[0], x)

    def get_config(self):
        return {**super().get_config(), "window": self.window}


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("tv_min")
class TotalVarianceMinimization(InputTransform):
    """Total-variance minimisation on a random pixel subset, ART's `TotalVarMin` solver.

    Paper: Guo et al. 2018, https://arxiv.org/abs/1711.00117. Each pixel is
    kept with probability `prob`; the image z minimising
    ||mask * (z - x)||_2 + lamb * TV_norm(z) is found per image and channel by
    scipy (`solver`, `max_iter` iterations, started at x). ART draws the mask
    from numpy's global generator; here the mask comes from this transform's
    seed generator (ART's `_minimize` does the solve), so runs are reproducible.
    Non-differentiable and stochastic: BPDA + EOT. Limits: slow (a scipy
    solve per image, ~20 ms on 28x28); broken by BPDA + EOT.
    """

    differentiable = False
    stochastic = True

    def __init__(self, prob=0.3, norm=2, lamb=0.5, solver="L-BFGS-B", max_iter=10, **kwargs):
        super().__init__(**kwargs)
        self.prob = float(check_number("prob", prob, minimum=0.0, maximum=1.0))
        self.norm = check_number("norm", norm, minimum=1, integer=True)
        self.lamb = float(check_number("lamb", lamb, minimum=0.0))
        self.solver = check_choice("solver", solver, ("L-BFGS-B", "CG", "Newton-CG"))
        self.max_iter = check_number("max_iter", max_iter, minimum=1, integer=True)
        self._art = _art(
            "TotalVarMin",
            prob=self.prob,
            norm=self.norm,
            lamb=self.lamb,
            solver=solver,
            max_iter=int(max_iter),
            clip_values=(0.0, 1.0),
        )

    def _solve(self, x, seed):
        rng = np.random.default_rng(int(seed))
        out = x.astype(np.float64, copy=True)
        for i in range(len(out)):
            mask = (rng.random(out[i].shape) < self.prob).astype(int)
            out[i] = self._art._minimize(out[i], mask)
        return np.clip(out, 0.0, 1.0)

    def transform(self, x):
        return self._numpy(self._solve, x, self._random_int_seed())

    def get_config(self):
        return {
            **super().get_config(),
            "prob": self.prob,
            "norm": self.norm,
            "lamb": self.lamb,
            "solver": self.solver,
            "max_iter": self.max_iter,
        }


# ------------------------------------------------------------------------------ wavelets

WAVELET_METHODS = ("BayesShrink", "VisuShrink")
WAVELET_MODES = ("soft", "hard")


def wavelet_denoise(x, sigma=None, wavelet="db1", mode="soft", method="BayesShrink", wavelet_levels=None):
    """scikit-image's `denoise_wavelet` (PyWavelets) on each image of a numpy NHWC batch.

    `sigma=None` estimates the noise level per image. Colour images are denoised
    in YCbCr (`convert2ycbcr`, as Prakash et al.); returns float32 in [0, 1].
    """
    from skimage.restoration import denoise_wavelet

    x = np.asarray(x, np.float64)
    color = x.shape[-1] == 3
    out = np.empty(x.shape, np.float32)
    for i in range(len(x)):
        img = x[i] if x.shape[-1] > 1 else x[i, ..., 0]
        res = denoise_wavelet(
            img,
            sigma=sigma,
            wavelet=wavelet,
            mode=mode,
            method=method,
            wavelet_levels=wavelet_levels,
            channel_axis=-1 if x.shape[-1] > 1 else None,
            convert2ycbcr=color,
            rescale_sigma=True,
        )
        out[i] = res.reshape(out[i].shape)
    return np.clip(out, 0.0, 1.0)


def check_wavelet(wavelet, mode, method, sigma):
    import pywt

    check_choice("wavelet", wavelet, pywt.wavelist(kind="discrete"))
    check_choice("mode", mode, WAVELET_MODES)
    check_choice("method", method, WAVELET_METHODS)
    check_number("sigma", sigma, minimum=0.0, allow_none=True)


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("wavelet")
class WaveletDenoise(InputTransform):
    """Wavelet-shrinkage denoising (scikit-image `denoise_wavelet`, PyWavelets).

    Args:
      sigma: noise standard deviation in [0, 1] units, None to estimate it per
        image (Prakash et al.'s code uses 0.04).
      wavelet, mode, method: PyWavelets wavelet name, "soft"/"hard"
        thresholding, "BayesShrink"/"VisuShrink".
    Non-differentiable: BPDA identity backward.
    """

    differentiable = False

    def __init__(self, sigma=0.04, wavelet="db1", mode="soft", method="BayesShrink", **kwargs):
        super().__init__(**kwargs)
        check_wavelet(wavelet, mode, method, sigma)
        self.sigma = None if sigma is None else float(sigma)
        self.wavelet, self.mode, self.method = wavelet, mode, method

    def transform(self, x):
        return self._numpy(lambda a: wavelet_denoise(a, self.sigma, self.wavelet, self.mode, self.method), x)

    def get_config(self):
        return {
            **super().get_config(),
            "sigma": self.sigma,
            "wavelet": self.wavelet,
            "mode": self.mode,
            "method": self.method,
        }


def pixel_deflect(x, deflections, window, rng):
    """Pixel deflection on a numpy NHWC batch (Prakash et al. 2018, uniform map).

    For each image, `deflections` times: pick a pixel uniformly at random and
    replace it (all channels) with a pixel drawn uniformly from the
    `window` x `window` neighbourhood around it (clipped to the image).
    The paper's class-activation map is replaced by a uniform one (its
    "random" variant). Deflections are applied in order, as in the paper.
    """
    out = np.array(x, np.float32, copy=True)
    n, h, w, _ = out.shape
    if deflections == 0 or n == 0:
        return out
    rows = rng.integers(0, h, size=(n, deflections))
    cols = rng.integers(0, w, size=(n, deflections))
    half = window // 2
    dr = rng.integers(-half, window - half, size=(n, deflections))
    dc = rng.integers(-half, window - half, size=(n, deflections))
    src_r = np.clip(rows + dr, 0, h - 1)
    src_c = np.clip(cols + dc, 0, w - 1)
    idx = np.arange(n)
    for k in range(deflections):  # sequential: later deflections may read earlier ones
        out[idx, rows[:, k], cols[:, k]] = out[idx, src_r[:, k], src_c[:, k]]
    return out


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("pixel_deflection")
class PixelDeflection(InputTransform):
    """Pixel deflection followed by wavelet denoising (Prakash et al. 2018).

    Paper: https://arxiv.org/abs/1801.08926. `deflections` random pixels are
    replaced by a random neighbour within `window` pixels (None: the paper's
    density, 200 per 224x224 image, i.e. 3 on MNIST), then the image is
    wavelet-denoised (BayesShrink soft thresholding, db1, sigma 0.04 as in the
    authors' code; set `denoise=False` to skip). Non-differentiable and
    stochastic: BPDA + EOT. Limits: designed for ImageNet-scale, small-eps
    perturbations; at MNIST eps 0.3 the few deflections and the weak shrinkage
    barely change the attack (see docs/baselines.md); broken by BPDA + EOT.
    """

    differentiable = False
    stochastic = True

    def __init__(
        self,
        deflections=None,
        window=10,
        denoise=True,
        sigma=0.04,
        wavelet="db1",
        mode="soft",
        method="BayesShrink",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.deflections = check_number("deflections", deflections, minimum=0, integer=True, allow_none=True)
        self.window = check_number("window", window, minimum=1, integer=True)
        self.denoise = check_bool("denoise", denoise)
        check_wavelet(wavelet, mode, method, sigma)
        self.sigma = None if sigma is None else float(sigma)
        self.wavelet, self.mode, self.method = wavelet, mode, method

    def num_deflections(self, height, width):
        if self.deflections is not None:
            return int(self.deflections)
        return max(1, int(round(200 * height * width / (224 * 224))))

    def _apply(self, x, seed):
        rng = np.random.default_rng(int(seed))
        out = pixel_deflect(x, self.num_deflections(x.shape[1], x.shape[2]), self.window, rng)
        if self.denoise:
            out = wavelet_denoise(out, self.sigma, self.wavelet, self.mode, self.method)
        return out

    def transform(self, x):
        return self._numpy(self._apply, x, self._random_int_seed())

    def get_config(self):
        return {
            **super().get_config(),
            "deflections": self.deflections,
            "window": self.window,
            "denoise": self.denoise,
            "sigma": self.sigma,
            "wavelet": self.wavelet,
            "mode": self.mode,
            "method": self.method,
        }


# ------------------------------------------------------------------------------ random resize + pad


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("random_resize_pad")
class RandomResizePad(InputTransform):
    """Random resizing and random zero padding (Xie et al. 2018), same-shape output.

    Paper: https://arxiv.org/abs/1711.01991 (299 -> random r in [299, 331),
    zero-pad at a random offset to 331x331). Here, for an H x W input,
    P = round(H * `max_ratio`), each image gets its own r in [H, P) and offset
    in [0, P - r], and the padded P x P canvas is resized back to H x W so the
    classifier sees its usual input size. The three steps are done as one
    bilinear resampling (`tf.image.crop_and_resize`, zeros outside), so the
    output is the image shrunk by r / P and shifted, with no extra blur.
    Differentiable (exact gradients) and stochastic: attack it with EOT.
    Limits: a large eps (MNIST 0.3) survives the small rescaling; broken by EOT.
    """

    differentiable = True
    stochastic = True

    def __init__(self, max_ratio=1.1, **kwargs):
        super().__init__(**kwargs)
        self.max_ratio = float(check_number("max_ratio", max_ratio, minimum=1.0, maximum=4.0))
        if self.max_ratio <= 1.0:
            raise invalid_value("max_ratio", "a value > 1 (padded size / input size)", max_ratio)

    def transform(self, x):
        shape = tf.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        seed = keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=self.seed_generator)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        pad_h = tf.maximum(tf.round(hf * self.max_ratio), hf + 1.0)
        pad_w = tf.maximum(tf.round(wf * self.max_ratio), wf + 1.0)
        # One scale per image (square resizing, as the paper), integer sizes in [H, P).
        u = tf.random.stateless_uniform([n], seeds[0])
        r_h = tf.floor(hf + u * (pad_h - hf))
        r_w = tf.floor(wf + u * (pad_w - wf))
        off_h = tf.floor(tf.random.stateless_uniform([n], seeds[1]) * (pad_h - r_h + 1.0))
        off_w = tf.floor(tf.random.stateless_uniform([n], seeds[2]) * (pad_w - r_w + 1.0))

        # Output pixel i (of H) sits at canvas coordinate i * (P - 1) / (H - 1); the image
        # occupies canvas pixels [off, off + r); source pixel = (canvas - off) * (H - 1) / (r - 1).
        def box(off, r, pad, size):
            scale = (size - 1.0) / tf.maximum(r - 1.0, 1.0)
            start = (0.0 - off) * scale / tf.maximum(size - 1.0, 1.0)
            end = (pad - 1.0 - off) * scale / tf.maximum(size - 1.0, 1.0)
            return start, end

        y1, y2 = box(off_h, r_h, pad_h, hf)
        x1, x2 = box(off_w, r_w, pad_w, wf)
        boxes = tf.stack([y1, x1, y2, x2], axis=1)
        out = tf.image.crop_and_resize(
            x, boxes, tf.range(n), tf.stack([h, w]), method="bilinear", extrapolation_value=0.0
        )
        out = tf.clip_by_value(out, 0.0, 1.0)
        out.set_shape(x.shape)
        return out

    def get_config(self):
        return {**super().get_config(), "max_ratio": self.max_ratio}
