"""SavedModel export with serving signatures, and loading.

``export_saved_model(model, export_dir)`` writes ``export_dir/<version>/`` (integer
versions, the layout TensorFlow Serving polls) holding a SavedModel and a
``metadata.json``.  The SavedModel needs only TensorFlow to load: the signatures are
graphs over the model's variables, so ``tf.saved_model.load``, ``saved_model_cli`` and
TensorFlow Serving work where ``tf_asvae`` is not installed.

Signatures (batch dimension dynamic; ``H, W, C`` the image shape, ``D`` the latent size):

==================  ==========================================  ===========================
name                inputs                                      outputs
==================  ==========================================  ===========================
``encode``          images f32 [B,H,W,C], seed i64 []           posterior_mean, z  [B, D]
``decode``          z f32 [B, D]                                images [B,H,W,C] and the
                                                                decoder's parameters:
                                                                logits (Bernoulli) or
                                                                loc, scale (Gaussian)
``sample``          num_images i32 [], seed i64 []              images, z
``reconstruct``     images f32 [B,H,W,C]                        reconstructions
(also ``serving_default``)
``log_likelihood``  images, num_samples i32 [], seed i64 []     log_likelihood,
                                                                standard_error,
                                                                effective_sample_size [B]
==================  ==========================================  ===========================

Images are float32 in [0, 1].  The scalar inputs (``seed``, ``num_images``,
``num_samples``) appear with an unknown shape in the SignatureDef (``saved_model_cli``
prints ``unknown_rank``) and are checked to be scalars when the graph runs: with a
declared shape ``[]`` TensorFlow folds that check away and a seed of shape [2] would
fail deep inside the graph.  ``loc``/``scale`` of a model with a flow on p(x|z) are
those of the Gaussian before the flow.

Usage without the package::

    saved_model_cli show --dir EXPORT/1 --all
    saved_model_cli run --dir EXPORT/1 --tag_set serve --signature_def sample \
        --input_exprs 'num_images=16;seed=0' --outdir out/
    saved_model_cli run --dir EXPORT/1 --tag_set serve --signature_def reconstruct \
        --inputs images=batch.npy

    loaded = tf.saved_model.load("EXPORT/1")
    out = loaded.signatures["encode"](images=x, seed=tf.constant(0, tf.int64))

Each signature computes exactly what the Keras model's method of the same name computes
with the same seed (``model.encode(x, seed)``, ``model.decode(z)``,
``model.sample(n, seed)`` with the codes it decoded, ``model.reconstruct(x)`` (seed 0),
and the importance-sampled ``log p(x)`` of
:func:`tf_asvae.evaluation.likelihood.importance_sampled_log_likelihood` with
``proposal_fn = model.posterior``, ``log p(x|z)`` from ``model.observation`` and the
prior ``model._prior()``).  Every draw is stateless, so outputs depend only on the
inputs, the seed and (for draws over a batch) the batch size.

The ``log_likelihood`` proposal is q(z|x) for the VAE and AS-VAE kinds.  The AVB
encoder is a black box without a density, so for ``avb`` and ``avb_ac`` the proposal is
the moment-matched Gaussian r(z|x) of adaptive contrast (64 encoder draws); importance
sampling stays an unbiased estimator of p(x) (a stochastic lower bound on log p(x)) for
any proposal, only its variance depends on how close r is to the true posterior.  The
metadata records which proposal was used.

Inputs are validated inside the graphs with messages naming the expected shape, dtype
or range (``InvalidArgumentError``), and run-time shapes are checked before any kernel
sees the data: a loaded signature does not check shapes itself.  A wrong dtype is
refused by TensorFlow before the graph runs ("expected to be a float tensor but is a
double tensor"); :class:`ExportedModel` casts floating inputs like the Keras model does.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import time
import uuid

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.core.protobuf import saved_model_pb2

from tf_asvae import __version__
from tf_asvae import distributions as dists
from tf_asvae import io as _tio
from tf_asvae.evaluation.likelihood import (LogLikelihoodEstimate,
                                            importance_sampled_log_likelihood)
from tf_asvae.models.base import MAX_OUTPUT_ELEMENTS as _MAX_OUTPUT_ELEMENTS
from tf_asvae.models.base import BaseModel

__all__ = ["ExportedModel", "SIGNATURES", "export_saved_model", "latest_version",
           "load_exported", "remove_stale_temporaries"]

SIGNATURES = ("encode", "decode", "sample", "reconstruct", "log_likelihood")
METADATA_FILE = "metadata.json"
FORMAT = "tf_asvae.saved_model"
FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
# Keys of metadata.json the exporter owns; callers may add others (and set "dataset").
_RESERVED = frozenset({
    "format", "format_version", "version", "created", "model_kind", "model_class",
    "preset", "image_shape", "latent_dim", "likelihood", "model_seed", "training_step",
    "config", "signatures", "log_likelihood", "tf_asvae_version", "tensorflow_version",
    "tensorflow_probability_version", "keras_version", "python_version"})


# ---------------------------------------------------------------------------- validation
def _dims(shape):
    return "[" + ", ".join("batch" if d is None else str(d) for d in shape) + "]"


def _after(checks, tensor):
    """``tensor`` once ``checks`` have passed (so no kernel sees an invalid input)."""
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _check_shape(tensor, expected, message):
    """Run-time shape check; ``expected`` a list with None for free dimensions.

    A loaded signature does not check the shapes a client sends, and the graph trusts
    the declared static shape.  Reading the shape through PlaceholderWithDefault (an
    identity with no static shape) keeps the check from being folded while tracing;
    TensorFlow's run-time optimiser may still fold it when the declared shape is fully
    known, which is why scalars are declared with an unknown shape (_ServingModule).
    tests/test_export.py checks every case through a loaded SavedModel.
    """
    runtime = tf.shape(tf.raw_ops.PlaceholderWithDefault(input=tensor,
                                                         shape=tf.TensorShape(None)))
    rank_ok = tf.equal(tf.size(runtime), len(expected))

    def dims_ok():
        conds = [tf.equal(runtime[i], d) for i, d in enumerate(expected) if d is not None]
        return tf.reduce_all(tf.stack(conds)) if conds else tf.constant(True)

    ok = tf.cond(rank_ok, dims_ok, lambda: tf.constant(False))
    check = tf.debugging.Assert(ok, [message, "Received shape:", runtime], summarize=8)
    return _after([check], tensor)


class _ServingModule(tf.Module):
    """The exported object: the model's variables and one tf.function per signature."""

    def __init__(self, model, chunk_size):
        super().__init__(name="tf_asvae_export")
        cfg = model.model_config
        # Plain Python state, not tracked: only the model's variables are saved (as
        # Keras' own ExportArchive does), not its optimizers or Keras object graph.
        for name, value in (("_model", model), ("_chunk_size", chunk_size),
                            ("_image_shape", [None] + list(cfg.image_shape)),
                            ("_latent_dim", cfg.latent_dim),
                            ("_where", f"(model kind {cfg.kind!r}, preset {cfg.preset!r})")):
            object.__setattr__(self, name, value)
        # The backing tf.Variables.  Tracking the Keras variable wrappers instead writes
        # a second, never-restored handle ("Variable_N") per variable into the graph,
        # and `saved_model_cli run` (a TF1 session) fails with "Could not find variable".
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        images = tf.TensorSpec(self._image_shape, tf.float32, name="images")
        codes = tf.TensorSpec([None, cfg.latent_dim], tf.float32, name="z")
        # Scalars are declared with an unknown shape: with a static shape [] the graph
        # optimiser would fold the rank check away, and a seed of shape [2] would then
        # fail deep inside the graph instead of at ``_scalar``'s clear message.
        seed = tf.TensorSpec(None, tf.int64, name="seed")
        count = tf.TensorSpec(None, tf.int32, name="num_images")
        samples = tf.TensorSpec(None, tf.int32, name="num_samples")
        fn = lambda f, sig: tf.function(f, input_signature=sig, autograph=False)  # noqa: E731
        self.encode = fn(self._encode, [images, seed])
        self.decode = fn(self._decode, [codes])
        self.sample = fn(self._sample, [count, seed])
        self.reconstruct = fn(self._reconstruct, [images])
        self.log_likelihood = fn(self._log_likelihood, [images, samples, seed])

    # ------------------------------------------------------------------ input checks
    def _images(self, images, name):
        h, w, c = self._image_shape[1:]
        images = _check_shape(
            images, self._image_shape,
            f"{name}: `images` must have shape {_dims(self._image_shape)} (float32 in "
            f"[0, 1]) {self._where}.")
        lo, hi = tf.reduce_min(images), tf.reduce_max(images)
        in_range = tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0))  # NaN fails
        check = tf.debugging.Assert(
            in_range, [f"{name}: `images` must lie in [0, 1] (and be finite); images of "
                       f"shape [batch, {h}, {w}, {c}] {self._where}. Received values in",
                       lo, hi])
        return _after([check], images)

    def _codes(self, z, name):
        expected = [None, self._latent_dim]
        z = _check_shape(z, expected, f"{name}: `z` must have shape {_dims(expected)} "
                                      f"(float32) {self._where}.")
        check = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(z)),
                                    [f"{name}: `z` must be finite."])
        return _after([check], z)

    def _scalar(self, value, name, arg, minimum=None, maximum=None):
        value = _check_shape(value, [], f"{name}: `{arg}` must be a scalar "
                                        f"({value.dtype.name}).")
        # A scalar again for the graph, through ops valid for any input shape: TF may
        # specialise the graph to the fed shapes, and an op whose shape inference fails
        # (stack, reshape to []) would then report before the check above could run.
        value = tf.reshape(value, [-1])[0]
        if minimum is None:
            return value
        check = tf.debugging.Assert(
            value >= minimum,
            [f"{name}: `{arg}` must be an integer >= {minimum}. Received:", value])
        checks = [check]
        if maximum is not None:
            checks.append(tf.debugging.Assert(
                value <= maximum,
                [f"{name}: `{arg}` must be at most {maximum} per call (about 1 GiB of "
                 "output; call repeatedly for more). Received:", value]))
        return _after(checks, value)

    # ------------------------------------------------------------------ signatures
    def _encode(self, images, seed):
        x = self._images(images, "encode")
        mean, z = self._model.encode(x, seed=self._scalar(seed, "encode", "seed"))
        return {"posterior_mean": mean, "z": z}

    def _decoder_outputs(self, z):
        model, cfg = self._model, self._model.model_config
        raw = model._decode_raw(z, training=False)
        out = {"images": dists.observation_mean(raw, cfg.likelihood, cfg.objective.min_scale,
                                                model._decoder_flow())}
        if cfg.likelihood == "bernoulli":
            out["logits"] = raw
        else:
            out["loc"], out["scale"] = dists.split_gaussian_params(
                raw, cfg.image_shape[2], cfg.objective.min_scale)
        return out

    def _decode(self, z):
        return self._decoder_outputs(self._codes(z, "decode"))

    def _sample(self, num_images, seed):
        n = self._scalar(num_images, "sample", "num_images", minimum=1,
                         maximum=self._model.max_images_per_call())
        z = self._model._prior_codes(n, self._scalar(seed, "sample", "seed"))
        return {"images": self._model.decode(z), "z": z}

    def _reconstruct(self, images):
        return {"reconstructions": self._model.reconstruct(self._images(images, "reconstruct"))}

    def _log_likelihood(self, images, num_samples, seed):
        x = self._images(images, "log_likelihood")
        k = self._scalar(num_samples, "log_likelihood", "num_samples", minimum=1)
        seed = self._scalar(seed, "log_likelihood", "seed")
        model = self._model
        est = importance_sampled_log_likelihood(
            x, model.posterior, lambda x, z: model.observation(z).log_prob(x),
            model._prior(), k, self._chunk_size, seed=seed, use_tf_function=False)
        return est._asdict()


