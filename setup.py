"""Install entry for tfcompress: model compression for Keras 3 on TensorFlow."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="tfcompress",
    version="0.1.0",
    description=(
        "Model compression for Keras 3 on TensorFlow: pruning (DCIL, DPF), "
        "position-based scaled gradients (PSG), distillation, quantization, "
        "low-rank factorization, XLA int8/sparse kernels and TFLite export."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["tfcompress", "tfcompress.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "numpy>=1.26,<3",
        "tensorly>=0.9,<0.11",
        "ai-edge-litert>=2.0,<3",
        "scikit-learn>=1.3,<2",
        "tqdm>=4.60,<5",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "nbclient>=0.10,<1",
            "nbformat>=5.9,<6",
            "ipykernel>=6.29,<8",
        ],
        "bench": [
            "tensorflow-model-optimization==0.8.*",
            "tf_keras==2.21.*",
            "matplotlib>=3.8,<4",
        ],
    },
    entry_points={"console_scripts": ["tfcompress=tfcompress.cli:main"]},
)
