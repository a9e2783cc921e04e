"""emulator/trainer."""
