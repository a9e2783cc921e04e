"""fwemu: one import namespace over the repository's three top-level folders.

Installed, ``fwemu.emulator``, ``fwemu.client`` and ``fwemu.contracts`` are the folders
``emulator/``, ``client/`` and ``contracts/`` (setup.py maps them), so nothing named ``client``
or ``contracts`` lands in site-packages beside a user's own packages. Run from a source checkout
without installing, the checkout's root is added to this package's search path so the same
names resolve to the same folders.
"""
from __future__ import annotations

import os as _os

__version__ = "0.2.0"

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "emulator")) \
        and _os.path.isfile(_os.path.join(_root, "emulator", "__init__.py")):
    __path__.append(_root)  # noqa: F821 - a package's __path__ exists at import
