"""AS-VAE Table 1 and AVB Table 2: likelihoods on MNIST and binarized MNIST.

    python -m trainers.experiments.mnist --out runs/experiments/mnist \
        --manual-dir ../shared/data [--data-dir DIR] [--budget full|cpu|quick] \
        [--only table1,table2/avb_ac] [--stabilizer paper|default] [--objective KEY=VALUE] \
        [--network KEY=VALUE] \
        [--epochs N --steps-per-epoch N --max-eval-examples N --num-samples K --ais-steps T]

Every model is trained by ``trainers.train`` (a run directory ``DIR/runs/NAME`` with
``best.keras``, resumable: re-running the same command resumes an interrupted run and
skips a finished one) and evaluated by ``trainers.evaluate`` (reports and PNG grids in
``DIR/eval/``; a report is reused when its settings and checkpoint are unchanged).

Table 1 (AS-VAE, Pu et al. 2017): MNIST, dynamically binarised in training (a fresh
binary image ``1[u < x/255]`` each time an example is seen; the test set is one fixed
binarisation), the ``mnist`` preset (AS-VAE Fig. 5) with the length-80 planar flow on
q(z|x), for ``vae`` (the "NF (k=80)" column), ``asvae_r``, ``asvae_g`` and ``asvae``.
Reported: the NLL in nats by importance sampling (IWAE bound, ``--num-samples`` K
samples of q(z|x) per test image) and the negative ELBO (the same estimator with K = 1),
which is the paper's estimator (Sec. 5.1: "NLL estimated via the variational lower bound").

Table 2 (AVB, Mescheder et al. 2017): Larochelle's binarized MNIST, 8-d and 32-d latent
spaces, ``avb``, ``avb_ac`` (adaptive contrast) and ``vae`` (diagonal Gaussian posterior,
the paper's baseline).  Reported: log p(x) by annealed importance sampling (the paper:
1000 intermediate distributions, 5 chains, 2048 test images), the ELBO (for the VAE the
single-sample ELBO; for AVB the adversary's estimate ``E_q[log p(x|z) - T(x, z)]``, eq. 4.2
with adaptive contrast: the model's own test-step objective, as the paper's "~" entries)
and, as a cross-check, log p(x) by importance sampling (AVB: with the adaptive-contrast
Gaussian r(z|x) as proposal).

Every entry is also reported with the game's health diagnostics (``trainers.evaluate
--metrics diag``: ``kl_exact``, the critic f_psi1's log-ratio error, the train/inference
gap of the reconstruction term, the posterior's scale) and the classifier score
(Inception-score formula) of ``num_generated`` samples with this project's small MNIST
classifier (``trainers.train_classifier``, trained once into ``OUT/classifier/``).

Budgets (``--budget``): ``full`` (the papers' protocol; needs a GPU), ``cpu`` (at most
90 minutes on 2 CPU cores: every Table 1 kind and the 32-d Table 2 models, 5 epochs at
learning rate 1e-3, a planar flow of length 10, IS with K = 200 on 1000 test images,
AIS with 100 steps on 100 images, 10,000 generated images for the classifier score;
docs/RESULTS.md has its numbers) and ``quick`` (``--quick``: 2 training steps, narrow
networks (the preset's layer types), a planar flow of length 2, a few test images, IS
samples and AIS transitions; a smoke test whose numbers are not comparable with the
papers).  Figures: ``samples.png``, ``reconstructions.png`` (from the evaluation's
grids) and ``training_curves.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shlex
import sys

import numpy as np

from tf_asvae.config import DEFAULT_GRADIENT_PENALTY, STABILIZER_FIELDS
from trainers.experiments import common

TABLES = ("table1", "table2")
LATENTS_T2 = (8, 32)
KINDS_T1 = ("vae", "asvae_r", "asvae_g", "asvae")
KINDS_T2 = ("avb", "avb_ac", "vae")
DATASET = {"table1": "mnist", "table2": "binarized_mnist"}

# AS-VAE Table 1: NLL in nats (the "vae" row is the NF (k=80) column, Rezende & Mohamed).
PAPER_T1 = {"vae": 85.1, "asvae_r": 81.14, "asvae_g": 146.32, "asvae": 82.51}
# AVB Table 2: (ELBO, AIS log p(x)) in nats; AVB's ELBO entries are the adversary's
# estimates ("~" in the paper).  The paper has no AVB (32-d) without adaptive contrast.
PAPER_T2 = {("avb", 8): (-83.6, -91.2), ("avb_ac", 8): (-96.3, -89.6),
            ("avb_ac", 32): (-79.5, -80.2), ("vae", 8): (-98.1, -90.9),
            ("vae", 32): (-87.2, -81.9)}

# Full setting.  The papers give no epoch count (AS-VAE: Adam 1e-4, early stopping on the
# validation reconstruction of x and z); ``epochs`` is a ceiling and early stopping with
# ``patience`` ends training.  IS: K = 5000 (Burda et al. 2016's protocol); AIS: AVB's
# 1000 intermediate distributions, 5 chains, 2048 test images.
FULL = dict(epochs=500, steps_per_epoch="all", validation_steps="all", batch_size=100,
            learning_rate=1e-4, lr_schedule="constant", adam_beta_1=0.9,
            patience=10, flow_length=80, latent_dim=None,
            max_train_examples=None, shuffle_buffer=10_000, max_eval_examples=None,
            eval_batch_size=100, num_samples=5000, ais_steps=1000, ais_chains=5,
            ais_leapfrog=10, ais_adaptation_steps=None, ais_max_examples=2048,
            num_images=64, narrow=False, verbose=2, latents_t2=LATENTS_T2,
            num_generated=10_000, num_splits=10, classifier_epochs=5,
            classifier_max_train=None)
# At most 90 minutes on 2 CPU cores (docs/RESULTS.md): the Table 1 kinds and the 32-d
# Table 2 models, 5 epochs each at learning rate 1e-3 (the paper's 1e-4 is for hundreds of
# epochs), the planar flow shortened to 10 layers.  The learning rate's schedule per table,
# as measured at this budget (docs/RESULTS.md, "Longer runs and schedules"): a cosine
# decay brings AVB+AC from 5.2 nats behind the 32-d VAE to 1.1 (IS), and costs Table 1's
# kinds 0.6-1.6 nats, so Table 1 keeps the papers' constant rate.  Both models of a table
# always share one schedule.
CPU_LR_SCHEDULE = {"table1": "constant", "table2": "cosine"}
CPU = dict(FULL, epochs=5, validation_steps="20", learning_rate=1e-3, patience=5,
           lr_schedule=CPU_LR_SCHEDULE,
           flow_length=10, max_eval_examples=1000, num_samples=200, ais_steps=100,
           ais_chains=4, ais_max_examples=100, latents_t2=(32,), classifier_epochs=3)
QUICK = dict(epochs=1, steps_per_epoch="2", validation_steps="1", batch_size=16,
             learning_rate=1e-4, lr_schedule="constant", adam_beta_1=0.9,
             patience=10, flow_length=2, latent_dim=8,
             max_train_examples=64, shuffle_buffer=64, max_eval_examples=16,
             eval_batch_size=8, num_samples=4, ais_steps=3, ais_chains=2, ais_leapfrog=2,
             ais_adaptation_steps=3, ais_max_examples=4, num_images=16, narrow=True,
             verbose=0, latents_t2=LATENTS_T2, num_generated=16, num_splits=2,
             classifier_epochs=1, classifier_max_train=64)
BUDGETS = {"full": FULL, "cpu": CPU, "quick": QUICK}
# --quick: the MNIST preset's layer types (strided convolutions, MLPs, transposed
# convolutions, joint critic) at narrow widths.
NARROW = dict(network=dict(encoder_conv=((8, 3, 2), (8, 3, 2)), encoder_mlp=(32,),
                           decoder_mlp=(32,), decoder_start=(7, 7, 8),
                           decoder_deconv=((8, 3, 2), (8, 3, 2)), disc_x_conv=((8, 3, 2),),
                           disc_z_mlp=(16,), disc_joint_mlp=(16,), noise_dim=8))


@dataclasses.dataclass(frozen=True)
class Entry:
    """One trained model of one table."""

    table: str
    kind: str
    latent: int | None = None  # Table 2's latent size; Table 1 uses --latent-dim / preset

    @property
    def name(self) -> str:
        return f"{self.table}/{self.kind}" + (f"-{self.latent}d" if self.latent else "")

    @property
    def label(self) -> str:
        return self.kind + (f" ({self.latent}-d)" if self.latent else "")

    @property
    def panel(self) -> str:
        """The label of the entry's figure panels and curves."""
        return ("AS-VAE T1: " if self.table == "table1" else "AVB T2: ") + self.label

    @property
    def slug(self) -> str:
        return self.name.replace("/", "_")

    def matches(self, token: str) -> bool:
        keys = {self.table, self.kind, self.name, f"{self.table}/{self.kind}"}
        if self.latent:
            keys |= {f"{self.latent}d", f"{self.table}/{self.latent}d"}
        return token in keys


