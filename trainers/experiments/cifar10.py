"""AS-VAE Table 2: CIFAR-10 bits/dim, reconstruction RMSE and the Inception-score formula.

    python -m trainers.experiments.cifar10 --out runs/experiments/cifar10 \
        --manual-dir DIR_WITH_cifar-10-binary.tar.gz [--data-dir DIR] [--only asvae] \
        [--classifier auto|inception_v3|small|none|PATH.keras] [--quick] \
        [--epochs N --steps-per-epoch N --max-eval-examples N --num-samples K]

Trains ``asvae_r``, ``asvae_g`` and ``asvae`` on the ``cifar10`` preset (AS-VAE Fig. 6:
Gaussian p(x|z) and q(z|x), images dequantised with uniform noise and scaled to [0, 1])
with ``trainers.train`` (run directories ``DIR/runs/KIND``, resumable; a finished run is
reused by a re-run of the same command) and evaluates the best checkpoints with
``trainers.evaluate`` (reports and PNG grids in ``DIR/eval/``):

bits/dim
    The discretised 8-bit likelihood ``p(x = i | z) = P(x in [i/256, (i+1)/256] | z)``
    (AS-VAE Sec. 5.1) of the test images, ``-log P / (D ln 2)``, by importance sampling
    (``--num-samples`` K samples of q(z|x) per image), and with K = 1, the negative ELBO,
    which is the paper's estimator ("NLL estimated via the variational lower bound").
RMSE
    Of the reconstructions (decoder mean at the posterior mean code) on the 0-255 scale.
Inception-score formula
    ``exp(E_x KL(p(y|x) || p(y)))`` on ``--num-generated`` samples (decoder means at
    z ~ p(z)), 10 splits as Salimans et al.  ``--classifier auto`` (default) uses
    InceptionV3 with ImageNet weights (the paper's classifier; ``--inception-weights FILE``
    or a cached / downloadable copy) and otherwise falls back to this project's small
    CIFAR-10 CNN, trained here with ``trainers.train_classifier``: that number is the same
    formula with another classifier, NOT comparable with the paper's Inception scores, and
    the results say so.  The Frechet distance of the same classifier's activations is
    reported beside it.

If the data are missing the program stops before writing anything, with the data
module's error naming the file and the place it was expected.  ``--quick`` runs the same
code at a smoke size (2 training steps, narrow networks of the preset's layer types, a
few test images, IS samples and generated images); its numbers are not comparable with
the paper.  Figures: ``samples.png``, ``reconstructions.png``, ``training_curves.png``.

:func:`run` is the machinery shared with ``imagenet64`` (AS-VAE Table 3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import sys

from trainers.experiments import common

KINDS = ("asvae_r", "asvae_g", "asvae")
CLASSIFIER_CHOICES = ("auto", "inception_v3", "small", "none")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What distinguishes the natural-image experiments (CIFAR-10, ImageNet 64x64)."""

    experiment: str
    dataset: str
    title: str
    table: str                    # "AS-VAE Table 2"
    paper: dict                   # kind -> {"bpd", "rmse", "is"} (missing: not in the paper)
    full: dict
    quick: dict
    narrow: dict                  # --quick's ModelConfig changes
    default_kinds: tuple = KINDS
    small_classifier: bool = True  # trainers.train_classifier supports the data set
    data_note: str = ""


# AS-VAE Table 2.  Full setting: the paper gives no epoch count (Adam 1e-4, early stopping
# on the validation reconstruction); ``epochs`` is a ceiling.  IS: K = 1000 samples per
# test image (the paper's own number is the ELBO, K = 1, also reported); Inception score:
# 50000 generated images in 10 splits (Salimans et al. 2016).
FULL = dict(epochs=500, steps_per_epoch="all", validation_steps="all", batch_size=100,
            learning_rate=1e-4, lr_schedule="constant", adam_beta_1=0.9,
            patience=10, latent_dim=None, max_train_examples=None,
            shuffle_buffer=10_000, cache=True, max_eval_examples=None, eval_batch_size=100,
            num_samples=1000, num_generated=50_000, num_splits=10, classifier_epochs=10,
            classifier_max_train=None, num_images=64, narrow=False, verbose=2)
