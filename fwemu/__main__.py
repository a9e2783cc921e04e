"""`python -m fwemu ...` is the `fwemu` command."""
from fwemu.emulator.cli import main

raise SystemExit(main())
