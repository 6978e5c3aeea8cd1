"""The experiment programs (trainers/experiments): their --quick runs write the promised
files, and the estimators behind their numbers are correct on cases with known answers."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from trainers.experiments import avb_synthetic as S
from trainers.experiments import eight_schools as E

tfd = tfp.distributions


def _check_outputs(out, figures):
    data = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    for name in figures:
        png = out / name
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
        assert name in data["figures"]
    assert data["hardware"]["usable_cores"] >= 1
    assert data["runtime"]["total_s"] > 0
    assert "| quantity | method | ours | paper | estimator |" in md
    assert "Training budget" in md and "Hardware" in md
    return data, md


# ------------------------------------------------------------------------------ avb_synthetic

class _ClosedForm:
    """A stand-in model with a closed-form marginal: pixel 1 is on with probability
    Phi(z_1 + 1), the other three with probability 1/2, whatever z; the posterior is
    N(m, I) for every x.  Then p(x_1 = 1) = E[Phi(Z + 1)] = Phi(1 / sqrt 2) and
    KL(q(z) || p(z)) = |m|^2 / 2."""

    explicit_posterior = True

    def __init__(self, m=(0.0, 0.0)):
        self.m = tf.constant(m, tf.float32)

    def observation(self, z):
        p1 = tfd.Normal(0.0, 1.0).cdf(z[..., 0] + 1.0)
        probs = tf.stack([p1] + [0.5 * tf.ones_like(p1)] * 3, -1)
        probs = tf.reshape(probs, tf.concat([tf.shape(p1), [2, 2, 1]], 0))
        return tfd.Independent(tfd.Bernoulli(probs=probs, dtype=tf.float32), 3)

    def posterior(self, x):
        loc = tf.broadcast_to(self.m, [x.shape[0], 2])
        return tfd.MultivariateNormalDiag(loc, tf.ones_like(loc))


def test_grid_integration_matches_closed_form():
    x16 = S.all_binary_images()
    assert len({tuple(v.ravel()) for v in x16}) == 16
    ll = S.grid_log_likelihood(_ClosedForm(), x16, limit=6.0, spacing=0.05)
    p_on = 0.5 * (1 + math.erf(1 / math.sqrt(2) / math.sqrt(2)))  # Phi(1/sqrt(2))
    expected = np.where(x16.reshape(16, 4)[:, 0] == 1, p_on, 1 - p_on) * 0.125
    np.testing.assert_allclose(np.exp(ll), expected, rtol=1e-4)
    kl, mass = S.grid_aggregate_kl(_ClosedForm((0.6, -0.8)), S.four_points(), 6.0, 0.05)
    assert mass == pytest.approx(1.0, abs=1e-4)
    assert kl == pytest.approx(0.5, abs=1e-3)


def test_kde_aggregate_kl_is_close_to_the_truth():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(200_000, 2))
    shifted = same + np.array([0.6, -0.8])
    kl0, inside = S.kde_aggregate_kl(same, 5.0, 0.05, 0.1)
    kl1, _ = S.kde_aggregate_kl(shifted, 5.0, 0.05, 0.1)
    assert inside > 0.999
    assert abs(kl0) < 0.03
    assert kl1 == pytest.approx(0.5, abs=0.05)


def test_grid_likelihood_of_a_model_sums_to_one_over_all_images():
    import tf_asvae

    for kind in ("vae", "avb"):
        model = tf_asvae.build_model(kind, "synthetic", seed=1)
        model.build_all()
        ll = S.grid_log_likelihood(model, S.all_binary_images(), 6.0, 0.05)
        assert np.all(ll < 0)
        assert np.sum(np.exp(ll)) == pytest.approx(1.0, abs=1e-4)


def test_avb_synthetic_quick(tmp_path):
    out = tmp_path / "avb_synthetic"
    S.main(["--out", str(out), "--quick"])
    data, md = _check_outputs(out, ["latent_space.png", "training_curves.png"])
    assert data["experiment"] == "avb_synthetic"
    for kind in S.KINDS:
        d = data["details"][kind]
        assert d["total_probability_16_images"] == pytest.approx(1.0, abs=1e-3)
        # The grid value agrees with unbiased Monte Carlo from the prior.
        assert abs(d["log_likelihood"] - d["prior_mc_log_likelihood"]) < (
            5 * d["prior_mc_standard_error"] + 1e-3)
        assert -10 < d["log_likelihood"] < 0
        assert d["reconstruction_error"] > 0
        assert np.isfinite(d["kl_aggregate_kde"])
        rows = [r for r in data["results"] if r["method"] == kind]
        assert {"log-likelihood", "reconstruction error", "ELBO",
                "KL(q(z) || p(z)) (KDE)"} <= {r["quantity"] for r in rows}
    assert "kl_aggregate_exact" in data["details"]["vae"]
    assert "kl_aggregate_exact" not in data["details"]["avb"]
    paper = {(r["quantity"], r["method"]): r["paper"] for r in data["results"]}
    assert paper[("log-likelihood", "vae")] == -1.568
    assert paper[("log-likelihood", "avb")] == -1.403
    assert "-1.5680" in md and "-1.4030" in md


# ------------------------------------------------------------------------------ eight_schools

def test_divergence_estimators_vanish_for_equal_distributions():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=(1500, 10)) for _ in range(3))
    c[:, 0] += 1.0  # true KL = 0.5
    assert abs(E.energy_distance(a, b)) < 0.01
    assert E.energy_distance(a, c) > 0.1
    assert abs(E.knn_kl(a, b)) < 0.1
    assert E.knn_kl(c, a) > 0.15
    assert E.knn_kl(a, c) > 0.15


def test_eight_schools_log_density():
    from scipy.stats import norm

    theta = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    mu, tau, eta = theta[:, :1], theta[:, 1:2], theta[:, 2:]
    expected = (norm.logpdf(E.Y, mu + tau * eta, E.SIGMA).sum(1) + norm.logpdf(theta).sum(1))
    np.testing.assert_allclose(E.target_log_prob(tf.constant(theta)).numpy(), expected,
                               rtol=1e-5)
    # The posterior's symmetry (tau, eta) -> (-tau, -eta).
    flipped = theta.copy()
    flipped[:, 1:] *= -1
    np.testing.assert_allclose(E.target_log_prob(tf.constant(flipped)).numpy(), expected,
                               rtol=1e-5)


def test_eight_schools_quick(tmp_path):
    out = tmp_path / "eight_schools"
    E.main(["--out", str(out), "--quick"])
    data, _ = _check_outputs(out, ["divergence.png", "marginals.png"])
    assert data["experiment"] == "eight_schools"
    for method in E.METHODS:
        curve = data["details"]["curves"][method]
        assert curve and all(np.isfinite(d["energy_distance"]) for _, d in curve)
        assert data["details"]["final"][method]["energy_distance"] > 0
    assert set(data["details"]["nuts"]) >= {"max_rhat", "min_ess"}
    assert any(r["quantity"] == "energy distance to NUTS" for r in data["results"])


def test_reflection_keeps_mu_and_balances_the_modes():
    states = np.ones((2, 1000, 10), np.float32)
    out = E.reflect(states, np.random.default_rng(0))
    assert np.all(out[..., 0] == 1)
    assert np.all(np.abs(out) == 1)
    assert np.all(out[..., 1:] == out[..., 1:2])  # one sign per draw
    assert 0.45 < np.mean(out[..., 1] > 0) < 0.55