QUICK = dict(epochs=1, steps_per_epoch="2", validation_steps="1", batch_size=8,
             learning_rate=1e-4, lr_schedule="constant", adam_beta_1=0.9,
             patience=10, latent_dim=8, max_train_examples=16,
             shuffle_buffer=16, cache=True, max_eval_examples=8, eval_batch_size=8,
             num_samples=2, num_generated=8, num_splits=2, classifier_epochs=1,
             classifier_max_train=16, num_images=8, narrow=True, verbose=0)
NARROW = dict(network=dict(encoder_conv=((8, 3, 1), (8, 3, 2)), encoder_mlp=(32,),
                           decoder_mlp=(32,), decoder_start=(8, 8, 8),
                           decoder_deconv=((8, 3, 2), (8, 3, 2)), disc_x_conv=((8, 5, 2),),
                           disc_z_mlp=(16,), disc_joint_mlp=(16,)))

SETUP = Setup(
    experiment="cifar10", dataset="cifar10", table="AS-VAE Table 2",
    title="AS-VAE Table 2: CIFAR-10 bits/dim, reconstruction RMSE, Inception-score formula",
    paper={"asvae_r": {"bpd": 3.09, "rmse": 3.17, "is": 2.91},
           "asvae_g": {"bpd": 93.12, "rmse": 13.12, "is": 6.89},
           "asvae": {"bpd": 3.32, "rmse": 3.36, "is": 6.34}},
    full=FULL, quick=QUICK, narrow=NARROW,
    data_note="CIFAR-10: 45000 train / 5000 validation (the last 5000 training images) / "
              "10000 test images")


# ------------------------------------------------------------------------------ arguments

def build_parser(setup: Setup, description: str):
    p = common.parser(description)
    p.add_argument("--only", default=None,
                   help=f"comma-separated kinds among {list(KINDS)} "
                        f"(default: {','.join(setup.default_kinds)})")
    p.add_argument("--classifier", default="auto",
                   help="auto (InceptionV3 if its weights can be had, else "
                        + ("our small CNN" if setup.small_classifier else "none") + "), "
                        "inception_v3, small, none (no Inception-score formula), or a "
                        ".keras file from trainers.train_classifier")
    p.add_argument("--inception-weights", default=None,
                   help="local inception_v3_weights_tf_dim_ordering_tf_kernels.h5")
    g = common.add_run_flags(p, "the downloaded data files")
    g.add_argument("--latent-dim", type=int, default=None, help="default: the preset's")
    g.add_argument("--classifier-epochs", type=int, default=None,
                   help="epochs of the small classifier (--classifier small/auto fallback)")
    g = common.add_estimator_flags(p, "first N test images (default: the whole test split)")
    g.add_argument("--num-generated", type=int, default=None,
                   help="generated images for the Inception-score formula")
    g.add_argument("--num-splits", type=int, default=None)
    return p


def settings(setup: Setup, args) -> dict:
    return common.settings_from_args(
        setup.quick if args.quick else setup.full, args,
        ("epochs", "batch_size", "patience", "num_samples", "eval_batch_size",
         "num_generated", "num_splits", "classifier_epochs"),
        ("max_eval_examples", "max_train_examples", "latent_dim"))


def select(setup: Setup, only) -> list:
    if not only:
        return list(setup.default_kinds)
    kinds = [k.strip() for k in only.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--only: unknown kind(s) {unknown}. Accepted: {list(KINDS)}. "
                         f"Received: --only {only!r}")
    return [k for k in KINDS if k in kinds]


