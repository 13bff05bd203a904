"""Packaging for gluon_face.

MXNet is deliberately *not* in ``install_requires``: the CPU wheel (``mxnet``)
and the CUDA wheel (``mxnet-cu112``) are different distributions of the same
module, and requiring one would drag it in beside the other.  Pick an extra:

    pip install -e ".[cpu]"      # mxnet==1.9.1, CPU
    pip install -e ".[cu112]"    # mxnet-cu112==1.9.1, CUDA 11.2 (sm_50..sm_86)
"""
from setuptools import find_packages, setup

install_requires = [
    # mxnet 1.9.1 uses np.bool, removed in numpy 1.24.
    "numpy>=1.17,<1.24",
    # LR schedulers (warm-up + step/cosine/poly) and split_and_load helpers.
    "gluoncv==0.10.5.post0",
    # gluoncv pulls opencv-python unpinned; 4.12+ needs numpy>=2.
    "opencv-python<4.12",
    # Image decode/encode for the recordio writer and reader.
    "Pillow",
    # KFold and ROC for verification; the digits images of the demo set.
    "scikit-learn",
    # Pairwise distances for the Dunn index (also a dependency of scikit-learn).
    "scipy",
    # Loss/accuracy/ROC curves, embedding scatter plots, sample grids (Figure without pyplot);
    # its DejaVu and STIX fonts are drawn as the built-in glyph identities.
    "matplotlib>=3.5",
    # Which characters each of those fonts draws (also a dependency of matplotlib).
    "fonttools",
    # Progress bars in the tools.
    "tqdm",
    # Training presets and the saved resolved config.
    "pyyaml",
]

extras_require = {
    # numba: the margin heads' fused CPU kernels (gluon_face/heads/_kernels.py); without
    # it they fall back to MXNet operators.
    "cpu": ["mxnet==1.9.1", "numba"],
    "cu112": ["mxnet-cu112==1.9.1"],
    # The d2l chapters: `from d2l import mxnet as d2l`, executed in a kernel.
    "book": ["d2l==1.0.3", "nbclient", "ipykernel"],
    # tools/export_onnx.py: mx.onnx.export_model imports onnx.mapping, removed in onnx 1.18;
    # onnxruntime checks that the exported graph gives MXNet's embeddings.
    "onnx": ["onnx<1.18", "onnxruntime"],
}
# pytest-timeout: a test that hangs fails after the limit set in pyproject.toml, with
# its stack, instead of holding the whole run until CI gives up on it.
extras_require["test"] = (["pytest", "pytest-timeout", "ruff"] + extras_require["book"]
                          + extras_require["onnx"])

# Each command runs what tools/<name>.py runs, through gluon_face.commands._entry: one line
# and exit 2 when MXNet cannot be imported, else the command's run() (SIGTERM and Ctrl-C
# stop it with a message) or main().
console_scripts = [
    "gluon-face-train = gluon_face.commands._entry:train",
    "gluon-face-evaluate = gluon_face.commands._entry:evaluate",
    "gluon-face-extract = gluon_face.commands._entry:extract",
    "gluon-face-export-onnx = gluon_face.commands._entry:export_onnx",
    "gluon-face-pack-rec = gluon_face.commands._entry:pack_rec",
    "gluon-face-inspect-rec = gluon_face.commands._entry:inspect_rec",
    "gluon-face-make-bin = gluon_face.commands._entry:make_bin",
    "gluon-face-count-params = gluon_face.commands._entry:count_params",
    "gluon-face-launch = gluon_face.commands._entry:launch",
    "gluon-face-benchmark = gluon_face.commands._entry:benchmark",
    "gluon-face-benchmark-data = gluon_face.commands._entry:benchmark_data",
    "gluon-face-benchmark-head = gluon_face.commands._entry:benchmark_head",
    "gluon-face-convert-insightface = gluon_face.commands._entry:convert_insightface",
    "gluon-face-export-insightface = gluon_face.commands._entry:export_insightface",
]

setup(
    name="gluon_face",
    version="0.1.0",
    description="Face recognition with MXNet Gluon: FaceResNet, ArcFace/CosFace/SphereFace "
    "heads, insightface-format data, and the d2l Face Analysis chapter",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gluon_face", "gluon_face.*"]),
    package_data={"gluon_face": ["configs/*.yaml"]},
    python_requires=">=3.8,<3.12",
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={"console_scripts": console_scripts},
    classifiers=[
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: Apache Software License",
    ],
)
