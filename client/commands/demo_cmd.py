"""Show save -> interrupt -> resume -> promote end to end, on an embedded emulator unless one is given.

Trains the stand-in model on the bundled tiny dataset with periodic resumable saves, stops right
after one of them as if Ctrl-C had been pressed, reruns with the same log_path (which reattaches
to the job and resumes), finishes with a resumable + promotable save, promotes, and prints the
job's rows with their kinds and a one-line verdict per stage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from fwemu.client.commands._common import add_connection_args, connection, human_errors
from fwemu.client.commands.ls_cmd import render

DEMO_BASE_MODEL = "accounts/fireworks/models/qwen3-8b"


def bundled_dataset() -> Path:
    return Path(str(resources.files("fwemu.client") / "data" / "tiny_chat.jsonl"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the demo directory (log_path, emulator data)")
    parser.add_argument("--dir", default=None, help="demo directory (default: a new temporary one)")
    parser.add_argument("--lora-rank", type=int, default=8, help="0 for a full-parameter run (default 8)")
    parser.add_argument("--interval", type=int, default=2, help="dcp_save_interval (default 2)")
    parser.add_argument("--epochs", type=int, default=2)
    add_connection_args(parser)


class _Interrupt(KeyboardInterrupt):
    """The simulated Ctrl-C (a KeyboardInterrupt, so the recipe handles it like the real one)."""


def _verdict(ok: bool, stage: str, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {stage:<10} {detail}")
    return ok


@human_errors
def run(args: argparse.Namespace) -> int:
    from fwemu.client.control_plane import ControlPlaneClient
    from fwemu.client.recipes.sft_loop import Config, WeightSyncConfig, main

    external = bool(args.base_url or os.environ.get("FIREWORKS_BASE_URL"))
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fwemu-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[bool] = []
    with ExitStack() as stack:
        if external:
            base_url, api_key = connection(args)
            print(f"using the server at {base_url}")
        else:
            from fwemu.emulator.server_thread import running_server
            from fwemu.emulator.settings import Settings

            _, api_key = connection(args)
            settings = Settings(data_dir=workdir / "emulator", api_keys={api_key: "local"})
            server = stack.enter_context(running_server(settings))
            base_url = server.url
            print(f"embedded emulator at {base_url} (data in {workdir / 'emulator'})")
        cfg = Config(log_path=str(workdir / "run"), base_model=DEMO_BASE_MODEL, dataset=str(bundled_dataset()),
                     tokenizer_model="Qwen/Qwen3-8B", output_model_id=f"fwemu-demo-{uuid.uuid4().hex[:8]}",
                     lora_rank=args.lora_rank, epochs=args.epochs, batch_size=4,
                     weight_sync=WeightSyncConfig(dcp_save_interval=args.interval),
                     base_url=base_url, api_key=api_key, ready_poll_s=0.1)

        stop: dict = {}

        def interrupt_after_first_save(event) -> None:
            if event.saved and event.step * 2 >= event.total_steps:
                stop.update(step=event.step, saved=event.saved, consumed=event.data_consumed)
                raise _Interrupt()

        print("\n== stage 1: train until a periodic save, then interrupt ==")
        try:
            main(cfg, on_step=interrupt_after_first_save)
            results.append(_verdict(False, "interrupt", "the run finished before a periodic save to interrupt after"))
        except _Interrupt:
            results.append(_verdict(True, "interrupt", f"stopped after step {stop['step']}, saved as {stop['saved']} "
                                                        f"(data_consumed {stop['consumed']})"))

        print("\n== stage 2: rerun with the same log_path ==")
        summary = main(cfg)
        if stop:
            ok = summary["resumed_from"] == stop["saved"] and summary["steps_run"] == summary["steps"] - stop["step"]
            results.append(_verdict(ok, "resume", f"resumed from {summary['resumed_from']}, ran steps "
                                                  f"{stop['step'] + 1}..{summary['steps']} ({summary['steps_run']} steps, "
                                                  f"none repeated), data_consumed {summary['data_consumed']}"))
        results.append(_verdict(summary["final_sampler_checkpoint"] is not None, "final",
                                f"final save {summary['final_checkpoint']} + {summary['final_sampler_checkpoint']}, "
                                f"loss {summary['final_loss']:.4f}" if summary["final_loss"] is not None else "final save"))

        print("\n== stage 3: promote ==")
        with ControlPlaneClient(base_url, api_key) as cp:
            model = cp.get_model(summary["promoted_model"]) if summary["promoted_model"] else None
            results.append(_verdict(model is not None and model.state == "READY", "promote",
                                    f"{model.name} is {model.state}, kind {model.kind}" if model else "nothing promoted"))
            print(f"\ncheckpoints of job {summary['job_id']}:")
            print(render(cp.list_checkpoints(summary["job_id"])))

    if args.keep or args.dir:
        print(f"\nkept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all(results)
    print(f"\ndemo {'passed' if ok else 'FAILED'}: {sum(results)}/{len(results)} stages", file=sys.stdout)
    return 0 if ok else 1
