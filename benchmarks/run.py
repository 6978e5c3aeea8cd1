"""Training, sampling and evaluation speed and memory, measured side by side.

    python -m benchmarks.run [--quick] [--input-checks-only] [--out bench.json]
        [--presets mnist,cifar10]

Everything is measured in one process run (memory in child processes) so that ratios
between models are meaningful on a noisy machine:

* train-step throughput (images/s, median over repeats after a warm-up) of every model
  kind on the MNIST and CIFAR-10 presets, with and without XLA (``jit_compile``), under
  MirroredStrategy where more than one device exists, and of a reference VAE written the
  way Keras' own VAE example writes it (custom ``train_step``, closed-form KL), with the
  same encoder and decoder layers;
* each model's step time relative to the reference, beside the ratio of their
  floating-point operations per step (counted by TensorFlow's profiler on the traced
  step graph), so overhead beyond the extra arithmetic is visible;
* the input pipeline alone (images/s) against the fastest training step;
* sampling throughput of an exported SavedModel's ``sample`` signature;
* importance-sampled NLL throughput (examples x samples per second);
* peak host memory (and GPU memory where there is one) of training at the default batch;
* the cost per batch of the input checks that ``train_step``/``test_step`` run in the graph
  (a min, a max and an is-finite over the batch behind an assertion, before any update),
  isolated in a loop of calls with and without them, and its share of each model's
  measured step time (``--input-checks-only`` measures that alone, with the steps it is
  compared with).

FLOP counts cover the ops TensorFlow's profiler knows (matmuls, convolutions and their
gradients, elementwise ops); ops inside ``tf.while_loop`` bodies (the planar flow's
numerical inverse) are not counted, so flow models' FLOP ratios are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _tf():
    import tensorflow as tf
    return tf


# ---------------------------------------------------------------------------- reference
def reference_vae(preset, overrides):
    """A VAE written as Keras' VAE example writes it, on our encoder/decoder layers."""
    import keras
    import tensorflow as tf

    import tf_asvae
    from tf_asvae.networks import Decoder, GaussianEncoder

    cfg = tf_asvae.preset_config("vae", preset, **overrides)
    net = cfg.network

    class KerasExampleVAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = GaussianEncoder(cfg.latent_dim, net.encoder_conv, net.encoder_mlp,
                                           net.batch_norm)
            self.decoder = Decoder(cfg.image_shape, cfg.likelihood, net.decoder_mlp,
                                   net.decoder_start, net.decoder_deconv, net.batch_norm)
            self.seed_generator = keras.random.SeedGenerator(0)
            self.total_loss_tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker]

        def call(self, x):
            loc, _, _ = self.encoder(x)
            return self.decoder(loc)

        def train_step(self, data):
            with tf.GradientTape() as tape:
                # As Keras' mixed-precision guide does: densities and losses in float32.
                z_mean, scale, _ = self.encoder(data, training=True)
                z_mean, scale = tf.cast(z_mean, tf.float32), tf.cast(scale, tf.float32)
                eps = keras.random.normal(tf.shape(z_mean), seed=self.seed_generator)
                z = z_mean + scale * eps
                raw = tf.cast(self.decoder(z, training=True), tf.float32)
                if cfg.likelihood == "bernoulli":
                    rec = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(data, raw),
                                        axis=(1, 2, 3))
                else:
                    c = cfg.image_shape[-1]
                    loc, s = raw[..., :c], 1e-3 + tf.nn.softplus(raw[..., c:])
                    rec = tf.reduce_sum(0.5 * tf.square((data - loc) / s) + tf.math.log(s)
                                        + 0.5 * np.log(2 * np.pi), axis=(1, 2, 3))
                kl = -0.5 * (1 + 2 * tf.math.log(scale) - tf.square(z_mean) - tf.square(scale))
                total = tf.reduce_mean(rec + tf.reduce_sum(kl, axis=1))
                scaled = self.optimizer.scale_loss(total)  # no-op unless float16
            grads = tape.gradient(scaled, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total)
            return {"loss": self.total_loss_tracker.result()}

    model = KerasExampleVAE()
    model(tf.zeros((2,) + cfg.image_shape))
    return model, cfg


def build(kind, preset, overrides, jit, strategy=None):
    import keras
    import tensorflow as tf

    import tf_asvae
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if kind == "keras_vae":
            model, cfg = reference_vae(preset, overrides)
            model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit)
        else:
            model = tf_asvae.build_model(kind, preset, **_kind_overrides(kind, overrides))
            model.compile(jit_compile=jit)
            cfg = model.model_config
    return model, cfg