# ---------------------------------------------------------------------------- metadata
def _signature_metadata(saved_dir):
    """{signature: {"inputs"|"outputs": {name: {"dtype", "shape"}}}} as written to
    ``saved_model.pb`` (shape -1: any size; scalar inputs are declared with an unknown
    shape, see _ServingModule, and listed as [])."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    defs = proto.meta_graphs[0].signature_def

    def spec(info):
        shape = info.tensor_shape
        dims = [] if shape.unknown_rank else [int(d.size) for d in shape.dim]
        return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": dims}

    return {name: {key: {k: spec(v) for k, v in sorted(getattr(defs[name], key).items())}
                   for key in ("inputs", "outputs")} for name in SIGNATURES}


def _proposal_note(model):
    if model.explicit_posterior:
        return "q(z|x), the model's encoder posterior (with its flow)"
    return ("r(z|x): moment-matched diagonal Gaussian of adaptive contrast from 64 "
            "encoder draws (the black-box AVB encoder has no density); an unbiased "
            "estimator of p(x) for any proposal, only its variance depends on r")


def _build_metadata(model, module, saved_dir, version, extra):
    cfg = model.model_config
    optimizer = getattr(model, "optimizer", None)
    step = int(optimizer.iterations.numpy()) if optimizer is not None else 0
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_kind": cfg.kind,
        "model_class": type(model).__name__,
        "preset": cfg.preset,
        "dataset": cfg.preset,
        "image_shape": list(cfg.image_shape),
        "latent_dim": cfg.latent_dim,
        "likelihood": cfg.likelihood,
        "model_seed": model.seed,
        "training_step": step,
        "signatures": _signature_metadata(saved_dir),
        "log_likelihood": {"estimator": "importance sampling (IWAE), nats per image",
                           "proposal": _proposal_note(model),
                           "chunk_size": module._chunk_size},
        "config": cfg.to_dict(),
        "tf_asvae_version": __version__,
        "tensorflow_version": tf.__version__,
        "tensorflow_probability_version": tfp.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
    }
    meta.update(extra)
    return meta


# ---------------------------------------------------------------------------- versions
def _versions(export_dir):
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(n) for n in os.listdir(export_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(export_dir, n)))


def latest_version(export_dir):
    """The highest integer version under ``export_dir`` holding a SavedModel, or None."""
    found = [v for v in _versions(export_dir)
             if tf.saved_model.contains_saved_model(os.path.join(export_dir, str(v)))]
    return found[-1] if found else None


def _owner_tag():
    """``<pid>-<random>-<host>``: the part of a temporary's name that says who made it."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}-{socket.gethostname()}"


