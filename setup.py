"""mindshuffle: the ShuffleNet family for MindSpore."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "mindshuffle", "__init__.py"), encoding="utf-8") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

DEMO = ["scikit-learn>=1.3", "matplotlib>=3.7", "pillow>=9"]
EXTRAS = {
    "demo": DEMO,
    "plots": ["matplotlib>=3.7"],
    # the PyTorch weight converters (torch only reads .pth files); a CPU build
    "convert": ["torch==2.13.0"],
    # onnx 1.18+ pulls ml_dtypes releases that need numpy 2, which MindSpore 2.7.1 cannot use
    "export": ["onnx==1.17.0", "onnxruntime>=1.16"],
}
EXTRAS["test"] = sorted(set(DEMO + ["pytest>=7", "pytest-xdist"] + EXTRAS["convert"] + EXTRAS["export"]))
EXTRAS["all"] = sorted({d for deps in EXTRAS.values() for d in deps})

setup(
    name="mindshuffle",
    version=VERSION,
    description="ShuffleNet V1/V2 family for MindSpore: models, recipes, profiling and the paper's guideline "
                "experiments",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mindshuffle", "mindshuffle.*"]),
    package_data={"mindshuffle.accel.cpu": ["csrc/*.cc", "csrc/*.h"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        # a range: on Ascend, MindSpore comes paired with the cluster's CANN drivers and must not be replaced;
        # tested: 2.7.1 (full suite, constraints.txt) and 2.10.0 (smoke subset), README "Tested versions"
        "mindspore>=2.7.0,<2.11",
        "mindcv==0.3.0",
        "numpy<2",
        "pyyaml>=6",
        "tqdm>=4.60",
        "pillow>=9",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mindshuffle=mindshuffle.cli:main"] + [
        f"mindshuffle-{verb}=mindshuffle.cli.{verb}:main"
        for verb in ("train", "validate", "infer", "export", "convert", "models", "report", "average")]},
    license="Apache-2.0",
    classifiers=["Programming Language :: Python :: 3.11", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
