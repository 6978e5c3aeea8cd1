"""One training step under MirroredStrategy on 2 logical CPUs vs one device.

Run as a subprocess (logical devices must be configured before TensorFlow starts):
    python tests/scripts/mirrored_step.py OUT.json KIND [KIND ...]
(all kinds share one MirroredStrategy: a second one in the same process restarts the
collective instance keys and collides with the first one's)
Writes, per kind, the largest absolute and relative weight difference after one step,
and under "dropout" how SeededDropout's masks are split over the replicas.
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


def one_step(kind, strategy, weights, x):
    with strategy.scope():
        model = tf_asvae.build_model(kind, "mnist", seed=3,
                                     **({} if kind.startswith("avb") else
                                        {"posterior_flow_length": 2}))
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
        ref = tf_asvae.build_model(kind, "mnist", seed=3,
                                   **({} if kind.startswith("avb") else
                                      {"posterior_flow_length": 2}))
        ref.build_all()
        init = ref.get_weights()
        single_model, h1 = one_step(kind, single, init, x)
        mirrored, h2 = one_step(kind, mirrored_strategy, init, x)
        assert mirrored.distribute_strategy.num_replicas_in_sync == 2
        # Compare the updates (new - initial) variable by variable.
        abs_diff, rel_diff, moved = 0.0, 0.0, 0.0
        for a0, a, b in zip(init, single_model.get_weights(), mirrored.get_weights()):
            da, db = a - a0, b - a0
            d = float(np.max(np.abs(da - db)))
            size = float(np.max(np.abs(da)))
            abs_diff = max(abs_diff, d)
            if size > 0:
                rel_diff = max(rel_diff, d / size)
            moved = max(moved, size)
        results[kind] = {"max_abs_diff": abs_diff, "max_rel_update_diff": rel_diff,
                         "max_update": moved,
                         "loss_single": float(h1["loss"][-1]),
                         "loss_mirrored": float(h2["loss"][-1])}
    results["dropout"] = dropout_masks(mirrored_strategy)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