def train_argv(setup: Setup, kind: str, cfg: dict, args, run_dir) -> list:
    argv = common.base_train_argv(kind, setup.dataset, run_dir, f"{setup.experiment}_{kind}",
                                  cfg, args)
    if cfg["latent_dim"]:
        argv += ["--latent-dim", str(cfg["latent_dim"])]
    if not cfg["cache"]:
        argv += ["--no-cache"]
    return argv


def eval_argv(cfg: dict, args, run_dir, out, *, metrics, num_samples, num_images,
              classifier=None) -> list:
    argv = ["--run-dir", str(run_dir), "--metrics", metrics, "--num-samples", str(num_samples),
            "--batch-size", str(cfg["eval_batch_size"]), "--num-images", str(num_images),
            "--seed", str(args.seed), "--out", str(out),
            "--verbose", "1" if cfg["verbose"] else "0"]
    if cfg["max_eval_examples"]:
        argv += ["--max-examples", str(cfg["max_eval_examples"])]
    if classifier is not None:
        argv += ["--num-generated", str(cfg["num_generated"]),
                 "--num-splits", str(cfg["num_splits"])] + classifier["argv"]
    return argv


# ------------------------------------------------------------------------------ classifier

def resolve_classifier(setup: Setup, choice: str, args) -> dict:
    """Which classifier computes the Inception-score formula, decided before training.

    Returns ``{"kind": "inception_v3" | "small" | "file" | "none", "argv": evaluate flags,
    "reason": why (fallbacks)}``; the small classifier's file is made later by
    :func:`make_small_classifier`.  An explicit ``inception_v3`` without weights, or
    ``small`` where no small classifier exists, is a ValueError."""
    from tf_asvae.evaluation import classifiers as C

    choice = choice.strip()
    if choice == "none":
        return {"kind": "none", "argv": None, "reason": "--classifier none"}
    if choice in ("auto", "inception_v3"):
        weights, reason = args.inception_weights, None
        if weights is None:
            try:
                weights = C._download_inception_weights()  # cached copy, or one download
            except Exception as e:
                reason = f"InceptionV3 weights unavailable ({type(e).__name__}: {e})"
        elif not os.path.isfile(weights):
            reason, weights = f"no InceptionV3 weights file at {weights!r}", None
        if weights is not None:
            return {"kind": "inception_v3", "reason": None,
                    "argv": ["--classifier", C.INCEPTION_V3, "--inception-weights", weights]}
        if choice == "inception_v3":
            raise ValueError(f"--classifier inception_v3: {reason}. Pass --inception-weights "
                             "FILE, or --classifier small / none.")
        if setup.small_classifier:
            return {"kind": "small", "argv": None, "reason": reason}
        return {"kind": "none", "argv": None,
                "reason": f"{reason}; trainers.train_classifier has no classifier for "
                          f"{setup.dataset}"}
    if choice == "small":
        if not setup.small_classifier:
            raise ValueError(f"--classifier small: trainers.train_classifier has no classifier "
                             f"for {setup.dataset}. Use inception_v3, a .keras file or none.")
        return {"kind": "small", "argv": None, "reason": "--classifier small"}
    if choice in CLASSIFIER_CHOICES or not choice.endswith(".keras"):
        raise ValueError(f"--classifier must be one of {list(CLASSIFIER_CHOICES)} or a .keras "
                         f"file. Received: --classifier {choice!r}")
    if not os.path.isfile(choice):
        raise ValueError(f"No classifier file at {choice!r}. Received: --classifier {choice}")
    return {"kind": "file", "argv": ["--classifier", choice], "reason": None}


def make_small_classifier(setup: Setup, cfg: dict, args, out: pathlib.Path) -> dict:
    """Trains (or reuses) the small classifier of ``setup.dataset``
    (:func:`common.small_classifier`); returns its metadata."""
    return common.small_classifier(setup.dataset, cfg, args, out)


