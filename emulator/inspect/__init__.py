"""emulator/inspect."""