ENTRIES = tuple([Entry("table1", k) for k in KINDS_T1]
                + [Entry("table2", k, d) for d in LATENTS_T2 for k in KINDS_T2])


def select(only: str | None, latents_t2=LATENTS_T2) -> list:
    """The entries named by ``--only`` (comma-separated tables, kinds, ``table/kind`` or
    entry names such as ``table2/avb_ac-8d``); when None, every Table 1 entry and the
    Table 2 entries of the latent sizes ``latents_t2`` (the budget's)."""
    if not only:
        return [e for e in ENTRIES if e.table == "table1" or e.latent in latents_t2]
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    unknown = [t for t in tokens if not any(e.matches(t) for e in ENTRIES)]
    if unknown or not tokens:
        raise ValueError(f"--only: unknown item(s) {unknown}. Accepted: tables {list(TABLES)}, "
                         f"kinds, TABLE/KIND, or entries {[e.name for e in ENTRIES]}. "
                         f"Received: --only {only!r}")
    return [e for e in ENTRIES if any(e.matches(t) for t in tokens)]


# ------------------------------------------------------------------------------ arguments

def build_parser():
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--budget", default=None, choices=tuple(BUDGETS),
                   help="named setting: full (the papers'), cpu (<= 90 min on 2 cores), "
                        "quick (= --quick); default full")
    p.add_argument("--stabilizer", default=None,
                   help="the critics' remedies by name (trainers.train --stabilizer)")
    p.add_argument("--objective", action="append", default=[], metavar="KEY=VALUE",
                   help="an ObjectiveConfig field for every model (trainers.train "
                        "--objective; repeatable)")
    p.add_argument("--network", action="append", default=[], metavar="KEY=VALUE",
                   help="a NetworkConfig field for every model (trainers.train --network; "
                        "repeatable), e.g. noise_encoder=basis")
    p.add_argument("--only", default=None,
                   help="comma-separated subset: table1, table2, a kind (asvae_r), TABLE/KIND "
                        "or an entry (table2/avb_ac-8d); default: everything")
    g = common.add_run_flags(p, "the downloaded MNIST / binarized MNIST files")
    g.add_argument("--flow-length", type=int, default=None,
                   help="planar flow on q(z|x) in Table 1 (paper: 80)")
    g = common.add_estimator_flags(
        p, "first N test images for IS and the ELBO (default: all 10000)")
    g.add_argument("--ais-steps", type=int, default=None, help="AIS intermediate distributions")
    g.add_argument("--ais-chains", type=int, default=None)
    g.add_argument("--ais-leapfrog", type=int, default=None)
    g.add_argument("--ais-max-examples", type=int, default=None,
                   help="test images for AIS (paper: 2048)")
    g.add_argument("--num-generated", type=int, default=None,
                   help="generated images for the classifier score")
    return p


