"""AVB Table 1 and Figure 6: four 2x2 binary images, a 2-d latent space.

    python -m trainers.experiments.avb_synthetic --out runs/experiments/avb_synthetic [--quick]

Trains ``vae``, ``avb``, ``avb_ac`` and ``asvae`` on the ``synthetic`` preset (MLPs of
512 units, 2-d latent, Bernoulli pixels) with ``fit()`` on
:func:`tf_asvae.data.synthetic_four_points`, then reports for each model:

log-likelihood (exact, by numerical integration)
    ``log p(x) = log int p(x|z) p(z) dz`` by the midpoint rule on a square grid of cell
    centres over ``[-L, L]^2`` (default L = 6, spacing h = 0.02, 360,000 cells), computed
    as ``logsumexp_i [log p(x|z_i) + log p(z_i)] + log h^2``.  The prior mass outside
    the square is below 1e-8.  Convergence: the integral is repeated at 2h and h, and h
    is halved until the mean changes by less than 1e-3 (down to h = 0.005); the spacing
    used and the differences are reported.  Normalisation: ``p(x)`` summed over all 16
    binary 2x2 images (should be 1).  The table's number is the mean over the four data
    points (the paper's number is an average per data point; optimum ``-log 4``).
    Two Monte Carlo cross-checks are reported beside it: plain prior sampling,
    ``log mean_k p(x|z_k)``, ``z_k ~ p(z)`` (unbiased for p(x), with a standard error),
    and the importance-sampling (IWAE) estimate of :mod:`tf_asvae.evaluation`, a
    stochastic lower bound whose weights are heavy-tailed here (q(z|x) is narrower than
    p(z|x) where the decoder switches), so single runs scatter on both sides.
reconstruction error
    AVB Table 1: "the mean cross-entropy between an input x and its reconstruction using
    the encoder and decoder networks": ``-log p(x|z) / 4`` with ``z ~ q(z|x)``, i.e. the
    binary cross-entropy per pixel (nats), averaged over pixels, codes and data points.
    (Per pixel rather than per image: with the paper's own ELBO, log-likelihood and KL
    only the per-pixel reading is consistent with ``I(x; z) <= log 4``.)
ELBO
    Explicit posteriors (VAE, AS-VAE): Monte Carlo ``E_q[log p(x|z) + log p(z) - log q(z|x)]``.
    AVB: the adversary's estimate ``E_q[log p(x|z) - T(x, z)]`` (``-loss`` of
    ``model.evaluate``; eq. 4.2's estimate with adaptive contrast), as in the paper.
KL(q(z) || p(z)) of the aggregate posterior ``q(z) = 1/4 sum_x q(z|x)``
    Explicit posteriors: exact on the grid from the densities.  All models (the only
    option for AVB's black box): a binned kernel density estimate of q(z) from encoder
    samples (histogram on a fine grid smoothed by a Gaussian kernel), integrated against
    p(z) on the same grid.  For the explicit models both are reported, which shows the
    density estimator's own error.  (The paper used the ITE package, a kNN estimator.)

Figures: ``latent_space.png`` (the paper's Figure 6: codes z ~ q(z|x) coloured by the
data point x, one panel per model) and ``training_curves.png`` (the exact
log-likelihood, on a coarser grid, after each epoch).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np

from trainers.experiments import common

KINDS = ("vae", "avb", "avb_ac", "asvae")
OPTIMUM = -math.log(4.0)
# AVB Table 1 (Mescheder et al. 2017).  No other model is in that table.
PAPER = {
    "vae": {"log_likelihood": -1.568, "reconstruction_error": 88.5e-3, "elbo": -1.697,
            "kl_aggregate": 0.165},
    "avb": {"log_likelihood": -1.403, "reconstruction_error": 5.77e-3, "elbo": -1.421,
            "kl_aggregate": 0.026},
}

FULL = dict(steps=4000, batch=512, epochs=20, learning_rate=1e-3, final_learning_rate=1e-4,
            grid_limit=6.0, grid_spacing=0.02, grid_tolerance=1e-3, min_spacing=0.005,
            curve_spacing=0.05, samples_per_point=100_000, recon_samples=10_000,
            kde_limit=5.0, kde_bin=0.025, kde_bandwidth=0.05, is_samples=5000,
            prior_samples=1_000_000, plot_points=1500)
QUICK = dict(steps=24, batch=128, epochs=2, learning_rate=1e-3, final_learning_rate=1e-4,
             grid_limit=6.0, grid_spacing=0.1, grid_tolerance=1e-3, min_spacing=0.05,
             curve_spacing=0.2, samples_per_point=4000, recon_samples=1000, kde_limit=5.0,
             kde_bin=0.1, kde_bandwidth=0.2, is_samples=200, prior_samples=10_000,
             plot_points=300)


# ------------------------------------------------------------------------------ data

def four_points() -> np.ndarray:
    """The data set's four images (one lit pixel each), [4, 2, 2, 1] float32."""
    return np.eye(4, dtype=np.float32).reshape(4, 2, 2, 1)


