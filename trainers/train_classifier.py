"""Trains a small classifier for the sample-quality metrics: ``python -m trainers.train_classifier``.

::

    python -m trainers.train_classifier --dataset mnist --out classifiers/mnist.keras \\
        --manual-dir ../shared/data/mnist

The classifier (:func:`tf_asvae.evaluation.classifiers.build_small_classifier`) sees
images exactly as the evaluation pipelines give them (``[0, 1]``: grey levels / 255 for
MNIST-type data, bin centres ``(x + 0.5) / 256`` for CIFAR-10), is trained with Adam on
the training split and scored on the test split. ``--out PATH`` receives the whole model
(``.keras``; outputs ``logits`` and ``activations``) and ``PATH.json`` the metadata
(data set, image shape, epochs, examples, test accuracy). ``python -m trainers.evaluate
--classifier PATH`` loads it.

Data sets with labels: mnist, fashion_mnist, cifar10 (binarized MNIST has no labels in
TFDS: use an MNIST classifier, the images have the same shape; ImageNet 64x64: use
``--classifier inception_v3`` in the evaluator), and your own labelled images: a
``folder:PATH`` of class sub-folders, a ``tfds:NAME`` set with a ``label`` feature, an
``npz:PATH`` file with a label array beside the images (``labels``, ``y_train`` for
``x_train``). Give the source the options the trainer's run used (``--image-size``,
``--channels``, ``--pixels``, ``--split-fractions``, ``--split-seed``, the split and key
options: the same parsing, :func:`tf_asvae.data.add_source_flags`), so that the
classifier sees the run's images and is scored on the run's test split; the small
classifier takes 28x28x1 or 32x32x3 images::

    python -m trainers.train_classifier --dataset folder:my_images --image-size 32 32 \\
        --channels 3 --out classifiers/my_images.keras
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tf_asvae import data as D
from tf_asvae import io as tio
from tf_asvae import sources
from tf_asvae.evaluation import classifiers

__all__ = ["SUPPORTED", "build_parser", "check_labelled", "load_labelled", "main",
           "train_classifier"]

#: Data sets with class labels that a small classifier is trained on.
SUPPORTED = ("mnist", "fashion_mnist", "cifar10")


def load_labelled(config: D.DataConfig, split: str, max_examples=None):
    """``(images float32 [N, H, W, C] in [0, 1], labels int64 [N])`` of a split, in TFDS
    (folder, array) order, converted to floats as the evaluation pipelines do."""
    spec = config.spec
    eval_config = dataclasses.replace(config, binarize="none")
    if config.source is not None:
        ds = sources.labelled_dataset(config, split)
        n = spec.num_examples[split]
        if max_examples is not None and max_examples < n:
            # A folder lists its classes one after the other: a seeded sample of all.
            ds = ds.shuffle(n, seed=0).take(max_examples)
        return _collect(ds, spec, eval_config, config, split)
    builder = D.prepare(config)
    try:
        ds = builder.as_dataset(split=spec.splits[split], as_supervised=True,
                                shuffle_files=False)
    except Exception as e:
        raise D.DataError(f"TFDS could not read split {spec.splits[split]!r} of "
                          f"{spec.tfds_name!r} with labels: {type(e).__name__}: {e}") from e
    if max_examples is not None:
        ds = ds.take(max_examples)
    return _collect(ds, spec, eval_config, config, split)


def _collect(ds, spec, eval_config, config, split):
    def convert(image, label):
        image = tf.ensure_shape(image, spec.image_shape)
        return D._to_float(image, spec, eval_config, None, training=False), label

    ds = ds.map(convert, num_parallel_calls=D.AUTOTUNE).batch(1024)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    if not xs:
        raise D.DataError(f"Split {split!r} of {config.name!r} is empty.")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def train_classifier(config: D.DataConfig, out: str, *, epochs: int = 5, seed: int = 0,
                     learning_rate: float = 1e-3, max_train_examples=None,
                     max_eval_examples=None, verbose: int = 2) -> dict:
    """Trains, saves ``out`` (+ ``out.json``) and returns the metadata dict."""
    start = time.time()
    class_names = check_labelled(config)
    keras.utils.set_random_seed(seed)
    x_train, y_train = load_labelled(config, "train", max_train_examples)
    x_test, y_test = load_labelled(config, "test", max_eval_examples)
    name = config.name if config.source is None else sources.run_name_part(config.name)
    model = classifiers.build_small_classifier(config.spec.image_shape,
                                               len(class_names) if class_names else 10,
                                               name=f"classifier_{name}")
    trainer = keras.Model(model.input, model.output["logits"])
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    trainer.fit(x_train, y_train, batch_size=config.batch_size, epochs=epochs,
                shuffle=True, verbose=verbose)
    clf = classifiers.Classifier(model, name=os.path.basename(out),
                                 image_shape=config.spec.image_shape)
    logits, _ = clf.outputs(x_test, batch_size=500)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tio.save_model_atomic(model, out)
    meta = {
        "dataset": config.name,
        "image_shape": list(config.spec.image_shape),
        "num_classes": int(logits.shape[1]),
        "class_names": list(class_names) if class_names else None,
        "pixels": config.spec.pixels,
        "activations_dim": int(model.output["activations"].shape[-1]),
        "epochs": epochs,
        "seed": seed,
        "learning_rate": learning_rate,
        "batch_size": config.batch_size,
        "num_train_examples": int(len(x_train)),
        "num_test_examples": int(len(x_test)),
        "test_accuracy": accuracy,
        "seconds": round(time.time() - start, 1),
    }
    tio.write_json_atomic(classifiers.metadata_path(out), meta)
    return meta


def check_labelled(config: D.DataConfig):
    """The class names of a labelled source (None for a registered data set, whose
    classifier has 10 classes); ValueError naming the data for data without labels or
    of a shape the small classifier does not take. Reads the source's description
    (files' headers, TFDS metadata, arrays), writes nothing."""
    if config.source is None:
        if config.name not in SUPPORTED:
            raise ValueError(
                f"Small classifiers are trained on {list(SUPPORTED)} or a labelled source "
                f"(folder:PATH of class sub-folders, tfds:NAME with labels, npz:PATH with "
                f"a label array). Received: dataset={config.name!r}. For binarized_mnist "
                "use an MNIST classifier; for imagenet64 use --classifier inception_v3 "
                "when evaluating.")
        return None
    class_names = sources.label_classes(config)
    if len(class_names) < 2:
        raise ValueError(f"A classifier needs at least 2 classes; {config.name!r} has "
                         f"{len(class_names)}: {list(class_names)}.")
    shape = tuple(config.spec.image_shape)
    if shape not in ((28, 28, 1), (32, 32, 3)):
        raise ValueError(
            f"The small classifier takes 28x28x1 or 32x32x3 images; {config.name!r} gives "
            f"{'x'.join(map(str, shape))}. Pass --image-size 28 28 --channels 1 or "
            "--image-size 32 32 --channels 3 (as the run that the classifier scores).")
    return class_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.train_classifier",
        description="Train a small classifier for the Inception-score formula and the "
                    "Frechet distance (loaded by trainers.evaluate --classifier PATH).")
    parser.add_argument("--dataset", default="mnist", type=D._dataset_name,
                        help=f"one of {list(SUPPORTED)}, or your own labelled images: "
                             "folder:PATH (class sub-folders), tfds:NAME[/CONFIG] (with a "
                             "'label' feature), npz:PATH (with a label array)")
    parser.add_argument("--out", required=True, help="where to save the .keras model")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="TFDS directory of prepared data")
    parser.add_argument("--manual-dir", default=None,
                        help=f"directory of downloaded data files (default: ${D.ENV_MANUAL_DIR})")
    parser.add_argument("--max-train-examples", type=int, default=None)
    parser.add_argument("--max-eval-examples", type=int, default=None)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    D.add_source_flags(parser)
    return parser