def budget_name(args) -> str:
    if args.quick and args.budget not in (None, "quick"):
        raise ValueError(f"--quick is --budget quick. Received: --quick --budget {args.budget}")
    return "quick" if args.quick else (args.budget or "full")


def settings(args) -> dict:
    """The budget's setting with the command line's overrides."""
    return common.settings_from_args(
        BUDGETS[budget_name(args)], args,
        ("epochs", "batch_size", "patience", "num_samples", "ais_steps", "ais_chains",
         "ais_leapfrog", "eval_batch_size", "num_generated"),
        ("max_eval_examples", "ais_max_examples", "max_train_examples"))


def entry_settings(entry: Entry, cfg: dict) -> dict:
    """``cfg`` with the settings that the budget gives per table resolved for ``entry``."""
    if isinstance(cfg["lr_schedule"], dict):
        cfg = dict(cfg, lr_schedule=cfg["lr_schedule"][entry.table])
    return cfg


def train_argv(entry: Entry, cfg: dict, args, run_dir) -> list:
    cfg = entry_settings(entry, cfg)
    argv = common.base_train_argv(entry.kind, DATASET[entry.table], run_dir, entry.slug, cfg,
                                  args)
    if args.stabilizer:
        argv += ["--stabilizer", args.stabilizer]
    for item in args.objective:
        argv += ["--objective", item]
    for item in args.network:
        argv += ["--network", item]
    if entry.table == "table1":
        argv += ["--binarize", "dynamic", "--flow-length", str(cfg["flow_length"])]
        if cfg["latent_dim"]:
            argv += ["--latent-dim", str(cfg["latent_dim"])]
    else:
        argv += ["--latent-dim", str(entry.latent)]
        if entry.kind == "vae":
            argv += ["--flow-length", "0"]  # AVB's baseline: diagonal Gaussian posterior
    return argv


