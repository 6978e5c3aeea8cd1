"""Objective terms on hand-computable cases, and Lemma 1 in closed form."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_asvae import objectives
from tf_asvae.networks import JointDiscriminator

tfd = tfp.distributions


def test_discriminator_loss_hand_values():
    pos = tf.constant([0.0, 2.0, -1.0])
    neg = tf.constant([0.0, -3.0, 0.5])
    expected = [2 * math.log(2.0),
                math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-3.0)),
                math.log1p(math.exp(1.0)) + math.log1p(math.exp(0.5))]
    np.testing.assert_allclose(objectives.discriminator_loss(pos, neg), expected, rtol=1e-6)
    np.testing.assert_allclose(objectives.discriminator_accuracy(pos, neg), [0.0, 1.0, 0.0])


def test_discriminator_loss_is_the_logistic_cross_entropy():
    pos = tf.random.stateless_normal([64], [1, 2]) * 4
    neg = tf.random.stateless_normal([64], [3, 4]) * 4
    bce = (tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(pos), pos)
           + tf.nn.sigmoid_cross_entropy_with_logits(tf.zeros_like(neg), neg))
    np.testing.assert_allclose(objectives.discriminator_loss(pos, neg), bce, rtol=1e-5)


def test_generator_terms_hand_values():
    # -ELBO = -(log p(x|z) + log p(z) - log q(z|x))
    np.testing.assert_allclose(objectives.negative_elbo(-10.0, -2.0, -1.5), 10.5)
    # L_VAEx / L_VAEz / AVB eq. 3.7 integrand: log-likelihood minus critic.
    np.testing.assert_allclose(objectives.adversarial_likelihood_loss(-10.0, 0.7), 10.7)
    # AVB eq. 4.2: -(-T - log r + log p(x|z) + log p(z)).
    np.testing.assert_allclose(objectives.adaptive_contrast_loss(-10.0, -2.0, -3.0, 0.25),
                               -(-0.25 + 3.0 - 10.0 - 2.0))


def test_avb_and_vae_agree_at_the_optimal_critic():
    """With T = T* = log q(z|x) - log p(z), eq. 3.7 is the negative ELBO (AVB Prop. 1);
    adaptive contrast with T = log q - log r gives the same value for any r."""
    log_px, log_pz, log_q, log_r = -20.0, -3.0, 1.5, -0.4
    elbo_loss = objectives.negative_elbo(log_px, log_pz, log_q)
    np.testing.assert_allclose(
        objectives.adversarial_likelihood_loss(log_px, log_q - log_pz), elbo_loss)
    np.testing.assert_allclose(
        objectives.adaptive_contrast_loss(log_px, log_pz, log_r, log_q - log_r), elbo_loss)


def test_reduce_loss_is_the_batch_mean_on_one_replica():
    np.testing.assert_allclose(objectives.reduce_loss(tf.constant([1.0, 2.0, 6.0])), 3.0)


def test_lemma1_critic_recovers_gaussian_log_ratio():
    """Lemma 1: the logistic-loss optimum is log p(x, z) - log q(x, z).

    p = N(0, I_2) and q = N(m, S) over (x, z) with x a 1x1x1 "image" and z scalar.
    The package's own JointDiscriminator and discriminator_loss are trained on samples;
    the learned logit is compared with the closed form where both densities have mass.
    """
    import keras
    keras.utils.set_random_seed(0)
    p = tfd.MultivariateNormalDiag(loc=[0.0, 0.0], scale_diag=[1.0, 1.0])
    q = tfd.MultivariateNormalTriL(loc=[0.6, -0.4],
                                   scale_tril=tf.linalg.cholesky([[1.4, 0.3], [0.3, 0.7]]))
    critic = JointDiscriminator(x_mlp=(64,), z_mlp=(64,), joint_mlp=(64, 64),
                                batch_norm=False, dropout=0.0)
    opt = keras.optimizers.Adam(3e-3)

    def split(v):
        return tf.reshape(v[:, :1], [-1, 1, 1, 1]), v[:, 1:]

    @tf.function
    def step(seed):
        pos = p.sample(512, seed=seed)
        neg = q.sample(512, seed=seed + 1)
        with tf.GradientTape() as tape:
            lp = critic(*split(pos), training=True)
            ln = critic(*split(neg), training=True)
            loss = tf.reduce_mean(objectives.discriminator_loss(lp, ln))
        grads = tape.gradient(loss, critic.trainable_variables)
        opt.apply_gradients(zip(grads, critic.trainable_variables))
        return loss

    for i in range(1500):
        step(tf.constant([i, 7]))
    # Evaluate where both densities have mass: an equal mixture of p and q.
    test = tf.concat([p.sample(2000, seed=[5, 5]), q.sample(2000, seed=[6, 6])], 0)
    truth = p.log_prob(test) - q.log_prob(test)
    learned = critic(*split(test), training=False)
    err = tf.abs(learned - truth)
    mae, rel = float(tf.reduce_mean(err)), float(tf.reduce_mean(err) / tf.reduce_mean(tf.abs(truth)))
    print(f"Lemma 1: mean |f - log p/q| = {mae:.4f} (mean |log p/q| = "
          f"{float(tf.reduce_mean(tf.abs(truth))):.3f}, relative {rel:.3f})")
    assert mae < 0.12
    assert rel < 0.15
