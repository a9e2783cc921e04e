"""Maps the three top-level folders onto one installed namespace, ``fwemu.*`` (see fwemu/__init__.py).

Everything else about the package lives in pyproject.toml; only the package list is computed
here, because it is the folders' subpackages with a prefix, which pyproject cannot express.
"""
from setuptools import find_packages, setup

FOLDERS = ("emulator", "client", "contracts")
subpackages = [p for p in find_packages(include=[f"{f}*" for f in FOLDERS])]
setup(
    packages=["fwemu"] + [f"fwemu.{p}" for p in subpackages],
    package_dir={"fwemu": "fwemu", **{f"fwemu.{f}": f for f in FOLDERS}},
)
