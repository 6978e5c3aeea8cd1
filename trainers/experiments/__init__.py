"""Programs that regenerate the papers' tables, each beside the paper's numbers.

``python -m trainers.experiments.NAME --out DIR [--quick]`` writes ``DIR/results.json``,
``DIR/results.md`` and its figures (PNG).  ``--quick`` runs the same code at a size that
finishes in a minute or two on a CPU (what the tests run); the default is the full setting.

* ``avb_synthetic``: AVB Table 1 / Figure 6 (four 2x2 binary images, 2-d latent).
* ``eight_schools``: AVB Sec. 5.1 (black-box VI on the Eight Schools model vs NUTS).
* ``mnist``: AS-VAE Table 1 (MNIST NLL) and AVB Table 2 (binarized MNIST, AIS and ELBO).
* ``cifar10``: AS-VAE Table 2 (bits/dim, reconstruction RMSE, Inception-score formula).
* ``imagenet64``: AS-VAE Table 3 (ImageNet 64x64 bits/dim, Inception score).

The last three train with ``trainers.train`` and evaluate with ``trainers.evaluate``
(``--epochs``, ``--steps-per-epoch``, ``--max-eval-examples``, ``--num-samples`` ... set a
CPU budget; ``--only`` runs a subset) and stop before writing anything when the data are
missing.
"""
