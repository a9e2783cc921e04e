"""emulator/gateway."""
