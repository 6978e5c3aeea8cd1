"""Distribution-invariant stateless noise.

Every random draw of a training step (latent noise, the encoder's noise, dropout masks)
is made for the *global* batch from a stateless seed and sliced to the rows of the
calling replica.  Two consequences, both tested:

* one step on N replicas uses exactly the noise of one step on one device with the same
  global batch (so the two steps agree up to float rounding), and the replicas' streams
  are independent slices of one draw;
* the noise is a function of (seed, step, call site) only, so a run resumed from a
  backup draws what the uninterrupted run would have drawn.

Keras' own ``Dropout`` does neither: its seed state is not saved with the weights, and
under ``MirroredStrategy`` every replica draws the same mask for its rows.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["replica_info", "global_draw"]


def replica_info():
    """(replicas in sync, this replica's id); (1, 0) outside a strategy."""
    strategy = tf.distribute.get_strategy()
    n = strategy.num_replicas_in_sync
    ctx = tf.distribute.get_replica_context()
    rid = ctx.replica_id_in_sync_group if (ctx is not None and n > 1) else 0
    return n, rid


def global_draw(seed, local_batch, event_shape, kind="normal", lead=()):
    """Noise of shape ``lead + [local_batch] + event_shape`` for this replica's rows.

    Drawn with ``seed`` (a [2] int tensor) for ``local_batch * replicas`` rows and
    sliced to rows ``[rid * local_batch, (rid + 1) * local_batch)``.  ``kind``:
    ``"normal"``, or ``"uniform"`` on the open interval (1e-6, 1 - 1e-6).
    ``event_shape`` may be a list of ints or a 1-D int tensor.
    """
    n, rid = replica_info()
    shape = tf.concat([tf.constant(lead, tf.int32), tf.reshape(local_batch * n, [1]),
                       tf.cast(event_shape, tf.int32)], 0)
    if kind == "normal":
        full = tf.random.stateless_normal(shape, seed)
    elif kind == "uniform":
        full = tf.random.stateless_uniform(shape, seed, minval=1e-6, maxval=1.0 - 1e-6)
    else:
        raise ValueError(f"Unknown kind: Received: kind={kind!r}. Expected 'normal' or 'uniform'.")
    if n == 1:
        return full
    rows = tf.range(rid * local_batch, (rid + 1) * local_batch)
    return tf.gather(full, rows, axis=len(lead))
