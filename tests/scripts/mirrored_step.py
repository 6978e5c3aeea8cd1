"""One training step under MirroredStrategy on 2 logical CPUs vs one device.

Run as a subprocess (logical devices must be configured before TensorFlow starts):
    python tests/scripts/mirrored_step.py OUT.json KIND [KIND ...]
(all kinds share one MirroredStrategy: a second one in the same process restarts the
collective instance keys and collides with the first one's)
Writes, per kind, the largest absolute and relative weight difference after one step,
under "dropout" how SeededDropout's masks are split over the replicas, and under
"batch_norm" how SyncBatchNormalization's outputs and input gradients on 2 replicas
compare with one device's on data whose channel means dwarf their spread.
"""

import json
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_asvae  # noqa: E402


def build(kind):
    """The MNIST networks with ELU in place of ReLU.

    ReLU's derivative jumps at 0: a pre-activation within rounding of 0 can fall on one
    side on one device and on the other on 2 replicas, and that unit's whole gradient
    contribution then differs.  With ReLU, 1 initialisation in 4 gave such a switch
    (a difference of 2e-3 of the largest update, in the decoder's first dense layer);
    with ELU, whose derivative is continuous, the same initialisations agree to 3e-6.
    The comparison is of the distribution machinery, not of the activation.
    """
    return tf_asvae.build_model(kind, "mnist", seed=3, activation="elu",
                                **({} if kind.startswith("avb") else
                                   {"posterior_flow_length": 2}))


def one_step(kind, strategy, weights, x):
    with strategy.scope():
        model = build(kind)
        # SGD keeps the comparison well conditioned: Adam's first step is ~lr * sign(g),
        # which turns rounding-level gradient differences near g = 0 into lr-sized ones.
        model.compile(optimizer=keras.optimizers.SGD(0.05),
                      disc_optimizer=keras.optimizers.SGD(0.05))
    model.set_weights(weights)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(len(x))
    history = model.fit(dataset, epochs=1, verbose=0)
    return model, history.history


def main(out, kinds):
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    results = {}
    # One strategy for every kind: a second MirroredStrategy in one process restarts
    # the collective instance keys and can collide with the first one's.
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for kind in kinds:
        keras.utils.set_random_seed(0)  # the same initial weights on every run
        ref = build(kind)
        ref.build_all()
        init = ref.get_weights()
        single_model, h1 = one_step(kind, single, init, x)
        mirrored, h2 = one_step(kind, mirrored_strategy, init, x)
        assert mirrored.distribute_strategy.num_replicas_in_sync == 2
        results[kind] = {**compare_updates(single_model, init, single_model.get_weights(),
                                           mirrored.get_weights()),
                         "loss_single": float(h1["loss"][-1]),
                         "loss_mirrored": float(h2["loss"][-1])}
    results["dropout"] = dropout_masks(mirrored_strategy)
    results["batch_norm"] = batch_norm_split(mirrored_strategy)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


def compare_updates(model, init, single, mirrored):
    """The two steps' updates (new - initial weights), variable by variable.

    ``max_abs_diff / max_update``: the largest difference against the largest update of
    any variable.  ``max_rel_update_diff``: the largest difference relative to the
    variable's own update, over the variables whose update is at least 1% of the
    largest.  (A variable with a much smaller update, e.g. a critic's output bias whose
    gradient is a sum of +-0.5 terms that nearly cancel, can differ by several percent of
    its own update from rounding alone; the first figure still bounds it.)
    """
    updates = [(v.path, a - a0, b - a0) for v, a0, a, b in
               zip(model.weights, init, single, mirrored)]
    moved = max(float(np.max(np.abs(da))) for _, da, _ in updates)
    abs_diff, rel_diff, worst = 0.0, 0.0, None
    for path, da, db in updates:
        d, size = float(np.max(np.abs(da - db))), float(np.max(np.abs(da)))
        abs_diff = max(abs_diff, d)
        if size >= 0.01 * moved and d / size > rel_diff:
            rel_diff, worst = d / size, path
    return {"max_abs_diff": abs_diff, "max_update": moved,
            "abs_diff_over_max_update": abs_diff / moved,
            "max_rel_update_diff": rel_diff, "worst_variable": worst}


def dropout_masks(strategy):
    """SeededDropout on ones: the replicas' masks against one device's global mask."""
    from tf_asvae.networks.blocks import SeededDropout

    layer = SeededDropout(0.5)
    seed = tf.constant([7, 1], tf.int64)

    @tf.function
    def per_replica():
        # Per replica: groups=2 stacked batches of 3 rows.
        return strategy.run(lambda: layer(tf.ones((6, 16)), training=True, seed=seed,
                                          groups=2))

    parts = [t.numpy() for t in strategy.experimental_local_results(per_replica())]
    # One device, global batch of 2 x 6 rows: group g holds rows 6g .. 6g + 5.
    full = layer(tf.ones((12, 16)), training=True, seed=seed, groups=2).numpy()
    # Replica r holds rows [3r, 3r + 3) of each group.
    expected = [np.concatenate([full[0 + 3 * r:3 + 3 * r], full[6 + 3 * r:9 + 3 * r]])
                for r in range(2)]
    return {"replicas_equal_global_slices": bool(all(np.array_equal(a, b) for a, b in
                                                     zip(parts, expected))),
            "replicas_differ": bool(not np.array_equal(parts[0], parts[1])),
            "kept_fraction": float(np.mean(full > 0))}


def batch_norm_split(strategy):
    """SyncBatchNormalization in training mode on 2 replicas x 4 rows vs one device x 8
    rows: the largest relative difference of the outputs and of d(sum(w * out))/dx."""
    from tf_asvae.networks.blocks import SyncBatchNormalization

    rng = np.random.default_rng(1)
    # Channel means of 1e3 against a spread of 1: E[x^2] - E[x]^2 loses ~1e-1 here.
    x = (1e3 + rng.normal(size=(8, 5, 5, 3))).astype("float32")
    w = rng.normal(size=x.shape).astype("float32")
    with strategy.scope():
        layer = SyncBatchNormalization()
        layer.build(x.shape)

    def out_and_grad(xs, ws):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = layer(xs, training=True)
            loss = tf.reduce_sum(out * ws)
        return out, tape.gradient(loss, xs)

    single_out, single_grad = out_and_grad(tf.constant(x), tf.constant(w))
    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: [(tf.constant(x[:4]), tf.constant(w[:4])),
                     (tf.constant(x[4:]), tf.constant(w[4:]))][ctx.replica_id_in_sync_group])
    out, grad = strategy.run(tf.function(lambda p: out_and_grad(*p)), args=(inputs,))
    out = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
    grad = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grad)])
    x64 = x.astype("float64")
    exact = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + layer.epsilon)
    return {"max_rel_out_diff": float(np.max(np.abs(out - single_out)) /
                                      np.max(np.abs(single_out))),
            "max_rel_grad_diff": float(np.max(np.abs(grad - single_grad)) /
                                       np.max(np.abs(single_grad))),
            "max_out_error_vs_float64": float(np.max(np.abs(single_out - exact)))}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