def _kind_overrides(kind, overrides):
    if kind.startswith("avb"):
        return {k: v for k, v in overrides.items() if "flow" not in k}
    return overrides


# ---------------------------------------------------------------------------- measures
class _EpochTimer:
    def __init__(self):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        self.callback = Timer()


def train_throughput(model, image_shape, batch, steps, repeats):
    """Images/s of fit() steps: the first epoch (tracing, warm-up) is dropped."""
    tf = _tf()
    x = tf.random.stateless_uniform((batch,) + tuple(image_shape), [1, 2])
    ds = tf.data.Dataset.from_tensors(x).repeat()
    timer = _EpochTimer().callback
    model.fit(ds, epochs=repeats + 1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    per_epoch = timer.times[1:]
    rates = [steps * batch / t for t in per_epoch]
    return {"images_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "step_ms": 1000 * statistics.median(per_epoch) / steps,
            "first_epoch_s": timer.times[0]}


def step_flops(model, image_shape, batch):
    """Floating-point operations of one training step, counted on its traced graph.

    TensorFlow's profiler counts the ops of the graph once: the body of a while loop
    (the stacked planar flow, tf_asvae.flows.PlanarFlowStack) is counted for one
    iteration, not K.  A planar layer costs about 8 D FLOPs per example forward
    (w.z, u * h(.), the log-det term), so K = 80 layers at D = 64 add ~0.04 MFLOP per
    example and pass (~0.5 MFLOP with the backward pass and AS-VAE's two posterior
    evaluations), under 1% of the ~62 MFLOP per example of the MNIST VAE step: the
    ratios are not visibly affected.
    """
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import (  # noqa: F401
        convert_variables_to_constants_v2)
    fn = tf.function(lambda x: model.train_step(x))
    concrete = fn.get_concrete_function(tf.TensorSpec((batch,) + tuple(image_shape)))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=concrete.graph, options=opts)
    return int(prof.total_float_ops)


def input_check_cost(model, image_shape, batch, calls=100, repeats=5):
    """Milliseconds per batch of the in-graph input checks of ``train_step`` and
    ``test_step`` (``BaseModel._step_images``: the shape, dtype and batch-partner checks
    run once, when the step is traced; per batch run a min, a max and an is-finite over
    the images and the assertion that holds back the step until they pass).

    Isolated, since they are ~0.1% of a step, below the step time's noise: one
    ``tf.function`` runs ``calls`` batches through the checks in a ``tf.while_loop``,
    another the same loop without them; each batch is made anew in the loop (nothing
    can be hoisted) and summed (nothing pruned) in both. The cost is the difference of
    the median times over ``repeats``, divided by ``calls`` (it can come out slightly
    negative on a noisy machine: read it as zero)."""
    tf = _tf()
    x0 = tf.random.stateless_uniform((batch,) + tuple(image_shape), [3, 4])

    def loop(checked):
        @tf.function
        def run(x):
            def body(i, total):
                xi = x * (1.0 - 1e-7 * tf.cast(i, tf.float32))
                if checked:
                    xi = model._step_images(xi, "train_step")
                return i + 1, total + tf.reduce_sum(xi)

            return tf.while_loop(lambda i, _: i < calls, body,
                                 (tf.constant(0), tf.constant(0.0)))[1]

        return run

    times = {}
    for checked in (False, True):
        run = loop(checked)
        run(x0).numpy()  # trace and warm up
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(x0).numpy()
            samples.append(time.perf_counter() - t0)
        times[checked] = statistics.median(samples)
    return {"batch": batch, "calls": calls, "repeats": repeats,
            "loop_ms_without_checks": 1000 * times[False],
            "loop_ms_with_checks": 1000 * times[True],
            "ms_per_batch": 1000 * (times[True] - times[False]) / calls}


