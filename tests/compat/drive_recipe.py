"""A user's launcher for a cookbook recipe: build its Config from JSON and call main(cfg).

    python drive_recipe.py sft_loop '{"log_path": ..., "dataset": ..., "trainer": {"job_id": ...}}'

This is the only code between the test and the cookbook, and it is what a user writes: it
imports nothing from fwemu or the tests, only the cookbook (on PYTHONPATH) and the standard
library. The connection comes from the environment (`eval "$(fwemu env)"`). The last stdout
line is ``RESULT <json>`` with what main() returned.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys


def main() -> None:
    recipe, spec = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stdout, force=True)
    module = importlib.import_module(f"training.recipes.{recipe}")
    from training.utils import TrainerConfig

    cfg = module.Config(trainer=TrainerConfig(**spec.pop("trainer", {})), **spec)
    result = module.main(cfg)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