def _owner_alive(tag):
    """Whether the exporter that named a temporary ``tag`` may still be running: True
    for a process on another host or one that is alive here; None for names of an
    unknown form (made by an older version)."""
    pid, sep, rest = tag.partition("-")
    _, sep2, host = rest.partition("-")
    if not (sep and sep2 and pid.isdigit()):
        return None
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Temporaries of an unknown owner (older versions named them .tmp-<hex>) are removed
# once they are this old: no export takes an hour to write.
_STALE_SECONDS = 3600


def remove_stale_temporaries(export_dir):
    """Removes what killed exports left in ``export_dir``: ``.tmp-*`` directories whose
    exporter is no longer running (on this host), and ``.old-<version>-*`` copies of an
    overwritten version, which are moved back where the kill left the version missing.
    Returns the names removed or restored."""
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        return []
    done = []
    for name in sorted(os.listdir(export_dir)):
        path = os.path.join(export_dir, name)
        if not os.path.isdir(path):
            continue
        if name.startswith(_TMP_PREFIX):
            alive = _owner_alive(name[len(_TMP_PREFIX):])
            if alive is None:
                try:
                    alive = time.time() - os.path.getmtime(path) < _STALE_SECONDS
                except OSError:
                    continue
            if not alive:
                shutil.rmtree(path, ignore_errors=True)
                done.append(name)
        elif name.startswith(_OLD_PREFIX):
            version, sep, tag = name[len(_OLD_PREFIX):].partition("-")
            if not (sep and version.isdigit()) or _owner_alive(tag) is not False:
                continue
            final = os.path.join(export_dir, version)
            if os.path.exists(final):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.rename(path, final)
            done.append(name)
    return done


