"""The evaluation program: ``python -m trainers.evaluate`` (console script ``asvae-evaluate``).

::

    python -m trainers.evaluate --run-dir runs/asvae_mnist \\
        --metrics nll,ais,bpd,rmse,is,fid --num-samples 1000 --max-examples 1000 \\
        --classifier classifiers/mnist.keras --out runs/asvae_mnist/eval/report.json

Loads the run's best checkpoint (``RUN/best.keras``; ``--checkpoint`` picks another file
of the run) and its data configuration (``RUN/config.json``), computes the chosen
metrics on a split (``--split``, default ``test``) and writes

* ``--out`` (default ``RUN/eval/report.json``): every number with its estimator, its
  settings (K, chains, steps ...), the number of examples, its standard error where it
  has one, the split, the seed, the model and data configurations and the versions;
* ``<out stem>_samples.png`` and ``<out stem>_reconstructions.png`` beside it: a grid of
  samples and one of test images (odd rows) above their reconstructions (even rows).

Metrics (``--metrics``, comma separated):

``nll``
    Negative log-likelihood by importance sampling (IWAE bound, ``--num-samples`` K
    samples, chunked so that memory stays bounded). The proposal is the encoder's
    q(z|x) for models with an explicit posterior; for AVB it is the adaptive-contrast
    Gaussian r(z|x), and the report says so. For 8-bit natural images (CIFAR-10,
    ImageNet 64x64) with a Gaussian decoder the likelihood is the paper's discretised
    one, ``p(x = i | z) = P(x in [i/256, (i+1)/256] | z)``, and bits/dim are added.
``ais``
    Annealed importance sampling (any model, AVB included): ``--ais-steps``
    intermediate distributions, ``--ais-chains`` chains per example, HMC with
    ``--ais-leapfrog`` leapfrog steps and a tuned step size; estimate and standard error.
    Same likelihood as ``nll``; ``--ais-max-examples`` limits the (costly) example count.
``bpd``
    Bits per dimension of the discretised 8-bit likelihood (natural images). MNIST-type
    data have no 8-bit likelihood in the paper; there the entry is the NLL in nats.
``rmse``
    Reconstruction RMSE on the 0-255 scale (AS-VAE Table 2) and the reconstruction
    error in z, ``|z - E_q[z | x_theta(z)]|^2 / D`` for ``z ~ p(z)`` (entry
    ``latent_reconstruction``).
``is``, ``fid``
    The Inception-score formula on generated images and the Frechet distance between
    the classifier activations of the real and generated images (``--num-generated``,
    default: as many as real examples). ``--classifier`` is a ``.keras`` file from
    ``python -m trainers.train_classifier`` or ``inception_v3`` (Keras' ImageNet
    InceptionV3; weights downloaded once, or ``--inception-weights FILE``).

Evaluation runs every network in inference mode (no dropout, batch-norm moving
statistics, nothing updated) and is deterministic for a given ``--seed`` (and batch
size). Bad arguments, an unknown metric, a run directory without a checkpoint or
``config.json``, or a classifier that cannot be loaded exit with status 2 and a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Optional

import numpy as np

__all__ = ["METRICS", "EvalSpec", "build_parser", "evaluate", "main", "parse",
           "spec_from_args"]

METRICS = ("nll", "ais", "bpd", "rmse", "is", "fid", "diag")
CONFIG_FILE = "config.json"
BEST_FILE = "best.keras"
REPORT_FORMAT = "tf_asvae.evaluation.report/1"


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """A validated evaluation job (see ``build_parser`` for the meaning of each field)."""

    run_dir: str
    checkpoint: str
    metrics: tuple
    out: str
    split: str = "test"
    num_samples: int = 1000
    max_examples: Optional[int] = None
    batch_size: int = 100
    chunk_size: Optional[int] = None
    seed: int = 0
    ais_steps: int = 1000
    ais_chains: int = 16
    ais_leapfrog: int = 10
    ais_step_size: float = 0.05
    ais_max_examples: Optional[int] = None
    ais_adaptation_steps: Optional[int] = None
    proposal_samples: int = 64
    classifier: Optional[str] = None
    inception_weights: Optional[str] = None
    num_generated: Optional[int] = None
    num_splits: int = 10
    latent_codes: Optional[int] = None
    num_images: int = 64
    data_dir: Optional[str] = None
    manual_dir: Optional[str] = None
    verbose: int = 1


# --------------------------------------------------------------------------------------
# Arguments


def _metrics(text: str) -> tuple:
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"Unknown metric(s) {unknown}. Accepted: {list(METRICS)} "
                         f"(comma separated). Received: --metrics {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asvae-evaluate",
        description="Evaluate a trained tf_asvae run: importance-sampled and AIS "
                    "likelihoods, bits/dim, reconstruction RMSE, Inception-score formula "
                    "and Frechet distance; writes report.json and PNG grids.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="run directory of trainers.train")
    parser.add_argument("--checkpoint", default=BEST_FILE,
                        help="model file inside the run directory (or a path)")
    parser.add_argument("--metrics", default="nll,rmse",
                        help=f"comma-separated subset of {','.join(METRICS)}")
    parser.add_argument("--out", default=None,
                        help="report path (default: RUN/eval/report.json)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples K per example (nll, bpd)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="evaluate the first N examples of the split (default: all)")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per batch")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="importance samples decoded at once (default: about 4096 "
                             "decoder evaluations per chunk)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    group = parser.add_argument_group("annealed importance sampling")
    group.add_argument("--ais-steps", type=int, default=1000,
                       help="intermediate distributions (HMC transitions)")
    group.add_argument("--ais-chains", type=int, default=16, help="chains per example")
    group.add_argument("--ais-leapfrog", type=int, default=10,
                       help="leapfrog steps per HMC transition")
    group.add_argument("--ais-step-size", type=float, default=0.05,
                       help="initial HMC step size (then tuned per example)")
    group.add_argument("--ais-max-examples", type=int, default=None,
                       help="examples for AIS (default: --max-examples)")
    group.add_argument("--ais-adaptation-steps", type=int, default=None,
                       help="transitions of the preliminary step-size tuning run "
                            "(default: max(ais-steps / 2, 20))")
    group = parser.add_argument_group("proposal, sample quality, images")
    group.add_argument("--proposal-samples", type=int, default=64,
                       help="AVB: encoder draws that fix r(z|x)'s mean and deviation")
    group.add_argument("--classifier", default=None,
                       help="for is/fid: a .keras file from trainers.train_classifier, "
                            "or 'inception_v3'")
    group.add_argument("--inception-weights", default=None,
                       help="local InceptionV3 ImageNet weights file (no download)")
    group.add_argument("--num-generated", type=int, default=None,
                       help="generated images for is/fid (default: the real example count)")
    group.add_argument("--num-splits", type=int, default=10,
                       help="splits for the mean/std of the Inception-score formula")
    group.add_argument("--latent-codes", type=int, default=None,
                       help="codes z ~ p(z) for the reconstruction error in z "
                            "(default: the real example count)")
    group.add_argument("--num-images", type=int, default=64,
                       help="images per PNG grid (0: no grids)")
    group = parser.add_argument_group("data location (default: as in RUN/config.json)")
    group.add_argument("--data-dir", default=None, help="TFDS directory of prepared data")
    group.add_argument("--manual-dir", default=None, help="directory of downloaded files")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    return parser


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    """Validates arguments and the run directory (ValueError naming the problem)."""
    metrics = _metrics(args.metrics)
    for name in ("num_samples", "batch_size", "ais_steps", "ais_chains", "ais_leapfrog",
                 "proposal_samples", "num_splits"):
        value = getattr(args, name)
        if value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer. "
                             f"Received: {value}")
    for name in ("max_examples", "chunk_size", "ais_max_examples", "ais_adaptation_steps",
                 "num_generated", "latent_codes"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer. "
                             f"Received: {value}")
    if args.num_images < 0:
        raise ValueError(f"--num-images must be >= 0. Received: {args.num_images}")
    if not (args.ais_step_size > 0 and math.isfinite(args.ais_step_size)):
        raise ValueError(f"--ais-step-size must be positive. Received: {args.ais_step_size}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0. Received: {args.seed}")
    if ("is" in metrics or "fid" in metrics) and not args.classifier:
        raise ValueError(
            "The metrics 'is' and 'fid' need --classifier: a .keras file made by `python -m "
            "trainers.train_classifier --dataset NAME --out PATH.keras`, or 'inception_v3'.")
    run_dir = os.fspath(args.run_dir)
    if not os.path.isdir(run_dir):
        raise ValueError(f"No run directory at {run_dir!r}. Received: --run-dir {run_dir}")
    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        raise ValueError(f"The run directory {run_dir!r} has no {CONFIG_FILE} (written by "
                         "trainers.train); is it a run directory?")
    checkpoint = args.checkpoint
    if not os.path.isabs(checkpoint) and not os.path.exists(checkpoint):
        checkpoint = os.path.join(run_dir, checkpoint)
    if not os.path.isfile(checkpoint):
        present = sorted(f for f in os.listdir(run_dir) if f.endswith(".keras"))
        hint = (f" It holds {present}: pass one with --checkpoint." if present
                else " Train it first (python -m trainers.train) or wait for its first "
                     "validated epoch.")
        raise ValueError(f"The run directory {run_dir!r} has no checkpoint {args.checkpoint!r}."
                         + hint)
    _check_checkpoint(checkpoint, run_dir)
    _check_memory(args, run_dir)
    if args.out is not None and not str(args.out).strip():
        raise ValueError("--out must be a file path. Received: --out ''")
    out = args.out or os.path.join(run_dir, "eval", "report.json")
    if os.path.isdir(out):
        raise ValueError(f"--out must be a file path. Received: --out {out}")
    from tf_asvae import io as tio

    tio.check_writable_dir(os.path.dirname(os.path.abspath(out)), "the directory of --out")
    return EvalSpec(
        run_dir=run_dir, checkpoint=checkpoint, metrics=metrics, out=os.fspath(out),
        split=args.split, num_samples=args.num_samples, max_examples=args.max_examples,
        batch_size=args.batch_size, chunk_size=args.chunk_size, seed=args.seed,
        ais_steps=args.ais_steps, ais_chains=args.ais_chains,
        ais_leapfrog=args.ais_leapfrog, ais_step_size=float(args.ais_step_size),
        ais_max_examples=args.ais_max_examples,
        ais_adaptation_steps=args.ais_adaptation_steps, proposal_samples=args.proposal_samples,
        classifier=args.classifier, inception_weights=args.inception_weights,
        num_generated=args.num_generated, num_splits=args.num_splits,
        latent_codes=args.latent_codes, num_images=args.num_images,
        data_dir=args.data_dir, manual_dir=args.manual_dir, verbose=args.verbose)


#: The most decoded values one importance-sampling chunk may hold (2**28 floats, 1 GiB).
MAX_CHUNK_VALUES = 2 ** 28


def _check_memory(args, run_dir: str) -> None:
    """Bounds what is decoded at once (``--chunk-size`` x ``--batch-size`` images) up
    front, with the image size from the run's config.json."""
    try:
        with open(os.path.join(run_dir, CONFIG_FILE)) as f:
            shape = json.load(f)["model"]["image_shape"]
        pixels = int(np.prod(shape))
    except (OSError, ValueError, KeyError, TypeError):
        return
    for name, per_example in (("chunk_size", args.chunk_size), ("ais_chains", args.ais_chains)):
        if per_example is None:
            continue
        values = per_example * args.batch_size * pixels
        if values > MAX_CHUNK_VALUES:
            most = max(1, MAX_CHUNK_VALUES // (args.batch_size * pixels))
            raise ValueError(
                f"--{name.replace('_', '-')} {per_example} with --batch-size "
                f"{args.batch_size} decodes {values:,} values at once (images of "
                f"{pixels} pixels), more than {MAX_CHUNK_VALUES:,} (1 GiB). Lower "
                f"--{name.replace('_', '-')} to at most {most} or lower --batch-size. "
                f"Received: {name}={per_example}.")


def _check_checkpoint(checkpoint: str, run_dir: str) -> None:
    """Up front, without TensorFlow: the checkpoint is a whole ``.keras`` archive of a
    tf_asvae model of the kind and preset the run directory's config.json names."""
    from tf_asvae import io as tio

    problem = tio.keras_file_problem(checkpoint)
    if problem is not None:
        present = sorted(f for f in os.listdir(run_dir) if f.endswith(".keras")
                         and tio.keras_file_problem(os.path.join(run_dir, f)) is None)
        hint = f" Whole checkpoints in the run: {present}." if present else ""
        raise ValueError(f"The checkpoint {checkpoint!r} cannot be loaded: {problem}.{hint}")
    import zipfile

    try:
        with zipfile.ZipFile(checkpoint) as archive:
            saved = json.loads(archive.read("config.json"))
        model = saved["config"]["config"]
        kind, preset = model["kind"], model.get("preset")
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"The checkpoint {checkpoint!r} does not hold a tf_asvae model "
                         "(its config.json has no model configuration).") from None
    try:
        with open(os.path.join(run_dir, CONFIG_FILE)) as f:
            run_model = json.load(f).get("model", {})
    except (OSError, ValueError, AttributeError):
        return  # reported with its own message when the run is loaded
    if not isinstance(run_model, dict):
        return
    expected = (run_model.get("kind"), run_model.get("preset"))
    if None not in expected and (kind, preset) != expected:
        raise ValueError(
            f"The checkpoint {checkpoint!r} holds a {kind!r} model ({preset!r} preset) but "
            f"the run directory {run_dir!r} trained a {expected[0]!r} model "
            f"({expected[1]!r} preset). Received: --checkpoint {checkpoint}; pass a "
            "checkpoint of this run, or the run directory it came from.")


