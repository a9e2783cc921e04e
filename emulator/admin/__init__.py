"""emulator/admin."""