def pipeline_throughput(batch, seconds=5.0, manual=None, data_dir=None):
    """Images/s of the training input pipeline alone: the real MNIST pipeline when the
    files are available (``manual``, else $TF_ASVAE_MANUAL_DIR), else an in-memory
    stand-in of the same size (the result says which)."""
    tf = _tf()
    from tf_asvae import data
    manual = manual or os.environ.get(data.ENV_MANUAL_DIR)
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    source = "in-memory"
    ds = None
    if manual:
        try:
            cfg = data.DataConfig(name="mnist", batch_size=batch, manual_dir=manual,
                                  data_dir=data_dir)
            ds = data.load_split(cfg, "train", training=True, repeat=True)
            source = "tfds mnist (offline files)"
        except Exception as err:  # noqa: BLE001 - report and fall back
            source = f"in-memory (tfds failed: {type(err).__name__})"
    if ds is None:
        x = np.random.default_rng(0).integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
        ds = (tf.data.Dataset.from_tensor_slices(x).shuffle(10000).repeat()
              .map(lambda v: tf.cast(v, tf.float32) / 255.0).batch(batch, drop_remainder=True)
              .prefetch(tf.data.AUTOTUNE))
    it = iter(ds)
    for _ in range(20):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    return {"images_per_s": n / (time.perf_counter() - t0), "source": source}


def sampling_throughput(model, batch_sizes, repeats=5):
    tf = _tf()
    from tf_asvae.export import export_saved_model
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, tmp)
        loaded = tf.saved_model.load(path)
        sample = loaded.signatures["sample"]
        for b in batch_sizes:
            args = _sample_args(sample, b)
            sample(**args)  # warm-up
            times = []
            for r in range(repeats):
                t0 = time.perf_counter()
                sample(**args)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            out[str(b)] = {"images_per_s": b / med, "s_per_image": med / b}
    return out


def _sample_args(signature, n):
    tf = _tf()
    args = {}
    for name, spec in signature.structured_input_signature[1].items():
        if "seed" in name:
            known = spec.shape.rank is not None and spec.shape.is_fully_defined()
            args[name] = tf.zeros(spec.shape, spec.dtype) if known and spec.shape.rank else \
                tf.constant(0, spec.dtype)
        else:
            args[name] = tf.constant(n, spec.dtype)
    return args


def nll_throughput(model, image_shape, batch, num_samples):
    """Importance-sampled NLL as the evaluation program computes it."""
    tf = _tf()
    from tf_asvae.evaluation import model_metrics
    x = tf.random.stateless_uniform((batch,) + tuple(image_shape), [3, 4])

    def run():
        return model_metrics.log_likelihood(model, x, num_samples, seed=0)
    run()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        np.asarray(run().log_likelihood)
        times.append(time.perf_counter() - t0)
    return {"example_samples_per_s": batch * num_samples / statistics.median(times),
            "batch": batch, "num_samples": num_samples}