def main(argv=None) -> int:
    from trainers import _cli

    parser = build_parser()
    args = parser.parse_args(_cli.join_negative_numbers(parser, argv))
    try:
        for name in ("epochs", "batch_size", "max_train_examples", "max_eval_examples"):
            value = getattr(args, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer. "
                                 f"Received: {value}")
        if not (args.learning_rate > 0 and np.isfinite(args.learning_rate)):
            raise ValueError("--learning-rate must be a positive finite number. "
                             f"Received: {args.learning_rate}")
        if args.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0. Received: {args.seed}")
        if not args.out.endswith(".keras") or os.path.basename(args.out) == ".keras":
            raise ValueError(f"--out must be a file name ending in .keras. "
                             f"Received: --out {args.out!r}")
        if os.path.isdir(args.out):
            raise ValueError(f"--out is a directory. Received: --out {args.out!r}")
        # Up front: the output's directory can be made and written, not after training.
        tio.check_writable_dir(os.path.dirname(os.path.abspath(args.out)),
                               "the directory of --out")
        config = D.data_config_from_flags(args)
        check_labelled(config)  # a source without labels fails here, before any write
        meta = train_classifier(config, args.out, epochs=args.epochs, seed=args.seed,
                                learning_rate=args.learning_rate,
                                max_train_examples=args.max_train_examples,
                                max_eval_examples=args.max_eval_examples,
                                verbose=args.verbose)
    except ValueError as e:  # includes tf_asvae.data.DataError
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps({"out": args.out, **meta}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