def all_binary_images() -> np.ndarray:
    """All 16 binary 2x2 images, [16, 2, 2, 1] float32."""
    bits = (np.arange(16)[:, None] >> np.arange(4)[None, :]) & 1
    return bits.astype(np.float32).reshape(16, 2, 2, 1)


# ------------------------------------------------------------------------------ grid

def latent_grid(limit: float, spacing: float):
    """Cell centres of a square grid over [-limit, limit]^2: (z [N, 2], axis [n], h^2)."""
    n = int(round(2 * limit / spacing))
    axis = -limit + spacing * (np.arange(n) + 0.5)
    zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return zz.astype(np.float32), axis, spacing ** 2


def _log_prior(z):
    return -0.5 * np.sum(np.square(z, dtype=np.float64), -1) - math.log(2 * math.pi)


def grid_log_likelihood(model, x, limit: float = 6.0, spacing: float = 0.02,
                        chunk: int = 32768) -> np.ndarray:
    """log p(x) for each image of ``x`` [K, 2, 2, 1] by the midpoint rule on the grid."""
    import tensorflow as tf

    z, _, area = latent_grid(limit, spacing)
    log_pz = _log_prior(z)
    x = tf.constant(x, tf.float32)[:, None]  # [K, 1, H, W, C] against codes [n]
    parts = []
    for s in range(0, len(z), chunk):
        log_px = model.observation(tf.constant(z[s:s + chunk])).log_prob(x).numpy()  # [K, n]
        terms = log_px.astype(np.float64) + log_pz[None, s:s + chunk]
        parts.append(_logsumexp(terms, axis=1))
    return _logsumexp(np.stack(parts, 1), axis=1) + math.log(area)


def converged_log_likelihood(model, x, limit: float, spacing: float, tol: float = 1e-3,
                             min_spacing: float = 0.005):
    """:func:`grid_log_likelihood` at ``spacing`` checked against ``2 * spacing`` and
    refined by halving while the mean over ``x`` changes by more than ``tol``.
    Returns (log p(x) [K], spacing used, [(spacing, mean log p(x)), ...])."""
    h = spacing
    prev = grid_log_likelihood(model, x, limit, 2 * h)
    cur = grid_log_likelihood(model, x, limit, h)
    trail = [(2 * h, float(np.mean(prev))), (h, float(np.mean(cur)))]
    while abs(np.mean(cur) - np.mean(prev)) > tol and h / 2 >= min_spacing - 1e-12:
        h /= 2
        prev, cur = cur, grid_log_likelihood(model, x, limit, h)
        trail.append((h, float(np.mean(cur))))
    return cur, h, trail