def _status_mib(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _memory_child(kind, preset, overrides_json, batch, steps):
    """In a fresh process: RSS after building (and compiling one step), then the peak
    RSS while training ``steps`` more steps (the peak is reset in between by writing 5 to
    /proc/self/clear_refs), and the GPUs' peak allocation."""
    tf = _tf()
    model, cfg = build(kind, preset, json.loads(overrides_json), False)
    x = tf.random.stateless_uniform((batch,) + tuple(cfg.image_shape), [1, 2])
    ds = tf.data.Dataset.from_tensors(x).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # build, trace, warm up
    before = _status_mib("VmRSS")
    peak_since_import = _status_mib("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for d in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats(d.name.replace("/physical_device:", ""))
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    peak = _status_mib("VmHWM")
    gpu = [tf.config.experimental.get_memory_info(d.name.replace("/physical_device:", ""))
           ["peak"] / 2 ** 20 for d in tf.config.list_physical_devices("GPU")]
    print(json.dumps({"rss_before_training": before, "peak_rss_training": peak,
                      "peak_rss_including_tracing": peak_since_import, "gpu": gpu}))


def peak_memory(kind, preset, overrides, batch, steps):
    """Host memory (MiB) of training ``steps`` steps at ``batch``, in a child process:
    the peak RSS during training, and its increase over the RSS before training (the
    part due to the model's step rather than to TensorFlow and the data)."""
    code = ("import sys;sys.path.insert(0,%r);from benchmarks.run import _memory_child;"
            "_memory_child(%r,%r,%r,%d,%d)") % (os.getcwd(), kind, preset,
                                               json.dumps(overrides), batch, steps)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_mib": info["peak_rss_training"],
            "training_increase_mib": info["peak_rss_training"] - info["rss_before_training"],
            "rss_before_training_mib": info["rss_before_training"],
            "peak_rss_with_tracing_mib": info["peak_rss_including_tracing"],
            "peak_gpu_mib": info["gpu"] or None}


# ---------------------------------------------------------------------------- driver
def machine():
    tf = _tf()
    gpus = tf.config.list_physical_devices("GPU")
    return {"platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "cpus": os.cpu_count(),
            "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                     for g in gpus]}


KINDS = ("vae", "asvae_r", "asvae_g", "asvae", "avb", "avb_ac")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small settings that finish in a couple of minutes on a CPU")
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--presets", default="mnist,cifar10")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-jit", action="store_true", help="skip the XLA variants")
    parser.add_argument("--manual-dir", default=None,
                        help="MNIST files for the input-pipeline measure (default "
                             "$TF_ASVAE_MANUAL_DIR; without them an in-memory stand-in)")
    parser.add_argument("--data-dir", default=None, help="TFDS directory of prepared data")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="also measure under the mixed_bfloat16/mixed_float16 policy")
    parser.add_argument("--input-checks-only", action="store_true",
                        help="measure only the in-graph input checks' cost per batch and "
                             "the graph-mode steps of --kinds it is compared with")
    args = parser.parse_args(argv)
    tf = _tf()
    presets = [p for p in args.presets.split(",") if p]
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            parser.error(f"unknown kind {k!r}; expected some of {KINDS}")
    batch = args.batch_size or (16 if args.quick else 64)
    steps, repeats = (3, 3) if args.quick else (20, 5)
    only_checks = args.input_checks_only
    jits = (False,) if (args.quick or args.no_jit or only_checks) else (False, True)
    # The quick run shortens the MNIST presets' 80-layer planar flow (compile time on CPU).
    overrides = {"posterior_flow_length": 2} if args.quick else {}
    results = {"machine": machine(), "settings": {
        "quick": args.quick, "batch_size": batch, "steps_per_repeat": steps,
        "repeats": repeats, "overrides": overrides, "input_checks_only": only_checks},
        "train": {}, "flops": {}, "input_checks": {}}
    fastest = 0.0

    def measure(key, kind, preset, ov, jit, count_flops):
        model, cfg = build(kind, preset, ov, jit)
        r = train_throughput(model, cfg.image_shape, batch, steps, repeats)
        if count_flops:
            results["flops"][f"{preset}/{kind}"] = step_flops(model, cfg.image_shape, batch)
        results["train"][key] = r
        print(f"{key:32s} {r['images_per_s']:9.1f} img/s  "
              f"(step {r['step_ms']:.1f} ms, first epoch {r['first_epoch_s']:.1f} s)",
              flush=True)
        return r["images_per_s"]

    for preset in presets:
        ov = overrides if preset in ("mnist", "binarized_mnist", "fashion_mnist") else {}
        for kind in (() if only_checks else ("keras_vae",)) + tuple(kinds):
            for jit in jits:
                rate = measure(f"{preset}/{kind}/{'xla' if jit else 'graph'}", kind, preset,
                               ov, jit, count_flops=not (jit or only_checks))
                fastest = max(fastest, rate)
        # The checks depend on the image shape and the batch, not on the model kind.
        check_model, cfg = build("vae", preset, ov, False)
        checks = input_check_cost(check_model, cfg.image_shape, batch,
                                  calls=30 if args.quick else 200, repeats=repeats)
        checks["share_of_step"] = {
            kind: checks["ms_per_batch"] / results["train"][f"{preset}/{kind}/graph"]["step_ms"]
            for kind in kinds if f"{preset}/{kind}/graph" in results["train"]}
        results["input_checks"][preset] = checks
        print(f"{preset + ' input checks':32s} {checks['ms_per_batch']:9.3f} ms per batch of "
              f"{batch} (" + ", ".join(f"{k} {100 * v:.2f}%" for k, v in
                                      checks["share_of_step"].items()) + " of the step)",
              flush=True)
        if only_checks:
            continue
        if args.mixed_precision:
            import keras

            from tf_asvae.config import TrainConfig
            from trainers.train import precision_policy

            policy = precision_policy(TrainConfig(mixed_precision="auto"))
            previous = keras.mixed_precision.global_policy()
            keras.mixed_precision.set_global_policy(policy)
            try:
                for kind in ("keras_vae",) + tuple(kinds):
                    measure(f"{preset}/{kind}/{policy}", kind, preset, ov, False,
                            count_flops=False)
            finally:
                keras.mixed_precision.set_global_policy(previous)
        if len(tf.config.list_logical_devices("GPU")) > 1:
            strategy = tf.distribute.MirroredStrategy()
            model, cfg = build("asvae", preset, ov, False, strategy)
            key = f"{preset}/asvae/mirrored{strategy.num_replicas_in_sync}"
            results["train"][key] = train_throughput(model, cfg.image_shape,
                                                     batch * strategy.num_replicas_in_sync,
                                                     steps, repeats)
    # Ratios to the reference VAE: time per step and FLOPs per step.
    ratios = {}
    for key, r in results["train"].items():
        preset, kind, mode = key.split("/")
        ref = results["train"].get(f"{preset}/keras_vae/{mode}")
        if ref is None or kind == "keras_vae":
            continue
        f, fr = results["flops"].get(f"{preset}/{kind}"), results["flops"].get(
            f"{preset}/keras_vae")
        ratios[key] = {"time_ratio": ref["images_per_s"] / r["images_per_s"],
                       "flop_ratio": (f / fr) if f and fr else None}
        if ratios[key]["flop_ratio"]:
            ratios[key]["overhead_beyond_flops"] = (ratios[key]["time_ratio"]
                                                    / ratios[key]["flop_ratio"] - 1)
    results["ratios_to_keras_vae"] = ratios
    if only_checks:
        return _finish(results, args.out)
    results["input_pipeline"] = pipeline_throughput(batch, 2.0 if args.quick else 10.0,
                                                    args.manual_dir, args.data_dir)
    results["input_pipeline"]["vs_fastest_train_step"] = (
        results["input_pipeline"]["images_per_s"] / fastest if fastest else None)
    sample_model, cfg = build("asvae", presets[0], overrides if presets[0] == "mnist" else {},
                              False)
    results["sampling"] = sampling_throughput(
        sample_model, (1, 64) if args.quick else (1, 16, 256, 1024))
    results["nll"] = nll_throughput(sample_model, cfg.image_shape, 16 if args.quick else 64,
                                    20 if args.quick else 200)
    mem_kinds = ("keras_vae", "asvae") if args.quick else ("keras_vae",) + tuple(kinds)
    results["memory"] = {k: peak_memory(k, presets[0], overrides if presets[0] == "mnist"
                                        else {}, batch, 3) for k in mem_kinds}
    return _finish(results, args.out)