def _commit(tmp, export_dir, version, overwrite, prepare):
    """Renames the finished ``tmp`` into place after ``prepare(version)`` (which
    writes the metadata naming it); returns the version directory."""
    if version is None:
        for _ in range(100):  # another exporter may take the next version first
            existing = _versions(export_dir)
            version = existing[-1] + 1 if existing else 1
            prepare(version)
            final = os.path.join(export_dir, str(version))
            try:
                os.rename(tmp, final)  # fails if ``final`` appeared and is non-empty
                return final
            except OSError:
                if not os.path.isdir(final):
                    raise
        raise RuntimeError(f"Could not find a free version under {export_dir!r}.")
    prepare(version)
    final = os.path.join(export_dir, str(version))
    if not os.path.exists(final):
        try:
            os.rename(tmp, final)
            return final
        except OSError:
            if not os.path.isdir(final):
                raise
            if not overwrite:
                raise FileExistsError(
                    f"Version {version} already exists in {export_dir!r}; pass "
                    "overwrite=True to replace it.") from None
    if not overwrite:
        raise FileExistsError(f"Version {version} already exists in {export_dir!r}; pass "
                              "overwrite=True to replace it.")
    old = os.path.join(export_dir, f"{_OLD_PREFIX}{version}-{_owner_tag()}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def export_saved_model(model, export_dir, *, version=None, metadata=None, overwrite=False,
                       log_likelihood_chunk_size=32):
    """Exports ``model`` to ``export_dir/<version>/`` with serving signatures.

    Args:
      model: a :class:`tf_asvae.BaseModel` (built or not; trained or not).
      export_dir: parent directory of the integer version directories.
      version: integer >= 1; default the next free one (1 in an empty directory).
      metadata: extra JSON-serialisable entries for ``metadata.json``, e.g.
        ``{"dataset": "mnist", "run": "..."}``; ``dataset`` defaults to the preset.
      overwrite: replace an existing ``version`` (atomically) instead of refusing.
      log_likelihood_chunk_size: importance samples evaluated at once by the
        ``log_likelihood`` signature (memory: chunk * batch decoder passes).

    Returns:
      The path of the version directory, holding ``saved_model.pb``, ``variables/``
      and ``metadata.json``.

    The export is atomic: everything is written to a hidden ``.tmp-*`` directory in
    ``export_dir`` and renamed to the version at the end; a failure removes it, so no
    partial version directory is ever visible (to TensorFlow Serving or to
    :func:`load_exported`).

    Raises:
      ValueError: bad ``model``/``version``/``metadata``.
      FileExistsError: ``version`` exists and ``overwrite`` is False.
    """
    if not isinstance(model, BaseModel):
        raise ValueError(f"model must be a tf_asvae model (BaseModel). "
                         f"Received: model={type(model).__name__}.")
    if version is not None and (isinstance(version, bool) or not isinstance(
            version, (int, np.integer)) or version < 1):
        raise ValueError(f"version must be an integer >= 1 or None. Received: version={version!r}.")
    if (isinstance(log_likelihood_chunk_size, bool)
            or not isinstance(log_likelihood_chunk_size, (int, np.integer))
            or log_likelihood_chunk_size < 1):
        raise ValueError("log_likelihood_chunk_size must be a positive integer. Received: "
                         f"log_likelihood_chunk_size={log_likelihood_chunk_size!r}.")
    extra = dict(metadata or {})
    clash = sorted(_RESERVED & set(extra))
    if clash:
        raise ValueError(f"metadata keys {clash} are written by the exporter. "
                         f"Received: metadata={metadata!r}.")
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable ({err}). "
                         f"Received: metadata={metadata!r}.") from None
    export_dir = os.fspath(export_dir)
    if version is not None and os.path.exists(os.path.join(export_dir, str(version))) \
            and not overwrite:
        raise FileExistsError(f"Version {version} already exists in {export_dir!r}; pass "
                              "overwrite=True to replace it.")
    _tio.check_writable_dir(export_dir, "export_dir")
    os.makedirs(export_dir, exist_ok=True)
    model.build_all()
    module = _ServingModule(model, int(log_likelihood_chunk_size))
    # tf.functions, not concrete functions: saving traces them (once) in its own context.
    signatures = {name: getattr(module, name) for name in SIGNATURES}
    signatures["serving_default"] = module.reconstruct
    remove_stale_temporaries(export_dir)
    tmp = os.path.join(export_dir, f"{_TMP_PREFIX}{_owner_tag()}")

    def write_metadata(v):
        meta = _build_metadata(model, module, tmp, v, extra)
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)

    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        return _commit(tmp, export_dir, None if version is None else int(version), overwrite,
                       write_metadata)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------- loading