def prior_mc_log_likelihood(model, x, num_samples: int, seed: int = 0, chunk: int = 65536):
    """log p(x) ~ log mean_k p(x|z_k), z_k ~ p(z): (estimates [K], standard errors [K])."""
    import tensorflow as tf

    total, total_sq, n, i = np.zeros(len(x)), np.zeros(len(x)), 0, 0
    xt = tf.constant(x, tf.float32)[:, None]
    while n < num_samples:
        m = min(chunk, num_samples - n)
        z = tf.random.stateless_normal([m, 2], [seed, 5000 + i])
        p = np.exp(model.observation(z).log_prob(xt).numpy().astype(np.float64))  # [K, m]
        total += p.sum(1)
        total_sq += np.square(p).sum(1)
        n, i = n + m, i + 1
    mean = total / n
    sd = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return np.log(mean), sd / (np.sqrt(n) * mean)


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def grid_aggregate_kl(model, x, limit: float = 6.0, spacing: float = 0.02):
    """KL(q(z) || p(z)) for q(z) = mean_x q(z|x) from explicit posterior densities on the
    grid; returns (kl, mass of q on the grid)."""
    import tensorflow as tf

    z, _, area = latent_grid(limit, spacing)
    post = model.posterior(tf.constant(x, tf.float32))  # batch [K]
    log_q = post.log_prob(tf.constant(z)[:, None, :]).numpy().astype(np.float64)  # [N, K]
    log_q = _logsumexp(log_q, axis=1) - math.log(x.shape[0])
    q = np.exp(log_q)
    kl = float(np.sum(q * (log_q - _log_prior(z))) * area)
    return kl, float(np.sum(q) * area)


def kde_aggregate_kl(codes, limit: float = 5.0, bin_width: float = 0.025,
                     bandwidth: float = 0.05):
    """KL(q || N(0, I)) from samples ``codes`` [N, 2] of q: a binned Gaussian kernel
    density estimate of q (histogram over [-limit, limit]^2, smoothed with a kernel of
    standard deviation ``bandwidth``) integrated against p on the same grid.
    Returns (kl, fraction of samples inside the square)."""
    from scipy.ndimage import gaussian_filter

    codes = np.asarray(codes, np.float64).reshape(-1, 2)
    n = int(round(2 * limit / bin_width))
    edges = np.linspace(-limit, limit, n + 1)
    hist, _, _ = np.histogram2d(codes[:, 0], codes[:, 1], bins=[edges, edges])
    inside = hist.sum() / len(codes)
    dens = gaussian_filter(hist, bandwidth / bin_width, mode="constant")
    area = bin_width ** 2
    dens = dens / (dens.sum() * area)
    centres = 0.5 * (edges[1:] + edges[:-1])
    zz = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
    q = dens.reshape(-1)
    pos = q > 0
    kl = float(np.sum(q[pos] * (np.log(q[pos]) - _log_prior(zz[pos]))) * area)
    return kl, float(inside)


# ------------------------------------------------------------------------------ model terms