def ais_batch_size(cfg: dict) -> int:
    """AIS runs in its own evaluation with batches no larger than its example count: the
    estimator pads a short batch to the full size, and AIS is the costly part."""
    n = cfg["ais_max_examples"] or cfg["max_eval_examples"]
    return min(cfg["eval_batch_size"], n) if n else cfg["eval_batch_size"]


def eval_argv(entry: Entry, cfg: dict, args, run_dir, out, *, metrics, num_samples,
              num_images, batch_size=None, classifier=None) -> list:
    batch_size = batch_size or cfg["eval_batch_size"]
    argv = ["--run-dir", str(run_dir), "--metrics", metrics, "--num-samples", str(num_samples),
            "--batch-size", str(batch_size), "--num-images", str(num_images),
            "--seed", str(args.seed), "--out", str(out),
            "--verbose", "1" if cfg["verbose"] else "0"]
    if classifier is not None:
        argv += ["--classifier", classifier, "--num-generated", str(cfg["num_generated"]),
                 "--num-splits", str(cfg["num_splits"])]
    if cfg["max_eval_examples"]:
        argv += ["--max-examples", str(cfg["max_eval_examples"])]
    if "ais" in metrics:
        argv += ["--ais-steps", str(cfg["ais_steps"]), "--ais-chains", str(cfg["ais_chains"]),
                 "--ais-leapfrog", str(cfg["ais_leapfrog"])]
        if cfg["ais_max_examples"]:
            argv += ["--ais-max-examples", str(cfg["ais_max_examples"])]
        if cfg["ais_adaptation_steps"]:
            argv += ["--ais-adaptation-steps", str(cfg["ais_adaptation_steps"])]
    return argv


# ------------------------------------------------------------------------------ the ELBO

