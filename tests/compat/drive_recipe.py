"""A user's launcher for a cookbook recipe: build its Config from JSON and call main(cfg).

    python drive_recipe.py sft_loop '{"log_path": ..., "dataset": ..., "trainer": {"job_id": ...}}'
    python drive_recipe.py rl_loop '{..., "deployment": {"tokenizer_model": ...}, "reward": "even_bytes"}'

This is the only code between the test and the cookbook, and it is what a user writes: it
imports nothing from fwemu or the tests, only the cookbook (on PYTHONPATH) and the standard
library. The connection comes from the environment (`eval "$(fwemu env)"`). The last stdout
line is ``RESULT <json>`` with what main() returned.

rl_loop's own docstring says to customise its module-level ``reward_fn`` for the task; a
``"reward"`` key names the launcher's replacement (the recipe looks the name up at call time,
so main() itself is unchanged).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys


def even_bytes(completion: str, row: dict) -> float:
    """The fraction of the response's UTF-8 bytes that are even: a reward that varies with the
    sampled tokens (a byte-level tokenizer's ids 0-255 are the bytes), so GRPO groups differ."""
    data = completion.encode("utf-8", "surrogateescape")
    return sum(1 for b in data if b % 2 == 0) / len(data) if data else 0.0


REWARDS = {"even_bytes": even_bytes}


def main() -> None:
    recipe, spec = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stdout, force=True)
    module = importlib.import_module(f"training.recipes.{recipe}")
    from training.utils import DeployConfig, TrainerConfig

    if "reward" in spec:
        module.reward_fn = REWARDS[spec.pop("reward")]
    if "deployment" in spec:
        spec["deployment"] = DeployConfig(**spec["deployment"])
    cfg = module.Config(trainer=TrainerConfig(**spec.pop("trainer", {})), **spec)
    result = module.main(cfg)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
