"""emulator/controlplane."""
