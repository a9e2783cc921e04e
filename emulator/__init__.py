"""fwemu's emulator: a fake Fireworks control plane and trainer gateway that judge checkpoints by their bytes."""

from fwemu import __version__  # noqa: F401 - one version, in fwemu/__init__.py
