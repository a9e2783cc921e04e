"""Helpers shared by the integration tests: simulated Ctrl-C, a trainer handle, request-log checks."""

from __future__ import annotations

import json

from fwemu.client.trainer_client import TrainerGatewayClient
from tests.client.conftest import BASE_MODEL, KEY, RequestLog


class Stop(KeyboardInterrupt):
    """A simulated Ctrl-C."""


def interrupt_after_save(name: str | None = None, *, step: int | None = None):
    """on_step hook: Ctrl-C right after the periodic save `name` (or at `step`, saved or not)."""
    def hook(event):
        if (name is not None and event.saved == name) or (step is not None and event.step == step):
            raise Stop()
    return hook


def trainer_for(emu, job_id: str, lora_rank: int = 4):
    cp = emu.control_plane()
    gateway = TrainerGatewayClient(cp.gateway_url_for_job(job_id), KEY, emu.transport(), heartbeat_interval_s=None)
    gateway.create_session()
    return cp, gateway, gateway.create_model(BASE_MODEL, lora_rank)


def batches(log: RequestLog) -> list[str]:
    return [json.dumps(body["forward_backward_input"]["data"]) for _, body in log.ops("forward_backward")]


def check_save_order(log: RequestLog, loaded_step: int = 0) -> None:
    """Checkpoint N holds exactly N optimizer steps: each save_weights directly follows the Nth optim_step
    (no forward_backward of batch N+1 in between), and a load resets the count to the loaded step."""
    done, previous = 0, None
    for op, body in log.ops("forward_backward", "optim_step", "save_weights", "load_weights"):
        if op == "load_weights":
            done = loaded_step
        elif op == "optim_step":
            done += 1
        elif op == "save_weights":
            assert previous == "optim_step", f"{body['path']} saved after {previous}"
            assert body["path"] == f"step-{done}"
        previous = op