def classifier_label(clf: dict) -> str:
    if clf["kind"] == "inception_v3":
        return "InceptionV3 (ImageNet weights, Keras)"
    if clf["kind"] == "small":
        meta = clf.get("meta") or {}
        return (f"this project's small {meta.get('dataset', '')} CNN (trainers.train_classifier, "
                f"test accuracy {meta.get('test_accuracy', float('nan')):.3f})")
    if clf["kind"] == "file":
        return f"classifier file {os.path.basename(clf['argv'][1])}"
    return "none"


# ------------------------------------------------------------------------------ rows

def rows_for(setup: Setup, kind: str, res: dict, clf: dict) -> list:
    """Result rows of one model from ``res`` (``report``: the main evaluation report;
    ``elbo_report``: the K = 1 report; ``failure``: text when there is no checkpoint)."""
    paper = setup.paper.get(kind, {})
    metrics = (res.get("report") or {}).get("metrics", {})
    elbo = ((res.get("elbo_report") or {}).get("metrics") or {}).get("bpd", {})
    fail = res.get("failure")
    bpd = metrics.get("bpd", {})
    rows = [
        {"quantity": f"NLL, bits/dim ({setup.table})", "method": kind,
         "ours": bpd.get("value", fail), "paper": paper.get("bpd"),
         "estimator": f"discretised 8-bit likelihood, importance sampling (IWAE bound), "
                      f"K = {bpd.get('num_samples')}, proposal q(z|x); "
                      + common.metric_text(bpd)},
        {"quantity": f"NLL as -ELBO, bits/dim ({setup.table})", "method": kind,
         "ours": elbo.get("value", fail), "paper": paper.get("bpd"),
         "estimator": "discretised 8-bit likelihood, negative ELBO (one sample of q(z|x) per "
                      "image: the paper's estimator, Sec. 5.1); " + common.metric_text(elbo)},
    ]
    rmse = metrics.get("rmse", {})
    rows.append({"quantity": f"reconstruction RMSE, 0-255 scale ({setup.table})", "method": kind,
                 "ours": rmse.get("value", fail), "paper": paper.get("rmse"),
                 "estimator": "sqrt(mean (255 x - 255 x_hat)^2), x_hat: decoder mean at the "
                              "posterior mean code; " + common.metric_text(rmse)})
    score = metrics.get("is", {})
    paper_is = paper.get("is")
    if clf["kind"] == "none":
        rows.append({"quantity": f"Inception score ({setup.table})", "method": kind,
                     "ours": f"not computed ({clf['reason']})", "paper": paper_is,
                     "estimator": "-"})
        return rows
    n = (f"{score.get('num_samples')} generated images, splits mean "
         f"{_num(score.get('splits_mean'))} +- {_num(score.get('splits_std'))} over "
         f"{score.get('num_splits')} splits")
    if clf["kind"] == "inception_v3":
        rows.append({"quantity": f"Inception score ({setup.table})", "method": kind,
                     "ours": score.get("value", fail), "paper": paper_is,
                     "estimator": f"exp(E KL(p(y|x) || p(y))) with {classifier_label(clf)}; {n}"})
    else:
        rows.append({
            "quantity": "Inception-score formula with a non-Inception classifier "
                        "(NOT the Inception score)", "method": kind,
            "ours": score.get("value", fail),
            "paper": None if paper_is is None else
            f"not comparable (paper: {paper_is} with Inception)",
            "estimator": f"exp(E KL(p(y|x) || p(y))) with {classifier_label(clf)}; {n}"})
    fid = metrics.get("fid", {})
    rows.append({"quantity": "Frechet distance of classifier activations", "method": kind,
                 "ours": fid.get("value", fail), "paper": None,
                 "estimator": f"{classifier_label(clf)} activations ({fid.get('activations_dim')}"
                              f"-d), {fid.get('num_samples')} generated vs "
                              f"{fid.get('num_real_examples')} test images"})
    return rows


