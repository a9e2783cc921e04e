"""fwemu's emulator: a fake Fireworks control plane and trainer gateway that judge checkpoints by their bytes."""

__version__ = "0.1.0"