def _resolve(path):
    if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
        raise ValueError("path must be an export directory or one of its version "
                         f"directories (a non-empty str or path). Received: path={path!r}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No export at {path!r}: the path does not exist.")
    if not tf.saved_model.contains_saved_model(path):
        version = latest_version(path)
        if version is None:
            raise FileNotFoundError(
                f"No SavedModel at {path!r} nor in an integer version directory below it.")
        path = os.path.join(path, str(version))
    variables = os.path.join(path, "variables", "variables.index")
    if not os.path.isfile(variables):
        raise FileNotFoundError(
            f"The SavedModel at {path!r} is incomplete: it has no {variables!r} (its "
            "variables were removed or never written). Export the model again.")
    return path


class ExportedModel:
    """A loaded export with the Keras model's ``encode/decode/sample/reconstruct``.

    Calls the SavedModel's signatures, so it needs only TensorFlow and the exported
    directory.  Outputs are tensors, as from the Keras model.
    """

    def __init__(self, path):
        self.path = _resolve(path)
        meta_path = os.path.join(self.path, METADATA_FILE)
        self.metadata = {}
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                self.metadata = json.load(f)
        self.saved_model = tf.saved_model.load(self.path)
        self.signatures = self.saved_model.signatures
        spec = self.signatures["encode"].structured_input_signature[1]["images"]
        self.image_shape = tuple(spec.shape.as_list()[1:])
        self.latent_dim = int(
            self.signatures["decode"].structured_input_signature[1]["z"].shape[-1])

    def __repr__(self):
        kind = self.metadata.get("model_kind", "?")
        return (f"ExportedModel(path={self.path!r}, kind={kind!r}, "
                f"image_shape={self.image_shape}, latent_dim={self.latent_dim})")

    # ------------------------------------------------------------------ input checks
    def _images(self, x):
        x = tf.convert_to_tensor(x)
        if x.shape.rank != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"Images must have shape [batch, {', '.join(map(str, self.image_shape))}] "
                f"for this export. Received: shape={tuple(x.shape)}.")
        if not x.dtype.is_floating:
            raise ValueError(f"Images must be float in [0, 1]. Received: dtype={x.dtype.name}.")
        values = x.numpy()
        bad = int(values.size - np.isfinite(values).sum())
        if bad:
            raise ValueError(f"Images must be finite floats in [0, 1]. Received: {bad} "
                             f"non-finite values (NaN or inf) in {values.size}.")
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(
                f"Images must lie in [0, 1]. Received: values in [{lo:.4g}, {hi:.4g}].")
        return tf.cast(x, tf.float32)

    @staticmethod
    def _int(value, name, minimum=None, maximum=None):
        """A Python or NumPy integer (not a bool or float) in [minimum, maximum]; the
        default maximum is the int32/int64 range of the signature's input."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                minimum is not None and value < minimum):
            need = "an integer" if minimum is None else f"an integer >= {minimum}"
            raise ValueError(f"{name} must be {need}. Received: {name}={value!r}.")
        if maximum is not None and value > maximum:
            raise ValueError(f"{name} must be at most {maximum} per call. "
                             f"Received: {name}={value!r}.")
        if not -2 ** 63 <= value < 2 ** 63:
            raise ValueError(f"{name} must fit in int64. Received: {name}={value!r}.")
        return int(value)

    def max_images_per_call(self):
        """The most images one ``sample`` call returns (as the Keras model's)."""
        return max(1, _MAX_OUTPUT_ELEMENTS // int(np.prod(self.image_shape)))

    # ------------------------------------------------------------------ the model API
    def encode(self, x, seed=0):
        """Images -> (posterior mean, a sample of z), as ``model.encode(x, seed)``."""
        out = self.signatures["encode"](images=self._images(x),
                                        seed=tf.constant(self._int(seed, "seed"), tf.int64))
        return out["posterior_mean"], out["z"]

    def decode(self, z, return_params=False):
        """Codes [B, latent_dim] -> mean images; with ``return_params`` the signature's
        whole output dict (adds ``logits``, or ``loc`` and ``scale``)."""
        z = tf.convert_to_tensor(z, tf.float32)
        if z.shape.rank != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"Codes must have shape [batch, {self.latent_dim}]. "
                             f"Received: shape={tuple(z.shape)}.")
        bad = int(np.size(z) - np.isfinite(z.numpy()).sum())
        if bad:
            raise ValueError(f"Codes must be finite. Received: {bad} non-finite values "
                             f"(NaN or inf) in codes of shape {tuple(z.shape)}.")
        out = self.signatures["decode"](z=z)
        return out if return_params else out["images"]

    def sample(self, n, seed=0, return_codes=False):
        """n images from z ~ p(z), as ``model.sample(n, seed)``; with ``return_codes``
        the pair (images, z)."""
        out = self.signatures["sample"](
            num_images=tf.constant(self._int(n, "n", 1, self.max_images_per_call()),
                                   tf.int32),
            seed=tf.constant(self._int(seed, "seed"), tf.int64))
        return (out["images"], out["z"]) if return_codes else out["images"]

    def reconstruct(self, x, seed=0):
        """Images -> decoder mean at the posterior mean, as ``model.reconstruct(x, seed)``
        (the seed matters only for AVB's Monte-Carlo posterior mean)."""
        seed = self._int(seed, "seed")
        if seed == 0:
            return self.signatures["reconstruct"](images=self._images(x))["reconstructions"]
        return self.decode(self.encode(x, seed)[0])

    def log_likelihood(self, x, num_samples=1000, seed=0):
        """Importance-sampled log p(x) per image (nats) with its Monte-Carlo standard
        error and effective sample size; see ``metadata["log_likelihood"]``."""
        out = self.signatures["log_likelihood"](
            images=self._images(x),
            num_samples=tf.constant(self._int(num_samples, "num_samples", 1, 2 ** 31 - 1),
                                    tf.int32),
            seed=tf.constant(self._int(seed, "seed"), tf.int64))
        return LogLikelihoodEstimate(**{k: out[k] for k in LogLikelihoodEstimate._fields})

    __call__ = reconstruct


def load_exported(path):
    """Loads an export: a version directory, or its parent (the latest version)."""
    return ExportedModel(path)