def _num(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


# ------------------------------------------------------------------------------ the run

def run(setup: Setup, argv=None, description: str = ""):
    """Parse, check the data, train, evaluate, write DIR/results.{json,md} and figures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(setup, description).parse_args(argv)
    cfg = settings(setup, args)
    kinds = select(setup, args.only)
    out = pathlib.Path(args.out)

    # Everything is validated, the data found and the classifier chosen before anything
    # is written (a missing data set raises tf_asvae.data.DataError here).
    changes = setup.narrow if cfg["narrow"] else None
    specs = {k: common.run_spec(train_argv(setup, k, cfg, args, out / "runs" / k), changes)
             for k in kinds}
    common.check_data(s.data for s in specs.values())
    common.check_runs(specs.values())
    clf = resolve_classifier(setup, args.classifier, args)

    clock, hw = common.Clock(), common.hardware()
    if clf["kind"] == "small":
        with clock("train the small classifier"):
            clf["meta"] = make_small_classifier(setup, cfg, args, out)
        clf["argv"] = ["--classifier", clf["meta"]["path"]]
    elif clf["kind"] == "file":
        from tf_asvae.evaluation import classifiers as C

        clf["meta"] = C.read_metadata(clf["argv"][1]) or None
    metrics = "bpd,rmse" + (",is,fid" if clf["argv"] else "")

    results, trained, histories = {}, {}, {}
    for kind, spec in specs.items():
        trained[kind] = common.train_run(spec, clock, f"train {kind}")
        histories[kind] = trained[kind]["history"]
        res = {}
        if not common.has_checkpoint(spec.run_dir):
            res["failure"] = f"no checkpoint ({trained[kind]['status']})"
            results[kind] = res
            continue
        stage = f"evaluate {kind}"
        with clock(stage):
            path = out / "eval" / f"{kind}.json"
            res["report"], res["reused"] = common.evaluate_run(eval_argv(
                cfg, args, spec.run_dir, path, metrics=metrics, num_samples=cfg["num_samples"],
                num_images=cfg["num_images"], classifier=clf if clf["argv"] else None),
                clock, stage)
            res["elbo_report"], _ = common.evaluate_run(eval_argv(
                cfg, args, spec.run_dir, out / "eval" / f"{kind}_elbo.json", metrics="bpd",
                num_samples=1, num_images=0), clock, stage)
            res["report_path"] = str(path)
        results[kind] = res
        print(f"{kind}: " + "; ".join(f"{r['quantity']} {r['ours']}"
                                      for r in rows_for(setup, kind, res, clf)), flush=True)

    rows = [r for k in kinds for r in rows_for(setup, k, results[k], clf)]
    real = next((results[k]["report"]["metrics"]["is"] for k in kinds
                 if "is" in ((results[k].get("report") or {}).get("metrics") or {})), None)
    if real is not None:
        rows.append({"quantity": "Inception-score formula of the real test images (reference)",
                     "method": "test data", "ours": real.get("real_data_value"), "paper": None,
                     "estimator": f"{classifier_label(clf)}, {real.get('num_real_examples')} "
                                  "test images"})
    reports = {k: (results[k].get("report_path", ""), results[k].get("report")) for k in kinds}
    figures = common.run_figures(reports, histories, out, setup.dataset)

    budget, notes = describe(setup, kinds, cfg, args, specs, trained, clf)
    details = {k: common.run_details(specs[k], trained[k], results[k]) for k in kinds}
    details["classifier"] = {"kind": clf["kind"], "label": classifier_label(clf),
                             "reason": clf["reason"], "metadata": clf.get("meta"),
                             "comparable_with_paper": clf["kind"] == "inception_v3"}
    cmd = (f"python -m trainers.experiments.{setup.experiment} "
           + " ".join(shlex.quote(a) for a in argv))
    return common.write_results(out, experiment=setup.experiment, title=setup.title,
                                command=cmd, rows=rows, budget=budget, hardware_info=hw,
                                clock=clock, details=details, figures=figures, notes=notes)


def describe(setup: Setup, kinds, cfg, args, specs, trained, clf):
    spec = next(iter(specs.values()))
    steps = cfg["steps_per_epoch"]
    steps_text = ("one pass over the training set" if str(steps).lower() == "all"
                  else f"{steps} steps")
    budget = {
        "models": ", ".join(kinds),
        "training (each model)": (
            f"trainers.train: at most {cfg['epochs']} epochs of {steps_text} with batches of "
            f"{cfg['batch_size']} images, {common.adam_text(cfg)} for "
            f"every player, {spec.model.objective.disc_steps} discriminator step(s) per step, "
            f"early stopping on the validation reconstruction of x and z (patience "
            f"{cfg['patience']}, {cfg['validation_steps']} validation batches per epoch); the "
            "best epoch's weights (best.keras) are evaluated"
            + (f"; the first {cfg['max_train_examples']} training images only"
               if cfg["max_train_examples"] else "")),
        "epochs trained": ", ".join(f"{k}: {trained[k]['epochs_trained']} "
                                    f"({trained[k]['status']})" for k in kinds),
        "architecture": (f"the {spec.model.preset} preset (AS-VAE App. B), Gaussian p(x|z) and "
                         f"q(z|x), latent {spec.model.latent_dim}"
                         + (", narrowed for --quick (widths 8-32)" if cfg["narrow"] else "")),
        "data": (f"{setup.data_note}; training images dequantised (x + u) / 256, test images "
                 "at the bin centres (x + 0.5) / 256"),
        "estimators": (
            f"bits/dim: importance sampling with K = {cfg['num_samples']} and the -ELBO "
            f"(K = 1); RMSE; batches of {cfg['eval_batch_size']}, "
            f"{cfg['max_eval_examples'] or 'all'} test images"),
        "Inception-score formula": (
            "not computed" if clf["kind"] == "none" else
            f"{classifier_label(clf)}; {cfg['num_generated']} generated images, "
            f"{cfg['num_splits']} splits"),
        "seed": args.seed,
    }
    if clf["kind"] == "small":
        meta = clf.get("meta") or {}
        budget["small classifier"] = (
            f"trainers.train_classifier, {meta.get('epochs')} epochs on "
            f"{meta.get('num_train_examples')} training images, test accuracy "
            f"{meta.get('test_accuracy')} on {meta.get('num_test_examples')} images"
            + (" (reused from an earlier invocation)" if meta.get("reused") else ""))
    notes = []
    if args.quick:
        notes.append("--quick: a smoke-sized budget (2 training steps, narrow networks, a few "
                     "test images, samples and generated images); the numbers are not "
                     "comparable with the paper.")
    notes.append(f"{setup.table}'s NLL is the variational bound (AS-VAE Sec. 5.1: 'our "
                 "negative ELBO is an upper bound of NLL'), so the '-ELBO' rows are the "
                 "like-for-like comparison; the IS rows are a tighter bound of the same models.")
    notes.append("Bits/dim are not bounded by 8: a model worse than the uniform distribution "
                 "over 256 levels has more (AS-VAE-g: 93.12 in the paper).")
    if clf["kind"] == "inception_v3":
        notes.append("Inception scores from Keras' InceptionV3 (1000 classes); TF-GAN's "
                     "published scores use the 2015 Inception graph (1008 logits): close, not "
                     "identical.")
    elif clf["kind"] in ("small", "file"):
        notes.append(f"The Inception-score formula was computed with {classifier_label(clf)}, "
                     "not with the Inception network: the number is NOT comparable with the "
                     "paper's Inception scores (reason: "
                     f"{clf['reason'] or 'a classifier file was given'}).")
    else:
        notes.append(f"No Inception-score formula: {clf['reason']}.")
    notes += common.training_notes({k: trained[k] for k in kinds})
    return budget, notes


def main(argv=None):
    return run(SETUP, argv, __doc__.split("\n")[0])


def cli(module: str, entry) -> None:
    """``python -m`` entry: data and argument errors exit with status 2 and the message."""
    try:
        entry()
    except ValueError as e:  # includes tf_asvae.data.DataError
        print(f"trainers.experiments.{module}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli("cifar10", main)