def test_objective(run_dir, batch_size: int, max_examples=None) -> dict:
    """The model's own test-step objective ``-loss`` on the test split, from its best
    checkpoint: the single-sample ELBO ``log p(x|z) + log p(z) - log q(z|x)`` for a VAE;
    AVB's estimate ``log p(x|z) - T(x, z)`` (eq. 3.7) or, with adaptive contrast,
    ``log p(x|z) + log p(z) - log r(z|x) - T(x, z~)`` (eq. 4.2), in which the adversary
    stands in for ``log q(z|x) - log p(z)`` (an estimate, not a bound).
    Returns ``{"value", "standard_error" (over equal batches), "num_examples"}``."""
    import keras

    import tf_asvae  # noqa: F401  (registers the model classes)
    from tf_asvae import data as D
    from trainers import evaluate as E

    run_dir = pathlib.Path(run_dir)
    config = json.loads((run_dir / E.CONFIG_FILE).read_text())
    data = D.DataConfig.from_dict({**config["data"], "batch_size": batch_size,
                                   "max_examples": max_examples})
    model = keras.saving.load_model(str(run_dir / E.BEST_FILE), compile=False)
    model.compile()
    sums, sizes = [], []
    for x in D.load_split(data, "test", training=False):
        logs = model.test_on_batch(x, return_dict=True)
        sums.append(-float(logs["loss"]) * int(x.shape[0]))
        sizes.append(int(x.shape[0]))
    n = sum(sizes)
    value = sum(sums) / n
    full = [s / k for s, k in zip(sums, sizes) if k == batch_size]
    se = float(np.std(full, ddof=1) / math.sqrt(len(full))) if len(full) > 1 else float("nan")
    return {"value": value, "standard_error": se, "num_examples": n}


# ------------------------------------------------------------------------------ rows

# The diagnostics reported for every entry: (report key, quantity).
DIAGNOSTIC_ROWS = (
    ("kl_exact", "E[log q(z|x) - log p(z)] (kl_exact), nats"),
    ("adv_x", "f_psi1's mean logit on (x, z ~ q(z|x)), nats"),
    ("adv", "T's mean logit on (x, z ~ q(z|x)), nats"),
    ("d1_ratio_rel", "f_psi1 log-ratio error, relative"),
    ("d1_ratio_error", "f_psi1 log-ratio error, nats"),
    ("recon_gap", "train/inference gap of -log p(x|z), nats"),
    ("posterior_scale", "posterior scale (median over latent dimensions)"),
)


def health_rows(entry: Entry, res: dict) -> list:
    """The classifier score of the samples and the game's diagnostics (test images)."""
    metrics = (res.get("report") or {}).get("metrics", {})
    rows = []
    score = metrics.get("is")
    if score:
        rows.append({"quantity": "classifier score of samples (Inception-score formula, "
                                 "this project's MNIST classifier)",
                     "method": entry.label, "ours": score["value"], "paper": None,
                     "estimator": f"exp(E KL(p(y|x) || p(y))) of {score['num_samples']} "
                                  f"decoder means at z ~ p(z); real test images: "
                                  f"{score['real_data_value']:.3f}"})
    for key, quantity in DIAGNOSTIC_ROWS:
        entry_metric = metrics.get(key)
        if entry_metric:
            rows.append({"quantity": quantity, "method": entry.label,
                         "ours": entry_metric["value"], "paper": None,
                         "estimator": f"trainers.evaluate --metrics diag: "
                                      f"{entry_metric['estimator']}; "
                                      f"{entry_metric['num_examples']} test images"})
    return rows