def posterior_codes(model, x, per_point: int, seed: int = 0, chunk: int = 16384):
    """Codes z ~ q(z|x) (any model, AVB's black box included): [K, per_point, 2]."""
    import tensorflow as tf

    k = x.shape[0]
    reps = max(1, chunk // k)
    out, i = [], 0
    while sum(o.shape[1] for o in out) < per_point:
        xr = tf.constant(np.repeat(x[None], reps, 0).reshape((-1,) + x.shape[1:]))
        z, _ = model.sample_posterior(xr, tf.constant([seed, 1000 + i], tf.int64))
        out.append(z.numpy().reshape(reps, k, -1).transpose(1, 0, 2))
        i += 1
    return np.concatenate(out, 1)[:, :per_point]


def reconstruction_error(model, x, codes) -> float:
    """Mean binary cross-entropy per pixel (nats) between x and p(x|z), z ~ q(z|x)."""
    import tensorflow as tf

    log_px = model.observation(tf.constant(codes, tf.float32)).log_prob(
        tf.constant(x, tf.float32)[:, None]).numpy()  # [K, S]
    return float(-np.mean(log_px) / np.prod(x.shape[1:]))


def elbo(model, x, samples: int, seed: int = 0):
    """(ELBO per data point, estimator description)."""
    import tensorflow as tf

    xr = np.repeat(x[None], max(1, samples // x.shape[0]), 0).reshape((-1,) + x.shape[1:])
    if model.explicit_posterior:
        z, log_q = model.sample_posterior(tf.constant(xr), tf.constant([seed, 7], tf.int64))
        log_px = model.observation(z).log_prob(tf.constant(xr))
        value = tf.reduce_mean(log_px + model._prior().log_prob(z) - log_q)
        return float(value), "Monte Carlo E_q[log p(x|z) + log p(z) - log q(z|x)]"
    logs = model.evaluate(xr, batch_size=len(xr), verbose=0, return_dict=True)
    what = "eq. 4.2 with r and T" if model.model_config.kind == "avb_ac" else "E_q[log p(x|z) - T(x,z)]"
    return -float(logs["loss"]), f"the adversary's estimate, {what}"


# ------------------------------------------------------------------------------ training

def train(kind: str, cfg: dict, seed: int = 0, curve: list | None = None):
    """Build and fit ``kind`` on the synthetic preset; record the exact log-likelihood
    (coarse grid) after each epoch into ``curve`` as (step, mean log p(x))."""
    import keras
    import tf_asvae
    from tf_asvae.data import synthetic_four_points

    keras.utils.set_random_seed(seed)
    model = tf_asvae.build_model(kind, "synthetic", seed=seed)
    steps_per_epoch = max(1, cfg["steps"] // cfg["epochs"])
    alpha = cfg["final_learning_rate"] / cfg["learning_rate"]

    def adam():
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            cfg["learning_rate"], cfg["epochs"] * steps_per_epoch, alpha=alpha))

    model.compile(optimizer=adam(), disc_optimizer=adam() if kind != "vae" else None)
    data = (synthetic_four_points(cfg["batch"] * steps_per_epoch, seed=seed)
            .batch(cfg["batch"], drop_remainder=True).repeat())
    x4 = four_points()

    class _Curve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if curve is not None:
                ll = grid_log_likelihood(model, x4, cfg["grid_limit"], cfg["curve_spacing"])
                curve.append(((epoch + 1) * steps_per_epoch, float(np.mean(ll))))
                print(f"  {kind} step {curve[-1][0]}: log p(x) = {curve[-1][1]:.4f}", flush=True)

    history = model.fit(data, epochs=cfg["epochs"], steps_per_epoch=steps_per_epoch,
                        callbacks=[_Curve()], verbose=0)
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def evaluate_model(model, cfg: dict, seed: int = 0) -> dict:
    from tf_asvae.evaluation import model_metrics

    x4, x16 = four_points(), all_binary_images()
    lim = cfg["grid_limit"]
    ll, h, trail = converged_log_likelihood(model, x4, lim, cfg["grid_spacing"],
                                            cfg["grid_tolerance"], cfg["min_spacing"])
    total = float(np.sum(np.exp(grid_log_likelihood(model, x16, lim, h))))
    mc, mc_se = prior_mc_log_likelihood(model, x4, cfg["prior_samples"], seed)
    codes = posterior_codes(model, x4, cfg["samples_per_point"], seed)
    kde_kl, inside = kde_aggregate_kl(codes.reshape(-1, 2), cfg["kde_limit"], cfg["kde_bin"],
                                      cfg["kde_bandwidth"])
    value, elbo_estimator = elbo(model, x4, cfg["recon_samples"], seed)
    is_ll = model_metrics.log_likelihood(model, x4, cfg["is_samples"], seed=seed)
    res = {
        "log_likelihood": float(np.mean(ll)),
        "log_likelihood_per_point": ll.tolist(),
        "grid_spacing": h, "grid_refinement": trail,
        "grid_convergence": float(abs(trail[-1][1] - trail[-2][1])),
        "total_probability_16_images": total,
        "prior_mc_log_likelihood": float(np.mean(mc)),
        "prior_mc_standard_error": float(np.sqrt(np.mean(np.square(mc_se))) / 2),
        "reconstruction_error": reconstruction_error(model, x4, codes[:, :cfg["recon_samples"]]),
        "elbo": value, "elbo_estimator": elbo_estimator,
        "kl_aggregate_kde": kde_kl, "kde_fraction_inside": inside,
        "importance_sampled_log_likelihood": float(np.mean(is_ll.log_likelihood)),
        "importance_sampling_ess": np.asarray(is_ll.effective_sample_size).tolist(),
        "importance_sampling_proposal": is_ll.proposal,
        "codes": codes[:, :cfg["plot_points"]],
    }
    if model.explicit_posterior:
        kl, mass = grid_aggregate_kl(model, x4, lim, cfg["grid_spacing"])
        res.update(kl_aggregate_exact=kl, q_mass_on_grid=mass)
    return res


# ------------------------------------------------------------------------------ figures

def plot_latent_space(results: dict, out_dir) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.6), squeeze=False)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    t = np.linspace(0, 2 * np.pi, 200)
    for ax, kind in zip(axes[0], kinds):
        codes = np.asarray(results[kind]["codes"])
        for i in range(codes.shape[0]):
            ax.scatter(codes[i, :, 0], codes[i, :, 1], s=2, alpha=0.4, c=colours[i],
                       edgecolors="none", label=f"x{i + 1}")
        for r in (1, 2, 3):
            ax.plot(r * np.cos(t), r * np.sin(t), "k:", lw=0.5)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.set_title(f"{kind}: log p(x) = {results[kind]['log_likelihood']:.3f}", fontsize=9)
    axes[0][0].legend(markerscale=4, fontsize=7, loc="lower left")
    fig.suptitle("z ~ q(z|x) coloured by data point (AVB Fig. 6); circles: prior 1, 2, 3 sd",
                 fontsize=9)
    return common.savefig(fig, out_dir, "latent_space.png")


