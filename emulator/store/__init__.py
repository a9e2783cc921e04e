"""emulator/store."""
