"""A/B of batch-norm statistics in AS-VAE training (mnist preset, 80-layer flow, batch 64).

SyncBatchNormalization's two passes (tf_asvae.networks.blocks.global_moments) against
Keras' synchronized E[x^2] - E[x]^2 path, swapped in through the module attribute, in
one process: a model per variant, one traced warm-up epoch, then 3 epochs of 30 steps.
Prints seconds per 30 steps and the median images/s.  Run: python -m benchmarks.batch_norm_ab
(Keras' path is reached through a private Keras module, as a measurement only.)"""
import time

import keras
import numpy as np
from keras.src.backend.tensorflow import nn as knn

import tf_asvae
import tf_asvae.networks.blocks as B


def main():
    ours = B.global_moments

    def theirs(x, axes):
        return knn._compute_moments_sync(x, axes, False)

    x = np.random.default_rng(0).random((64 * 30, 28, 28, 1)).astype("float32")
    res = {}
    # (variants in the order they run; the machine's noise can exceed the difference)
    for name, fn in (("keras", theirs), ("two_pass", ours)):
        B.global_moments = fn
        keras.utils.set_random_seed(0)
        m = tf_asvae.build_model("asvae", "mnist")
        m.compile()
        m.fit(x[:128], batch_size=64, epochs=1, verbose=0)  # trace
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            m.fit(x, batch_size=64, epochs=1, verbose=0)
            ts.append(time.perf_counter() - t)
        res[name] = ts
    B.global_moments = ours
    for k, v in res.items():
        print(k, "s per 30 steps:", ["%.2f" % t for t in v],
              "median images/s %.0f" % (64 * 30 / np.median(v)))


if __name__ == "__main__":
    main()