def rows_for(entry: Entry, res: dict, cfg: dict) -> list:
    """The result rows of one entry from its evaluation results ``res`` (``report``:
    the trainers.evaluate report (IS); Table 1 ``elbo_report``: the K = 1 report; Table 2
    ``ais_report``: the AIS report and ``elbo``: :func:`test_objective`'s dict)."""
    metrics = (res.get("report") or {}).get("metrics", {})
    rows = []
    if entry.table == "table1":
        paper = PAPER_T1[entry.kind]
        nll = metrics.get("nll", {})
        flow = res.get("flow_length", cfg["flow_length"])
        rows.append({"quantity": "NLL, nats (AS-VAE Table 1)", "method": entry.label,
                     "ours": nll.get("value", res.get("failure")), "paper": paper,
                     "estimator": f"importance sampling (IWAE bound), "
                                  f"K = {nll.get('num_samples')}, proposal q(z|x) with a "
                                  f"planar flow of length {flow}; "
                                  + common.metric_text(nll)})
        elbo = ((res.get("elbo_report") or {}).get("metrics") or {}).get("nll", {})
        rows.append({"quantity": "NLL as -ELBO, nats (AS-VAE Table 1)", "method": entry.label,
                     "ours": elbo.get("value", res.get("failure")), "paper": paper,
                     "estimator": "negative ELBO, one sample of q(z|x) per image (the paper's "
                                  "estimator, Sec. 5.1); " + common.metric_text(elbo)})
        return rows + health_rows(entry, res)
    paper_elbo, paper_ais = PAPER_T2.get((entry.kind, entry.latent), (None, None))
    ais = ((res.get("ais_report") or {}).get("metrics") or {}).get("ais", {})
    rows.append({"quantity": "log p(x) by AIS, nats (AVB Table 2)", "method": entry.label,
                 "ours": -ais["value"] if "value" in ais else res.get("failure"),
                 "paper": paper_ais,
                 "estimator": f"AIS, {ais.get('num_steps')} intermediate distributions, "
                              f"{ais.get('num_chains')} chains, {ais.get('num_leapfrog_steps')} "
                              f"leapfrog steps; " + common.metric_text(ais)})
    elbo = res.get("elbo") or {}
    what = ("single-sample ELBO" if entry.kind == "vae" else
            "adversary's estimate E_q[log p(x|z) - T(x,z)], eq. 3.7" if entry.kind == "avb"
            else "adversary's estimate with adaptive contrast, eq. 4.2")
    rows.append({"quantity": "ELBO, nats (AVB Table 2)", "method": entry.label,
                 "ours": elbo.get("value", res.get("failure")), "paper": paper_elbo,
                 "estimator": f"{what} (the model's test objective); "
                              + common.metric_text(elbo)})
    nll = metrics.get("nll", {})
    proposal = str(nll.get("proposal", "")).split(":")[0]
    rows.append({"quantity": "log p(x) by IS, nats (cross-check)", "method": entry.label,
                 "ours": -nll["value"] if "value" in nll else res.get("failure"), "paper": None,
                 "estimator": f"IWAE bound, K = {nll.get('num_samples')}, proposal {proposal}; "
                              + common.metric_text(nll)})
    return rows + health_rows(entry, res)


# ------------------------------------------------------------------------------ main

def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = settings(args)
    entries = select(args.only, cfg["latents_t2"])
    out = pathlib.Path(args.out)

    # Everything is validated, and the data found, before anything is written.
    changes = NARROW if cfg["narrow"] else None
    specs = {e: common.run_spec(train_argv(e, cfg, args, out / "runs" / e.slug), changes)
             for e in entries}
    common.check_data(s.data for s in specs.values())
    common.check_runs(specs.values())

    clock, hw = common.Clock(), common.hardware()
    results, histories, trained = {}, {}, {}
    eval_dir = out / "eval"
    with clock("classifier"):
        classifier = common.small_classifier("mnist", cfg, args, out)
    for entry, spec in specs.items():
        trained[entry] = common.train_run(spec, clock, f"train {entry.name}")
        histories[entry.panel] = trained[entry]["history"]
        res = {"flow_length": spec.model.flows.posterior_flow_length}
        if not common.has_checkpoint(spec.run_dir):
            res["failure"] = f"no checkpoint ({trained[entry]['status']})"
            results[entry] = res
            continue
        stage = f"evaluate {entry.name}"
        with clock(stage):
            path = eval_dir / f"{entry.slug}.json"
            # Both tables: importance-sampled NLL (and the image grids).
            res["report"], res["reused"] = common.evaluate_run(eval_argv(
                entry, cfg, args, spec.run_dir, path, metrics="nll,diag,is",
                num_samples=cfg["num_samples"], num_images=cfg["num_images"],
                classifier=classifier["path"]), clock, stage)
            if entry.table == "table1":
                res["elbo_report"], _ = common.evaluate_run(eval_argv(
                    entry, cfg, args, spec.run_dir, eval_dir / f"{entry.slug}_elbo.json",
                    metrics="nll", num_samples=1, num_images=0), clock, stage)
            else:
                res["ais_report"], _ = common.evaluate_run(eval_argv(
                    entry, cfg, args, spec.run_dir, eval_dir / f"{entry.slug}_ais.json",
                    metrics="ais", num_samples=1, num_images=0,
                    batch_size=ais_batch_size(cfg)), clock, stage)
                res["elbo"] = test_objective(spec.run_dir, cfg["eval_batch_size"],
                                             cfg["max_eval_examples"])
            res["report_path"] = str(path)
        results[entry] = res
        print(f"{entry.name}: " + "; ".join(
            f"{r['quantity'].split(',')[0]} {r['ours']}" for r in rows_for(entry, res, cfg)),
            flush=True)

    rows = [r for e in entries for r in rows_for(e, results[e], cfg)]
    reports = {e.panel: (results[e].get("report_path", ""), results[e].get("report"))
               for e in entries}
    figures = common.run_figures(reports, histories, out)

    budget, notes = describe(entries, cfg, args, specs, trained, results, classifier)
    details = {e.name: {**common.run_details(specs[e], trained[e], results[e]),
                        "ais_metrics": (results[e].get("ais_report") or {}).get("metrics"),
                        "elbo": results[e].get("elbo")}
               for e in entries}
    details["classifier"] = classifier
    cmd = "python -m trainers.experiments.mnist " + " ".join(shlex.quote(a) for a in argv)
    return common.write_results(
        out, experiment="mnist",
        title="AS-VAE Table 1 (MNIST NLL) and AVB Table 2 (binarized MNIST, AIS and ELBO)",
        command=cmd, rows=rows, budget=budget, hardware_info=hw, clock=clock,
        details=details, figures=figures, notes=notes)