def plot_curves(curves: dict, out_dir) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind, pts in curves.items():
        if pts:
            s, v = zip(*pts)
            ax.plot(s, v, marker=".", label=kind)
    ax.axhline(OPTIMUM, color="k", ls="--", lw=0.8, label="-log 4")
    ax.set_xlabel("training step")
    ax.set_ylabel("log p(x) (grid integration)")
    ax.set_ylim(max(-2.5, ax.get_ylim()[0]), -1.3)
    ax.legend(fontsize=8)
    return common.savefig(fig, out_dir, "training_curves.png")


# ------------------------------------------------------------------------------ main

def main(argv=None):
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--reuse", action="store_true",
                   help="load DIR/models/KIND.weights.h5 from an earlier run with the same "
                        "settings instead of training (re-evaluation only)")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    clock = common.Clock()
    hw = common.hardware()
    models_dir = pathlib.Path(args.out) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    results, curves, histories, reused = {}, {}, {}, []
    for kind in KINDS:
        weights, side = models_dir / f"{kind}.weights.h5", models_dir / f"{kind}.json"
        if args.reuse and weights.exists() and side.exists():
            import tf_asvae

            model = tf_asvae.build_model(kind, "synthetic", seed=args.seed)
            model.compile()  # evaluate() (the AVB ELBO estimate) needs a compiled model
            model.load_weights(str(weights))
            saved = json.loads(side.read_text())
            if saved["settings"] != cfg:
                raise ValueError(f"{side} was trained with other settings: {saved['settings']}")
            curves[kind], histories[kind] = saved["curve"], saved["history"]
            clock.stages[f"train {kind} (earlier run)"] = saved["train_s"]
            reused.append(kind)
        else:
            curves[kind] = []
            with clock(f"train {kind}"):
                model, histories[kind] = train(kind, cfg, args.seed, curves[kind])
            model.save_weights(str(weights))
            side.write_text(json.dumps(common.to_jsonable(
                {"settings": cfg, "curve": curves[kind], "history": histories[kind],
                 "train_s": clock.stages[f"train {kind}"]})))
        with clock(f"evaluate {kind}"):
            results[kind] = evaluate_model(model, cfg, args.seed)
        print(f"{kind}: log p(x) = {results[kind]['log_likelihood']:.4f}", flush=True)
    figures = [plot_latent_space(results, args.out), plot_curves(curves, args.out)]

    def grid(h):
        return f"midpoint rule, [-{cfg['grid_limit']:g}, {cfg['grid_limit']:g}]^2, h = {h:g}"

    kde = (f"binned Gaussian KDE of q(z) from {4 * cfg['samples_per_point']} codes "
           f"(bin {cfg['kde_bin']:g}, bandwidth {cfg['kde_bandwidth']:g})")
    rows = [{"quantity": "log-likelihood", "method": "optimum", "ours": OPTIMUM,
             "paper": OPTIMUM, "estimator": "-log 4"}]
    for kind in KINDS:
        r, p = results[kind], PAPER.get(kind, {})
        rows += [
            {"quantity": "log-likelihood", "method": kind, "ours": r["log_likelihood"],
             "paper": p.get("log_likelihood"),
             "estimator": f"exact: grid integration ({grid(r['grid_spacing'])}, converged "
                          f"to {r['grid_convergence']:.1e})"},
            {"quantity": "log-likelihood (prior MC)", "method": kind,
             "ours": r["prior_mc_log_likelihood"], "paper": None,
             "estimator": f"log mean p(x|z), {cfg['prior_samples']} z ~ p(z) per image "
                          f"(s.e. {r['prior_mc_standard_error']:.1e})"},
            {"quantity": "log-likelihood (IS)", "method": kind,
             "ours": r["importance_sampled_log_likelihood"], "paper": None,
             "estimator": f"IWAE bound, K = {cfg['is_samples']}, proposal "
                          f"{r['importance_sampling_proposal'].split(':')[0]}"},
            {"quantity": "reconstruction error", "method": kind,
             "ours": r["reconstruction_error"], "paper": p.get("reconstruction_error"),
             "estimator": "cross-entropy per pixel, z ~ q(z|x)"},
            {"quantity": "ELBO", "method": kind, "ours": r["elbo"], "paper": p.get("elbo"),
             "estimator": r["elbo_estimator"]},
        ]
        if "kl_aggregate_exact" in r:
            rows.append({"quantity": "KL(q(z) || p(z))", "method": kind,
                         "ours": r["kl_aggregate_exact"], "paper": p.get("kl_aggregate"),
                         "estimator": f"exact densities on the grid ({grid(cfg['grid_spacing'])})"})
        rows.append({"quantity": "KL(q(z) || p(z)) (KDE)", "method": kind,
                     "ours": r["kl_aggregate_kde"],
                     "paper": None if "kl_aggregate_exact" in r else p.get("kl_aggregate"),
                     "estimator": kde})
    budget = {
        "models": ", ".join(KINDS) + " (preset `synthetic`: MLPs 512-512, 2-d latent)",
        "steps per model": cfg["epochs"] * max(1, cfg["steps"] // cfg["epochs"]),
        "batch size": cfg["batch"],
        "optimizer": (f"Adam for both players, learning rate cosine-decayed from "
                      f"{cfg['learning_rate']:g} to {cfg['final_learning_rate']:g} "
                      "(paper default 1e-4 constant; raised for a CPU budget)"),
        "discriminator steps per generator step": 1,
        "data": "synthetic_four_points, a fresh uniform draw of the 4 images per example",
    }
    details = {kind: {k: v for k, v in r.items() if k != "codes"} for kind, r in results.items()}
    for kind in KINDS:
        details[kind]["ll_curve"] = curves[kind]
        details[kind]["history_final"] = {k: v[-1] for k, v in histories[kind].items()}
    notes = [
        "log-likelihoods are per data point, averaged over the four images; grid "
        "convergence = |mean log p(x) at h - at 2h| and the sum of p(x) over all 16 binary "
        "images are in results.json (details).",
        "AVB's KL uses the KDE only (no density); for VAE/AS-VAE both the exact grid value "
        "and the KDE are shown, the difference being the KDE's error.",
        "The AVB ELBO is the adversary's estimate (T stands in for log q - log p), as in the "
        "paper's Table 1; it is not a bound.",
        "Trained weights: DIR/models/KIND.weights.h5 (--reuse re-evaluates them).",
    ]
    if reused:
        notes.append(f"Models reused from an earlier run of this program: {', '.join(reused)}.")
    cmd = "python -m trainers.experiments.avb_synthetic --out DIR" + (" --quick" if args.quick else "")
    common.write_results(args.out, experiment="avb_synthetic",
                         title="AVB Table 1: synthetic 2x2 images, 2-d latent",
                         command=cmd, rows=rows, budget=budget, hardware_info=hw, clock=clock,
                         details=details, figures=figures, notes=notes)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
