"""Classifiers for the sample-quality metrics (Inception-score formula, Frechet distance).

A *classifier* here is anything with the :class:`Classifier` interface: it maps a batch
of images in ``[0, 1]`` (``[B, H, W, C]`` float32, the range of this package's data
pipelines and of ``model.sample``) to ``(logits [B, num_classes], activations [B, F])``,
always in inference mode (no dropout, batch-norm moving statistics, nothing updated).

Two kinds are provided:

* :func:`build_small_classifier`: small CNNs of our own for MNIST / Fashion-MNIST
  (28x28x1) and CIFAR-10 (32x32x3). Each is a functional Keras 3 model with a dict of two
  outputs, ``{"logits": [B, 10], "activations": [B, F]}`` (``F`` = the penultimate dense
  layer: 128 units for 28x28x1, 256 for 32x32x3); ``python -m trainers.train_classifier``
  trains one and saves it as a ``.keras`` file, which :func:`load_classifier` reads
  back. A small JSON file ``PATH.json`` beside it records the data set and the
  test accuracy (informational; the image shape check uses the model itself).
* :func:`load_inception_v3`: Keras' InceptionV3 with ImageNet weights; logits are the
  1000 pre-softmax class scores (``classifier_activation=None``), activations the 2048-d
  global-average-pooled features ("pool_3"). Images are resized to 299x299 (bilinear),
  grey images repeated over three channels, and scaled to ``[-1, 1]`` as
  ``keras.applications.inception_v3.preprocess_input`` does. The weights are downloaded
  on first use (to ``~/.keras/models``); where that is impossible, a
  :class:`ClassifierUnavailableError` says which file to fetch and where to put it.
  Note: TF-GAN's published Inception scores use the 2015 Inception graph (1008 logits);
  scores from Keras' InceptionV3 are close to, but not identical with, those numbers.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "Classifier",
    "ClassifierUnavailableError",
    "INCEPTION_V3",
    "build_small_classifier",
    "load_classifier",
    "load_inception_v3",
    "metadata_path",
    "read_metadata",
]

#: The name :func:`load_classifier` (and ``--classifier``) accepts for InceptionV3.
INCEPTION_V3 = "inception_v3"

_INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
_INCEPTION_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    + _INCEPTION_WEIGHTS_FILE
)


class ClassifierUnavailableError(RuntimeError):
    """The classifier (or its weights) cannot be loaded."""


# --------------------------------------------------------------------------------------
# The interface


class Classifier:
    """A Keras model with ``{"logits", "activations"}`` outputs plus its preprocessing.

    Args:
      model: a Keras model whose call returns a dict with ``"logits"`` and
        ``"activations"`` (or a two-element list/tuple in that order).
      name: a label for reports.
      image_shape: the ``(H, W, C)`` the model accepts, or ``None`` when
        ``preprocess`` adapts any image size (InceptionV3).
      preprocess: ``images in [0, 1] -> model input`` (default: identity).
    """

    def __init__(self, model, name: str, image_shape=None, preprocess=None):
        self.model = model
        self.name = name
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self._preprocess = preprocess
        self._call = tf.function(self._forward, autograph=False, reduce_retracing=True)

    def _forward(self, images):
        x = images if self._preprocess is None else self._preprocess(images)
        out = self.model(x, training=False)
        if isinstance(out, dict):
            return out["logits"], out["activations"]
        return out[0], out[1]

    def check_images(self, images) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        if not images.dtype.is_floating:
            raise ValueError(f"Images must be float in [0, 1]. Received: dtype={images.dtype.name}.")
        if images.shape.rank != 4:
            raise ValueError(f"Images must have shape [B, H, W, C]. Received: shape={images.shape}.")
        if self.image_shape is not None and tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"Classifier {self.name!r} takes images of shape {self.image_shape}. "
                f"Received: shape={tuple(images.shape[1:])}. Train one for this data set "
                "with `python -m trainers.train_classifier`, or use 'inception_v3'.")
        return tf.cast(images, tf.float32)

    def __call__(self, images) -> Tuple[tf.Tensor, tf.Tensor]:
        """``images [B, H, W, C]`` in ``[0, 1]`` -> ``(logits, activations)`` (float32)."""
        images = self.check_images(images)
        logits, act = self._call(images)
        return tf.cast(logits, tf.float32), tf.cast(act, tf.float32)

    def outputs(self, images, batch_size: int = 100) -> Tuple[np.ndarray, np.ndarray]:
        """Logits and activations of a NumPy array of images, ``batch_size`` at a time."""
        images = np.asarray(images, np.float32)
        logits, acts = [], []
        for start in range(0, len(images), batch_size):
            lo, ac = self(images[start:start + batch_size])
            logits.append(lo.numpy())
            acts.append(ac.numpy())
        return np.concatenate(logits), np.concatenate(acts)


# --------------------------------------------------------------------------------------
# Our small classifiers


def build_small_classifier(image_shape, num_classes: int = 10, *, dropout: float = 0.5,
                           name: Optional[str] = None) -> keras.Model:
    """A small CNN for 28x28x1 or 32x32x3 images in ``[0, 1]``.

    Returns a functional model with outputs ``{"logits": [B, num_classes],
    "activations": [B, F]}``. 28x28x1: two blocks of two 3x3 convolutions (32, 64
    filters) with max pooling, a 128-unit dense layer (the activations), dropout,
    the logits. 32x32x3: three blocks (64, 128, 256 filters) with batch norm, global
    average pooling, a 256-unit dense layer, dropout, the logits.
    """
    image_shape = tuple(int(v) for v in image_shape)
    if image_shape not in ((28, 28, 1), (32, 32, 3)):
        raise ValueError("Small classifiers exist for 28x28x1 and 32x32x3 images. "
                         f"Received: image_shape={image_shape}.")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}.")
    L = keras.layers
    inputs = keras.Input(image_shape, name="images")
    h = inputs
    if image_shape == (28, 28, 1):
        for filters in (32, 64):
            h = L.Conv2D(filters, 3, padding="same", activation="relu")(h)
            h = L.Conv2D(filters, 3, padding="same", activation="relu")(h)
            h = L.MaxPooling2D()(h)
        h = L.Flatten()(h)
        features = L.Dense(128, activation="relu", name="features")(h)
    else:
        for filters in (64, 128, 256):
            for _ in range(2):
                h = L.Conv2D(filters, 3, padding="same", use_bias=False)(h)
                h = L.BatchNormalization()(h)
                h = L.ReLU()(h)
            h = L.MaxPooling2D()(h)
        h = L.GlobalAveragePooling2D()(h)
        features = L.Dense(256, activation="relu", name="features")(h)
    h = L.Dropout(dropout)(features)
    logits = L.Dense(num_classes, name="logits")(h)
    name = name or "small_classifier_{}x{}x{}".format(*image_shape)
    return keras.Model(inputs, {"logits": logits, "activations": features}, name=name)


def metadata_path(path) -> str:
    """``PATH.json``: the metadata file written beside a saved classifier."""
    return os.fspath(path) + ".json"


def read_metadata(path) -> dict:
    """The metadata written by ``trainers.train_classifier`` ({} when absent)."""
    meta = metadata_path(path)
    if not os.path.exists(meta):
        return {}
    with open(meta) as f:
        return json.load(f)


def load_classifier(spec, *, inception_weights: Optional[str] = None) -> Classifier:
    """``"inception_v3"`` or the path of a ``.keras`` classifier -> :class:`Classifier`.

    Raises:
      ClassifierUnavailableError: the file is missing or is not a classifier with
        ``logits`` and ``activations`` outputs, or InceptionV3 weights cannot be had.
    """
    spec = os.fspath(spec)
    if spec.lower().replace("-", "_") in (INCEPTION_V3, "inceptionv3", "inception"):
        return load_inception_v3(weights=inception_weights)
    if not os.path.isfile(spec):
        raise ClassifierUnavailableError(
            f"No classifier file at {spec!r}. Train one with `python -m "
            "trainers.train_classifier --dataset NAME --out PATH.keras`, or pass "
            f"--classifier {INCEPTION_V3}.")
    try:
        model = keras.saving.load_model(spec, compile=False)
    except Exception as e:
        raise ClassifierUnavailableError(
            f"Could not load the classifier {spec!r}: {type(e).__name__}: {e}") from e
    outputs = model.output if isinstance(model.output, dict) else None
    if outputs is None or not {"logits", "activations"} <= set(outputs):
        raise ClassifierUnavailableError(
            f"The model in {spec!r} is not a classifier with 'logits' and 'activations' "
            f"outputs. Received: outputs={model.output!r}")
    image_shape = tuple(model.input.shape[1:])
    return Classifier(model, name=os.path.basename(spec), image_shape=image_shape)


# --------------------------------------------------------------------------------------
# InceptionV3


def _download_inception_weights(cache_dir: Optional[str] = None) -> str:
    """The local path of the ImageNet weights (downloaded on first use)."""
    return keras.utils.get_file(_INCEPTION_WEIGHTS_FILE, _INCEPTION_WEIGHTS_URL,
                                cache_subdir="models", cache_dir=cache_dir)


def _inception_preprocess(images):
    images = tf.cast(images, tf.float32)
    if images.shape[-1] == 1:
        images = tf.repeat(images, 3, axis=-1)
    elif images.shape[-1] != 3:
        raise ValueError(f"InceptionV3 takes grey or RGB images. Received: shape={images.shape}.")
    images = tf.image.resize(images, (299, 299), method="bilinear")
    # keras.applications.inception_v3.preprocess_input on 0..255 values: x / 127.5 - 1.
    return images * 2.0 - 1.0


def load_inception_v3(weights: Optional[str] = None) -> Classifier:
    """InceptionV3 (ImageNet weights) as a :class:`Classifier`.

    Args:
      weights: a local copy of ``inception_v3_weights_tf_dim_ordering_tf_kernels.h5``;
        ``None`` downloads it once to ``~/.keras/models`` (``$KERAS_HOME/models``).

    Raises:
      ClassifierUnavailableError: the weights can be neither found nor downloaded.
    """
    if weights is None:
        try:
            weights = _download_inception_weights()
        except Exception as e:
            raise ClassifierUnavailableError(
                "InceptionV3's ImageNet weights could not be downloaded from "
                f"{_INCEPTION_WEIGHTS_URL} ({type(e).__name__}: {e}). On a machine without "
                f"network access, copy {_INCEPTION_WEIGHTS_FILE} into ~/.keras/models/ (or "
                "$KERAS_HOME/models/) or pass its path with --inception-weights, or use one "
                "of our small classifiers (python -m trainers.train_classifier).") from e
    elif not os.path.isfile(weights):
        raise ClassifierUnavailableError(
            f"No InceptionV3 weights file at {weights!r} (expected {_INCEPTION_WEIGHTS_FILE} "
            f"from {_INCEPTION_WEIGHTS_URL}).")
    try:
        base = keras.applications.InceptionV3(include_top=True, weights=weights,
                                              classifier_activation=None)
    except Exception as e:
        raise ClassifierUnavailableError(
            f"Could not build InceptionV3 with the weights {weights!r}: "
            f"{type(e).__name__}: {e}") from e
    pool = base.get_layer("avg_pool").output
    model = keras.Model(base.input, {"logits": base.output, "activations": pool},
                        name="inception_v3")
    return Classifier(model, name=INCEPTION_V3, image_shape=None,
                      preprocess=_inception_preprocess)