def describe(entries, cfg, args, specs, trained, results, classifier):
    """The budget and notes of results.md."""
    t1 = [e for e in entries if e.table == "table1"]
    t2 = [e for e in entries if e.table == "table2"]
    any_spec = next(iter(specs.values()))
    steps = cfg["steps_per_epoch"]
    steps_text = ("one pass over the training set" if str(steps).lower() == "all"
                  else f"{steps} steps")
    budget = {
        "budget": budget_name(args),
        "models": ", ".join(e.name for e in entries),
        "training (each model)": (
            f"trainers.train: at most {cfg['epochs']} epochs of {steps_text} with batches of "
            f"{cfg['batch_size']} images, {common.adam_text(cfg)} for "
            f"every player, {any_spec.model.objective.disc_steps} discriminator step(s) per "
            f"step, early stopping on the validation reconstruction of x and z (patience "
            f"{cfg['patience']}, {cfg['validation_steps']} validation batches per epoch); the "
            "best epoch's weights (best.keras) are evaluated"
            + (f"; the first {cfg['max_train_examples']} training images only"
               if cfg["max_train_examples"] else "")),
        "epochs trained": ", ".join(
            f"{e.name}: {trained[e]['epochs_trained']} ({trained[e]['status']})"
            for e in entries),
        "architecture": (
            "AS-VAE Fig. 5 MNIST preset (convolutional encoder/decoder, joint (x, z) critics)"
            + (" narrowed for --quick (widths 8-32)" if cfg["narrow"] else "")
            + (f"; --network {' '.join(args.network)}" if args.network else "")),
        "seed": args.seed,
        "objective": (f"stabilizer {any_spec.model.objective.stabilizer!r}: "
                      + ", ".join(f"{k}={getattr(any_spec.model.objective, k)!r}"
                                  for k in STABILIZER_FIELDS)
                      + ("; gradient_penalty None: by kind, "
                         + ", ".join(f"{k} {v}" for k, v in DEFAULT_GRADIENT_PENALTY.items())
                         + ", AVB's T 0.0"
                         if any_spec.model.objective.gradient_penalty is None else "")
                      + f"; generated_x (Table 1) {any_spec.model.objective.generated_x!r}"),
        "classifier score": (
            f"{cfg['num_generated']} generated images, this project's small MNIST CNN "
            f"(trainers.train_classifier, {classifier['epochs']} epochs, test accuracy "
            f"{classifier['test_accuracy']:.4f})"),
    }
    if t1:
        s = specs[t1[0]]
        budget["Table 1 data and model"] = (
            f"MNIST (55000 train / 5000 validation / 10000 test images), dynamically "
            f"binarised in training, one fixed binarisation of the test images; latent "
            f"{s.model.latent_dim}, planar flow of length "
            f"{s.model.flows.posterior_flow_length} on q(z|x) for every kind")
        budget["Table 1 estimators"] = (
            f"IS (IWAE bound) with K = {cfg['num_samples']} samples per test image and the "
            f"-ELBO (K = 1), batches of {cfg['eval_batch_size']}, "
            f"{cfg['max_eval_examples'] or 'all 10000'} test images")
    if t2:
        budget["Table 2 data and model"] = (
            "Larochelle's binarized MNIST (50000 / 10000 / 10000), latent 8 and 32, same "
            "networks; avb/avb_ac: black-box noise encoder and critic T(x, z); vae: diagonal "
            "Gaussian posterior")
        budget["Table 2 estimators"] = (
            f"AIS: {cfg['ais_steps']} intermediate distributions, {cfg['ais_chains']} chains, "
            f"HMC with {cfg['ais_leapfrog']} leapfrog steps (step size tuned per example), "
            f"{cfg['ais_max_examples'] or cfg['max_eval_examples'] or 'all 10000'} test images "
            f"in batches of {ais_batch_size(cfg)} (paper: 1000, 5 chains, 2048 images); ELBO "
            f"and IS (K = {cfg['num_samples']}) "
            f"on {cfg['max_eval_examples'] or 'all 10000'} test images")
    notes = []
    if budget_name(args) == "cpu":
        notes.append(f"--budget cpu: at most {cfg['epochs']} epochs per model, "
                     f"{common.adam_text(cfg)}, a planar flow of length {cfg['flow_length']}, "
                     "far from the papers' convergence (hundreds of epochs at 1e-4, flows of "
                     "length 80); the comparison is between the kinds at one budget, not with "
                     "the papers' numbers.")
    if budget_name(args) == "quick":
        notes.append("--quick: a smoke-sized budget (2 training steps, narrow networks, a few "
                     "test images and samples); the numbers are not comparable with the papers.")
    if t1:
        notes += [
            "AS-VAE Table 1 estimates the NLL by the variational bound (Sec. 5.1), so the "
            "'-ELBO' rows are the like-for-like comparison; the IS rows are a tighter bound of "
            "the same models (IS NLL <= -ELBO in expectation).",
            "Table 1's 'vae' is a VAE with the same planar flow on q(z|x): the paper's "
            "'NF (k=80)' column (Rezende & Mohamed 2015, 85.1 nats) has the paper's number.",
            "Table 1 data: dynamically binarised MNIST (a binary image drawn from the grey "
            "levels at each visit); the test NLL is of one fixed binarisation of the test "
            "images. (AS-VAE's text reads grey levels as probabilities of binary pixels.)",
        ]
    if t2:
        notes += [
            "AVB Table 2 used a DC-GAN-type decoder, an encoder of learned basis noise vectors "
            "and a 4 x 1024 adversary (AVB Sec. 5.2); here every model uses this package's "
            "MNIST preset, so the comparison is of the methods and estimators under one "
            "architecture, not a reproduction of AVB's networks.",
            "AVB's ELBO entries are the adversary's estimates (T stands in for log q - log p; "
            "not a bound, and it can exceed log p(x)); the VAE's is the single-sample ELBO. "
            "The paper has no AVB (32-d) without adaptive contrast (paper column '-').",
            "log p(x) by IS for AVB uses the adaptive-contrast Gaussian r(z|x) as proposal "
            "(AVB's q(z|x) has no density): a valid but possibly loose lower bound.",
        ]
    notes += common.training_notes({e.name: trained[e] for e in entries})
    return budget, notes


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # includes tf_asvae.data.DataError
        print(f"trainers.experiments.mnist: error: {e}", file=sys.stderr)
        sys.exit(2)
