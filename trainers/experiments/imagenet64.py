"""AS-VAE Table 3: ImageNet 64x64 bits/dim and Inception score (the cifar10 machinery).

    python -m trainers.experiments.imagenet64 --out runs/experiments/imagenet64 \
        --manual-dir DIR_WITH_Imagenet64_*_npz.zip [--data-dir DIR] [--only asvae_r,asvae] \
        [--classifier auto|inception_v3|none|PATH.keras] [--inception-weights FILE] [--quick] \
        [--epochs N --steps-per-epoch N --max-eval-examples N --num-samples K]

The same program as ``trainers.experiments.cifar10`` (see its docstring: training with
``trainers.train``, evaluation with ``trainers.evaluate``, resumable run directories, the
discretised 8-bit likelihood by importance sampling and as the negative ELBO, the
reconstruction RMSE on the 0-255 scale, the Inception-score formula), on the
``imagenet64`` data set (``imagenet_resized/64x64``: the last 10000 training images
validate, the official 50000-image validation set is the test set) with the
``imagenet64`` preset (AS-VAE Figs. 7-8, latent 2048).  The paper reports AS-VAE only,
so that is the default; ``--only asvae_r,asvae_g,asvae`` adds the halves.

Inception score: InceptionV3 with ImageNet weights (``--inception-weights FILE`` or a
cached / downloadable copy).  ``trainers.train_classifier`` has no ImageNet classifier,
so without the weights the score is not computed (the results say why) unless a
64x64x3 ``.keras`` classifier is given.  Decoded images are not cached in memory
(``--no-cache`` of the training program).  Where the data are missing the program stops
before writing anything, with the data module's error naming the files and the place.

Full setting: the paper trained "less than 2 days (4 hours per epoch)" on a TITAN X, about
12 epochs; batches of 64; early stopping with patience 3; IS with K = 100 samples on the
50000 test images; 50000 generated images in 10 splits for the Inception score.
"""

from __future__ import annotations

from trainers.experiments import cifar10 as C10

FULL = dict(C10.FULL, epochs=12, batch_size=64, patience=3, cache=False, num_samples=100)
QUICK = dict(C10.QUICK, cache=False)
# --quick: the preset's layer types at narrow widths (64x64 images: 8x8x8 start, three
# stride-2 transposed convolutions).
NARROW = dict(network=dict(encoder_conv=((8, 3, 1), (8, 3, 2)), encoder_mlp=(),
                           decoder_mlp=(), decoder_start=(8, 8, 8),
                           decoder_deconv=((8, 3, 2), (8, 3, 2), (8, 3, 2)),
                           disc_x_conv=((8, 5, 2), (8, 3, 2)), disc_z_mlp=(16,),
                           disc_joint_mlp=(16,)))

SETUP = C10.Setup(
    experiment="imagenet64", dataset="imagenet64", table="AS-VAE Table 3",
    title="AS-VAE Table 3: ImageNet 64x64 bits/dim and Inception score",
    paper={"asvae": {"bpd": 3.71, "is": 11.14}},
    full=FULL, quick=QUICK, narrow=NARROW, default_kinds=("asvae",), small_classifier=False,
    data_note="ImageNet 64x64 (imagenet_resized/64x64): 1271167 train / 10000 validation "
              "(the last training images) / 50000 test images (the official validation set)")


def main(argv=None):
    return C10.run(SETUP, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    C10.cli("imagenet64", main)