def parse(argv=None) -> EvalSpec:
    """Command-line arguments -> :class:`EvalSpec` (ValueError on a bad value)."""
    from trainers import _cli

    parser = build_parser()
    return spec_from_args(parser.parse_args(_cli.join_negative_numbers(parser, argv)))


# --------------------------------------------------------------------------------------
# Helpers


def _clean(value):
    """JSON-safe: NumPy scalars -> Python, non-finite floats -> None, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    return value


def _mean_and_se(values) -> tuple:
    values = np.asarray(values, np.float64).reshape(-1)
    n = values.size
    mean = float(values.mean()) if n else float("nan")
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return mean, se


def _mc_se_of_mean(per_example_se) -> float:
    """Monte-Carlo standard error of a mean of independent per-example estimates."""
    se = np.asarray(per_example_se, np.float64).reshape(-1)
    if se.size == 0 or not np.all(np.isfinite(se)):
        return float("nan")
    return float(math.sqrt(np.sum(se ** 2)) / se.size)


def _batch_seed(seed: int, metric: int, index: int):
    import tensorflow as tf

    base = tf.constant([seed, metric], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, index)


def _log(spec: EvalSpec, text: str) -> None:
    if spec.verbose:
        print(text, file=sys.stderr, flush=True)


def _write_json(path: str, data: dict) -> None:
    from tf_asvae import io as tio

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tio.write_json_atomic(path, data, allow_nan=False)


def _write_png(path: str, grid) -> None:
    import tensorflow as tf

    from tf_asvae import io as tio

    png = tf.io.encode_png(tf.cast(tf.round(np.clip(grid, 0, 1) * 255.0), tf.uint8))
    tio.write_bytes_atomic(path, png.numpy())


# --------------------------------------------------------------------------------------
# The evaluation


class _Run:
    """The loaded run: model, data configuration and data iterators."""

    def __init__(self, spec: EvalSpec):
        import keras

        import tf_asvae  # noqa: F401  (registers the model classes)
        from tf_asvae import data as D

        self.spec = spec
        with open(os.path.join(spec.run_dir, CONFIG_FILE)) as f:
            try:
                self.run_config = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{CONFIG_FILE} of {spec.run_dir!r} is not valid JSON: {e}")
        if not isinstance(self.run_config, dict) or "data" not in self.run_config:
            raise ValueError(f"{CONFIG_FILE} of {spec.run_dir!r} has no 'data' section. "
                             f"Received keys: {sorted(self.run_config) if isinstance(self.run_config, dict) else self.run_config!r}")
        data = dict(self.run_config["data"])
        if spec.data_dir is not None:
            data["data_dir"] = spec.data_dir
        if spec.manual_dir is not None:
            data["manual_dir"] = spec.manual_dir
        data.update(batch_size=spec.batch_size, max_examples=None)
        self.data = D.DataConfig.from_dict(data)
        try:
            self.model = keras.saving.load_model(spec.checkpoint, compile=False)
        except Exception as e:
            raise ValueError(f"Could not load the checkpoint {spec.checkpoint!r}: "
                             f"{type(e).__name__}: {e}") from e
        if not hasattr(self.model, "model_config"):
            raise ValueError(f"{spec.checkpoint!r} does not hold a tf_asvae model. "
                             f"Received: {type(self.model).__name__}")
        self.model.trainable = False
        shape = tuple(self.model.model_config.image_shape)
        if shape != tuple(self.data.spec.image_shape):
            raise ValueError(f"The model takes {shape} images but data set "
                             f"{self.data.name!r} has {tuple(self.data.spec.image_shape)}.")
        self.natural = self.data.spec.natural
        self.num_dims = int(np.prod(shape))
        self.available = D.num_examples(self.data, spec.split)

    def batches(self, limit: Optional[int]):
        """Yields ``(images, raw uint8 or None)`` batches of the first ``limit`` examples."""
        import dataclasses as dc

        from tf_asvae import data as D

        config = dc.replace(self.data, max_examples=limit)
        ds = D.load_split(config, self.spec.split, training=False, with_raw=self.natural)
        for element in ds:
            if self.natural:
                yield element[0], element[1]
            else:
                yield element, None

    def padded_batches(self, limit: Optional[int]):
        """Like :meth:`batches`, but a short last batch is padded (repeating its last
        example) to the full batch size, so that compiled estimators are traced once;
        yields ``(images, raw or None, number of real examples)``."""
        import tensorflow as tf

        size = self.spec.batch_size
        for x, raw in self.batches(limit):
            n = int(x.shape[0])
            if n < size:
                idx = tf.minimum(tf.range(size), n - 1)
                x = tf.gather(x, idx)
                raw = None if raw is None else tf.gather(raw, idx)
            yield x, raw, n

    def count(self, limit: Optional[int]) -> int:
        return self.available if limit is None else min(limit, self.available)


def _likelihood_label(run: _Run, kind: str) -> str:
    cfg = run.model.model_config
    if kind == "discretized":
        return ("discretised 8-bit Gaussian: p(x = i | z) = P(x in [i/256, (i+1)/256] | z) "
                "(AS-VAE Sec. 5.1), the proposal fed the bin centres (i + 0.5) / 256")
    if cfg.likelihood == "bernoulli":
        pixels = run.data.spec.pixels
        if pixels == "intensity" and run.data.binarize == "none":
            return ("Bernoulli p(x|z) with grey levels in [0, 1] as soft targets (the "
                    "paper's MNIST convention; a cross-entropy, not a density of "
                    "discrete data)")
        return "Bernoulli p(x|z) on binary pixels"
    extra = " with a planar flow on p(x|z)" if cfg.flows.decoder_flow_length else ""
    return f"Gaussian density p(x|z){extra} on images scaled to [0, 1]"


def _likelihood_kind(run: _Run) -> str:
    from tf_asvae.evaluation import model_metrics as MM

    if run.natural and MM.discretized_available(run.model) is None:
        return "discretized"
    return "model"


def _importance_sampling(run: _Run, cache: dict) -> dict:
    """Per-example IS results over the evaluated examples (computed once)."""
    if "is" in cache:
        return cache["is"]
    from tf_asvae.evaluation import model_metrics as MM

    spec, model = run.spec, run.model
    kind = _likelihood_kind(run)
    ll, se, ess, proposal = [], [], [], None
    start = time.time()
    for i, (x, raw, n) in enumerate(run.padded_batches(spec.max_examples)):
        seed = _batch_seed(spec.seed, 1, i)
        kwargs = dict(chunk_size=spec.chunk_size, seed=seed,
                      proposal_samples=spec.proposal_samples)
        if kind == "discretized":
            est = MM.discretized_log_likelihood(model, x, raw, spec.num_samples, **kwargs)
        else:
            est = MM.log_likelihood(model, x, spec.num_samples, **kwargs)
        ll.append(est.log_likelihood.numpy()[:n])
        se.append(est.standard_error.numpy()[:n])
        ess.append(est.effective_sample_size.numpy()[:n])
        proposal = est.proposal
        _log(spec, f"  nll: batch {i + 1}, {sum(len(v) for v in ll)} examples, "
                   f"{time.time() - start:.0f}s")
    cache["is"] = dict(kind=kind, log_likelihood=np.concatenate(ll), se=np.concatenate(se),
                       ess=np.concatenate(ess), proposal=proposal,
                       seconds=time.time() - start)
    return cache["is"]


def _nll_entry(run: _Run, res: dict) -> dict:
    spec = run.spec
    nll, se = _mean_and_se(-res["log_likelihood"])
    mc = _mc_se_of_mean(res["se"])
    entry = {
        "value": nll,
        "unit": "nats per example",
        "standard_error": se,
        "standard_error_kind": "over examples: std(per-example NLL) / sqrt(N)",
        "monte_carlo_standard_error": mc,
        "estimator": "importance sampling (IWAE bound): -log (1/K) sum_k p(x|z_k) p(z_k) / "
                     "q(z_k|x), z_k ~ proposal; a stochastic upper bound on the NLL",
        "proposal": res["proposal"],
        "likelihood": _likelihood_label(run, res["kind"]),
        "num_samples": spec.num_samples,
        "num_examples": int(res["log_likelihood"].size),
        "mean_effective_sample_size": float(np.mean(res["ess"])),
        "seconds": round(res["seconds"], 2),
    }
    if res["kind"] == "discretized":
        entry["bits_per_dim"] = nll / (run.num_dims * math.log(2.0))
        entry["bits_per_dim_standard_error"] = se / (run.num_dims * math.log(2.0))
    return entry


def _bpd_entry(run: _Run, res: dict) -> dict:
    nll = _nll_entry(run, res)
    if res["kind"] == "discretized":
        scale = run.num_dims * math.log(2.0)
        entry = dict(nll)
        entry.update(
            value=nll["value"] / scale, unit="bits per dimension",
            standard_error=nll["standard_error"] / scale,
            monte_carlo_standard_error=nll["monte_carlo_standard_error"] / scale,
            nll_nats=nll["value"], num_dims=run.num_dims,
            estimator="NLL of the discretised 8-bit likelihood / (D ln 2), NLL by "
                      "importance sampling (IWAE bound)")
        for key in ("bits_per_dim", "bits_per_dim_standard_error"):
            entry.pop(key, None)
        return entry
    entry = dict(nll)
    if run.natural:
        from tf_asvae.evaluation import model_metrics as MM

        reason = MM.discretized_available(run.model)
        entry["note"] = (f"bits/dim need the discretised 8-bit likelihood, unavailable here "
                         f"({reason}); the value is the NLL in nats")
    else:
        entry["note"] = ("MNIST-type data: the likelihood is reported in nats (the paper's "
                         "unit); bits/dim are defined for 8-bit natural images")
    return entry


def _ais_entry(run: _Run) -> dict:
    from tf_asvae.evaluation import model_metrics as MM

    spec = run.spec
    limit = spec.ais_max_examples or spec.max_examples
    kind = _likelihood_kind(run)
    ll, se, acc = [], [], []
    start = time.time()
    for i, (x, raw, n) in enumerate(run.padded_batches(limit)):
        est = MM.ais(run.model, x, x_uint8=raw if kind == "discretized" else None,
                     num_steps=spec.ais_steps, num_chains=spec.ais_chains,
                     num_leapfrog_steps=spec.ais_leapfrog, step_size=spec.ais_step_size,
                     num_adaptation_steps=spec.ais_adaptation_steps,
                     seed=_batch_seed(spec.seed, 2, i))
        ll.append(est.log_likelihood.numpy()[:n])
        se.append(est.standard_error.numpy()[:n])
        acc.append(est.acceptance_rate.numpy()[:n])
        _log(spec, f"  ais: batch {i + 1}, {sum(len(v) for v in ll)} examples, "
                   f"{time.time() - start:.0f}s")
    ll = np.concatenate(ll)
    nll, se_examples = _mean_and_se(-ll)
    entry = {
        "value": nll,
        "unit": "nats per example",
        "standard_error": se_examples,
        "standard_error_kind": "over examples: std(per-example NLL) / sqrt(N)",
        "monte_carlo_standard_error": _mc_se_of_mean(np.concatenate(se)),
        "estimator": "annealed importance sampling (Neal 2001; Wu et al. 2017): geometric "
                     "path p(z) p(x|z)^beta, beta linear in [0, 1], HMC transitions with a "
                     "per-example step size tuned in a separate preliminary run; "
                     "-logmeanexp over chains of the AIS weights",
        "likelihood": _likelihood_label(run, kind),
        "num_steps": spec.ais_steps,
        "num_chains": spec.ais_chains,
        "num_leapfrog_steps": spec.ais_leapfrog,
        "initial_step_size": spec.ais_step_size,
        "num_adaptation_steps": spec.ais_adaptation_steps or max(spec.ais_steps // 2, 20),
        "num_examples": int(ll.size),
        "mean_acceptance_rate": float(np.mean(np.concatenate(acc))),
        "seconds": round(time.time() - start, 2),
    }
    if kind == "discretized":
        entry["bits_per_dim"] = nll / (run.num_dims * math.log(2.0))
        entry["bits_per_dim_standard_error"] = se_examples / (run.num_dims * math.log(2.0))
    return entry


def _rmse_entries(run: _Run) -> dict:
    from tf_asvae.evaluation import model_metrics as MM

    spec = run.spec
    start = time.time()
    per = []
    for i, (x, _) in enumerate(run.batches(spec.max_examples)):
        per.append(MM.reconstruction_rmse(run.model, x, seed=spec.seed, per_example=True)
                   .numpy())
    mse = np.concatenate(per).astype(np.float64) ** 2
    mean_mse, se_mse = _mean_and_se(mse)
    rmse = math.sqrt(mean_mse)
    x_entry = {
        "value": rmse,
        "unit": "0-255 pixel scale",
        "standard_error": se_mse / (2.0 * rmse) if rmse > 0 else float("nan"),
        "standard_error_kind": "delta method from the per-image mean squared errors",
        "estimator": "sqrt(mean over images and pixels of (255 x - 255 x_hat)^2), x_hat = "
                     "model.reconstruct(x): the decoder mean at the posterior mean code",
        "num_examples": int(mse.size),
        "seconds": round(time.time() - start, 2),
    }
    start = time.time()
    codes = spec.latent_codes or run.count(spec.max_examples)
    err = MM.latent_reconstruction_error(run.model, codes, seed=spec.seed,
                                         batch_size=spec.batch_size)
    mean, se = _mean_and_se(err)
    z_entry = {
        "value": mean,
        "unit": "squared error per latent unit",
        "standard_error": se,
        "rmse": math.sqrt(mean),
        "estimator": "|z - E_q[z | x_theta(z)]|^2 / D for z ~ p(z), x_theta(z) the decoder "
                     "mean image (clipped to [0, 1]), the posterior mean from model.encode",
        "num_samples": int(codes),
        "seconds": round(time.time() - start, 2),
    }
    return {"rmse": x_entry, "latent_reconstruction": z_entry}


def _sample_quality_entries(run: _Run, classifier) -> dict:
    from tf_asvae.evaluation import classifiers as C
    from tf_asvae.evaluation import model_metrics as MM

    spec = run.spec
    start = time.time()
    real_logits, real_acts = MM.classifier_outputs(
        classifier, (x for x, _ in run.batches(spec.max_examples)))
    n_gen = spec.num_generated or len(real_logits)
    fake = MM.generate(run.model, n_gen, seed=spec.seed, batch_size=spec.batch_size)
    fake_logits, fake_acts = MM.classifier_outputs(
        classifier, (fake[i:i + spec.batch_size] for i in range(0, n_gen, spec.batch_size)))
    q = MM.sample_quality(real_logits, real_acts, fake_logits, fake_acts,
                          num_splits=spec.num_splits)
    meta = {}
    if spec.classifier and os.path.isfile(spec.classifier):
        meta = C.read_metadata(spec.classifier)
    about = {"classifier": classifier.name,
             "classifier_path": spec.classifier if os.path.isfile(spec.classifier or "") else None,
             "classifier_metadata": meta or None}
    seconds = round(time.time() - start, 2)
    splits = q["classifier_score_splits"]
    out = {}
    if "is" in spec.metrics:
        out["is"] = {
            "value": q["classifier_score"],
            "unit": "Inception-score formula exp(E_x KL(p(y|x) || p(y)))",
            "standard_error": None,
            "splits_mean": splits[0] if splits else None,
            "splits_std": splits[1] if splits else None,
            "num_splits": spec.num_splits if splits else None,
            "real_data_value": q["classifier_score_real"],
            "estimator": "TF-GAN classifier_score_from_logits on all generated images "
                         "(decoder means at z ~ p(z)); splits_mean/std: Salimans et al.'s "
                         "protocol; real_data_value: the same score of the real images",
            "num_samples": int(n_gen),
            "num_real_examples": int(len(real_logits)),
            "seconds": seconds,
            **about,
        }
    if "fid" in spec.metrics:
        out["fid"] = {
            "value": q["frechet_distance"],
            "unit": "squared Frechet distance of classifier activations",
            "standard_error": None,
            "estimator": "TF-GAN frechet_classifier_distance_from_activations between the "
                         "real images of the split and the generated images (biased upwards "
                         "for finite sets: compare at equal sizes)",
            "activations_dim": int(real_acts.shape[1]),
            "num_samples": int(n_gen),
            "num_real_examples": int(len(real_logits)),
            "seconds": seconds,
            **about,
        }
    return out


# What each diagnostic of BaseModel.diagnose means, for the report.
_DIAGNOSTICS = {
    "kl_exact": ("nats", "E[log q(z|x) - log p(z)] at z ~ q(z|x) (explicit q only)"),
    "posterior_scale": ("standard deviation", "median over latent dimensions of q(z|x)'s "
                        "standard deviation (AVB: of the moments of its draws), mean over "
                        "examples; a collapsed posterior sits at min_scale"),
    "recon_gap": ("nats", "E[-log p(x|z)] in inference mode minus training mode (batch "
                  "statistics), same images and noise"),
    "d1_ratio_error": ("nats", "mean |(f1(x, z) - f1(x, z')) - exact| for z ~ q(z|x), "
                       "z' ~ p(z); exact = [log q(z|x) - log p(z)] - [log q(z'|x) - log p(z')]"),
    "d1_ratio_scale": ("nats", "mean |exact| of the same contrast"),
    "d1_ratio_rel": ("ratio", "d1_ratio_error / d1_ratio_scale"),
}


def _diagnostic_entries(run: _Run) -> dict:
    """The game's health diagnostics (``BaseModel.diagnose``, inference mode) and the
    critics' test-step estimates beside them (``adv_x``: f_psi1's mean logit, which
    stands in for at least ``kl_exact``; ``adv``: AVB's T)."""
    spec = run.spec
    start = time.time()
    x = np.concatenate([np.asarray(b) for b, _ in run.batches(spec.max_examples)])
    values = run.model.diagnose(x, seed=spec.seed)
    seconds = round(time.time() - start, 2)
    out = {}
    for name in tuple(run.model.diagnostic_names()) + ("adv_x", "adv_z", "adv"):
        if name not in values:
            continue
        unit, estimator = _DIAGNOSTICS.get(
            name, ("nats", "the critic's mean logit on its positive pairs (test step)"))
        out[name] = {"value": values[name], "unit": unit, "estimator": estimator,
                     "standard_error": None, "num_examples": int(len(x)),
                     "seconds": seconds}
    return out