def _finish(results, out):
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(render_table(results))
    print(f"wrote {out}")
    return results


def render_table(results):
    lines = ["", "| step | images/s | step ms | time / keras_vae | FLOPs / keras_vae |",
             "|---|---:|---:|---:|---:|"]
    for key, r in results["train"].items():
        ratio = results["ratios_to_keras_vae"].get(key, {})
        t = ratio.get("time_ratio")
        f = ratio.get("flop_ratio")
        lines.append(f"| {key} | {r['images_per_s']:.1f} | {r['step_ms']:.1f} | "
                     f"{'' if t is None else f'{t:.2f}'} | {'' if f is None else f'{f:.2f}'} |")
    for preset, c in results.get("input_checks", {}).items():
        shares = ", ".join(f"{k} {100 * v:.2f}%" for k, v in c["share_of_step"].items())
        lines.append(f"\n{preset} in-graph input checks: {c['ms_per_batch']:.3f} ms per "
                     f"batch of {c['batch']} ({c['calls']} calls: "
                     f"{c['loop_ms_with_checks']:.1f} ms with, "
                     f"{c['loop_ms_without_checks']:.1f} ms without)"
                     + (f"; share of the step: {shares}" if shares else ""))
    if "input_pipeline" not in results:
        return "\n".join(lines)
    p = results["input_pipeline"]
    lines.append(f"\ninput pipeline: {p['images_per_s']:.0f} images/s ({p['source']}), "
                 f"{p['vs_fastest_train_step']:.1f}x the fastest training step")
    for b, s in results["sampling"].items():
        lines.append(f"SavedModel sample, batch {b}: {s['images_per_s']:.1f} images/s "
                     f"({s['s_per_image'] * 1000:.2f} ms/image)")
    n = results["nll"]
    lines.append(f"IS NLL: {n['example_samples_per_s']:.0f} example-samples/s "
                 f"(batch {n['batch']}, K={n['num_samples']})")
    for k, m in results["memory"].items():
        if "error" in m:
            lines.append(f"memory {k}: failed ({m['error']})")
            continue
        gpu = f", GPU peak {m['peak_gpu_mib']} MiB" if m.get("peak_gpu_mib") else ""
        lines.append(f"memory {k}: peak RSS while training {m['peak_rss_mib']:.0f} MiB "
                     f"(+{m['training_increase_mib']:.0f} MiB over the "
                     f"{m['rss_before_training_mib']:.0f} MiB before training; "
                     f"{m['peak_rss_with_tracing_mib']:.0f} MiB with tracing){gpu}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
