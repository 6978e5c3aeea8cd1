"""Packaging for tf_asvae.  The pinned, verified stack is in requirements.txt."""

from setuptools import find_packages, setup

setup(
    name="tf_asvae",
    version="0.1.0",
    description=("Adversarial Symmetric VAE, Adversarial Variational Bayes and a VAE "
                 "baseline as Keras 3 models with TensorFlow Probability"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_asvae", "tf_asvae.*", "trainers", "trainers.*",
                                    "benchmarks", "benchmarks.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.20,<2.21",
        "keras>=3.10,<4",
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.20,<2.21",
        "tensorflow-datasets==4.9.10",
        "importlib_resources>=6",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "pillow>=10",
        "pyyaml>=6",
        "matplotlib>=3.8",
    ],
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5"]},
    entry_points={
        "console_scripts": [
            "asvae-train=trainers.train:main",
            "asvae-evaluate=trainers.evaluate:main",
        ]
    },
)