def _image_grids(run: _Run, stem: str) -> dict:
    from tf_asvae.callbacks import image_grid
    from tf_asvae.evaluation import model_metrics as MM

    spec = run.spec
    n = spec.num_images
    files = {}
    samples = MM.generate(run.model, n, seed=spec.seed, batch_size=spec.batch_size)
    files["samples"] = stem + "_samples.png"
    _write_png(files["samples"], image_grid(samples))
    x = np.concatenate([np.asarray(b) for b, _ in run.batches(n)])
    recon = np.clip(np.asarray(run.model.reconstruct(x, seed=spec.seed)), 0.0, 1.0)
    columns = int(math.ceil(math.sqrt(len(x))))
    rows = []
    for start in range(0, len(x), columns):
        for block in (x, recon):
            row = np.zeros((columns,) + block.shape[1:], np.float32)
            part = block[start:start + columns]
            row[:len(part)] = part
            rows.append(row)
    files["reconstructions"] = stem + "_reconstructions.png"
    _write_png(files["reconstructions"], image_grid(np.concatenate(rows), columns))
    return {k: os.path.basename(v) for k, v in files.items()}


def evaluate(spec: EvalSpec) -> dict:
    """Runs ``spec``, writes the report and the PNG grids; returns the report dict."""
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tf_asvae
    from tf_asvae.evaluation import classifiers as C

    begin = time.time()
    classifier = None
    if "is" in spec.metrics or "fid" in spec.metrics:
        try:
            classifier = C.load_classifier(spec.classifier,
                                           inception_weights=spec.inception_weights)
        except C.ClassifierUnavailableError as e:
            raise ValueError(str(e)) from e
    run = _Run(spec)
    if classifier is not None and classifier.image_shape is not None and \
            classifier.image_shape != tuple(run.model.model_config.image_shape):
        raise ValueError(
            f"The classifier {spec.classifier!r} takes {classifier.image_shape} images, the "
            f"model makes {tuple(run.model.model_config.image_shape)}. Train one for "
            f"{run.data.name!r} (python -m trainers.train_classifier) or use inception_v3.")
    model = run.model
    _log(spec, f"asvae-evaluate: {type(model).__name__} from {spec.checkpoint}, "
               f"{run.count(spec.max_examples)} {spec.split} examples of {run.data.name}")
    metrics: dict[str, Any] = {}
    cache: dict = {}
    for name in spec.metrics:
        t = time.time()
        if name == "nll":
            metrics["nll"] = _nll_entry(run, _importance_sampling(run, cache))
        elif name == "bpd":
            metrics["bpd"] = _bpd_entry(run, _importance_sampling(run, cache))
        elif name == "ais":
            metrics["ais"] = _ais_entry(run)
        elif name == "rmse":
            metrics.update(_rmse_entries(run))
        elif name in ("is", "fid"):
            if name in metrics:
                continue
            metrics.update(_sample_quality_entries(run, classifier))
        elif name == "diag":
            diagnostics = _diagnostic_entries(run)
            metrics.update(diagnostics)
        shown = [k for k in metrics if k == name or (name == "rmse" and k == "latent_reconstruction")
                 or (name in ("is", "fid") and k in ("is", "fid"))
                 or (name == "diag" and k in diagnostics)]
        for key in shown:
            e = metrics[key]
            se = e.get("standard_error")
            se_text = f" +- {se:.4g}" if isinstance(se, float) and math.isfinite(se) else ""
            extra = f"; proposal {e['proposal']}" if "proposal" in e else ""
            _log(spec, f"{key}: {e['value']:.6g}{se_text} ({e['unit']}{extra}) "
                       f"[{time.time() - t:.0f}s]")

    stem = os.path.splitext(os.path.abspath(spec.out))[0]
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    images = _image_grids(run, stem) if spec.num_images > 0 else {}
    report = {
        "format": REPORT_FORMAT,
        "run_dir": os.path.abspath(spec.run_dir),
        "checkpoint": os.path.abspath(spec.checkpoint),
        "model_kind": model.model_config.kind,
        "explicit_posterior": bool(model.explicit_posterior),
        "model_config": model.model_config.to_dict(),
        "data": run.data.to_dict(),
        "split": spec.split,
        "num_examples": run.count(spec.max_examples),
        "seed": spec.seed,
        "run_seed": run.run_config.get("seed"),
        "training": run.run_config.get("training"),
        "settings": dataclasses.asdict(spec),
        "metrics": metrics,
        "images": images,
        "versions": {"tf_asvae": tf_asvae.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "tensorflow_probability": tfp.__version__},
        "seconds": round(time.time() - begin, 2),
    }
    report = _clean(report)
    _write_json(spec.out, report)
    _log(spec, f"asvae-evaluate: wrote {spec.out}")
    return report


def main(argv=None) -> int:
    from trainers import _cli

    parser = build_parser()
    args = parser.parse_args(_cli.join_negative_numbers(parser, argv))
    try:
        spec = spec_from_args(args)
        evaluate(spec)
    except ValueError as e:  # includes tf_asvae.data.DataError
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except MemoryError as e:
        parser.exit(4, f"{parser.prog}: error: " + _cli.out_of_memory_message(
            e, ["--batch-size", "--chunk-size", "--num-samples", "--ais-chains"]) + "\n")
    except Exception as e:  # ResourceExhaustedError without importing TF up front
        if type(e).__name__ != "ResourceExhaustedError":
            raise
        parser.exit(4, f"{parser.prog}: error: " + _cli.out_of_memory_message(
            e, ["--batch-size", "--chunk-size", "--num-samples", "--ais-chains"]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
