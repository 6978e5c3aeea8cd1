"""Per-example terms of every objective, each written once.

All functions take per-example tensors of shape [B] (log-densities summed over event
dimensions; discriminator logits) and return per-example *losses* (to be minimised),
so that :func:`reduce_loss` can turn them into a replica-correct scalar.

References (see ../shared/MATH.md):
  [ASVAE] Pu et al. 2017, Adversarial Symmetric Variational Autoencoder, eqs. 5, 6, 8, 9, 11.
  [AVB]   Mescheder et al. 2017, Adversarial Variational Bayes, eqs. 3.3, 3.7, 4.2.
"""

from __future__ import annotations

import tensorflow as tf


def discriminator_loss(positive_logits, negative_logits):
    """Logistic (sigmoid cross-entropy) loss of a critic, per pair of samples.

    ``-[log sigma(f(pos)) + log(1 - sigma(f(neg)))] = softplus(-f(pos)) + softplus(f(neg))``.
    By Lemma 1 its minimiser is ``f* = log p_pos(x, z) - log p_neg(x, z)``.  Used for
    f_psi1 ([ASVAE] eq. 5), f_psi2 (eq. 6) and T_psi ([AVB] eq. 3.3); the callers choose
    the positive and negative pairs.
    """
    return tf.nn.softplus(-positive_logits) + tf.nn.softplus(negative_logits)


def discriminator_accuracy(positive_logits, negative_logits):
    """Per pair: the mean of [f(pos) > 0] and [f(neg) < 0]."""
    pos = tf.cast(positive_logits > 0, positive_logits.dtype)
    neg = tf.cast(negative_logits < 0, negative_logits.dtype)
    return 0.5 * (pos + neg)


def gradient_penalty(gradients, gamma):
    """Zero-centred gradient penalty per example, ``gamma / 2 * sum ||g||^2`` over the
    gradients of a critic's logit w.r.t. each of its inputs (R1 on the positive pairs:
    Mescheder, Geiger & Nowozin 2018, eq. 9).  ``gradients``: tensors [B, ...]."""
    total = 0.0
    for g in gradients:
        g = tf.cast(g, tf.float32)
        total += tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=-1)
    return 0.5 * gamma * total


def log_ratio_error(critic_contrast, exact_contrast):
    """Absolute error of a critic's log-ratio contrast, per example.

    For a fixed x, a critic's optimum minus its value at another z is often known in
    closed form even where the optimum is not (AS-VAE's f_psi1:
    ``f1*(x, z) - f1*(x, z') = [log q(z|x) - log p(z)] - [log q(z'|x) - log p(z')]``);
    ``|(f(x, z) - f(x, z')) - exact|`` measures how well the critic estimates the
    log-ratio it stands for (../shared/MATH.md, Sec. 5).
    """
    return tf.abs(critic_contrast - exact_contrast)


def negative_elbo(log_px_z, log_pz, log_qz_x):
    """VAE loss: ``-(log p(x|z) + log p(z) - log q(z|x))`` at z ~ q(z|x).

    A single-sample Monte-Carlo ELBO; exact for flows, whose q is only known pointwise.
    """
    return -(log_px_z + log_pz - log_qz_x)


def adversarial_likelihood_loss(log_likelihood, critic_logit):
    """``-(log-likelihood - critic)``: the shape shared by three generator objectives.

    * [ASVAE] eq. 8, first half of eq. 11 (L_VAEx): log p(x | z_phi(x, eps)) - f_psi1(x, z).
    * [ASVAE] eq. 9, second half of eq. 11 (L_VAEz): log q(z | x_theta(z, xi)) - f_psi2(x, z).
    * [AVB] eq. 3.7: log p(x | z_phi(x, eps)) - T_psi(x, z), with T* = log q(z|x) - log p(z).
    """
    return -(log_likelihood - critic_logit)


def adaptive_contrast_loss(log_px_z, log_pz, log_rz_x, critic_logit):
    """[AVB] eq. 4.2: ``-(-T(x, z~) - log r(z|x) + log p(x|z) + log p(z))``.

    T estimates KL(q(z~|x) || N(0, I)) = E_q[log q(z|x) - log r(z|x)] on the normalised
    code z~ = (z - mu(x)) / sigma(x), so the bracket is the ELBO.
    """
    return -(-critic_logit - log_rz_x + log_px_z + log_pz)


def reduce_loss(per_example):
    """Per-example losses [B] -> the scalar a replica differentiates.

    Keras 3 sums gradients across replicas, so each replica returns
    ``sum(local losses) / global_batch`` = ``mean(local) / num_replicas``.  This is the
    global-batch mean whatever the number of replicas (the same scaling as
    ``tf.nn.compute_average_loss`` with equal per-replica batches).
    """
    per_example = tf.convert_to_tensor(per_example)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.reduce_mean(tf.cast(per_example, tf.float32)) / float(replicas)
