"""Trainer tests (emulator/trainer, client/tokenizer)."""
