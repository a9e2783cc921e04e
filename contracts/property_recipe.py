"""The focused property for the sft_loop recipe end to end (R2, R3, R5), apart from the short
properties in properties.py because it drives whole recipe runs rather than machine rules."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import R2, R3, R5


def _write_dataset(path: Path, n: int) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}?"},
                                      {"role": "assistant", "content": f"a{i * 3 % 7}."}]}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def _recipe(ctx):
    """The sft_loop recipe end to end: a save every n steps (none with 0), a final resumable +
    promotable save, promotion of the newest promotable row, an interrupted run that finishes with
    the same weights as a straight one, and a rerun that says the model exists instead of skipping."""
    from fwemu.contracts.properties import machine_of   # properties.py imports this module

    @given(interval=st.integers(0, 3), steps=st.integers(2, 5), interrupt_at=st.integers(1, 4), lora=st.booleans())
    @example(interval=2, steps=5, interrupt_at=3, lora=False)
    def recipe_saves_resumes_and_promotes(interval, steps, interrupt_at, lora):
        from fwemu.client.control_plane import ControlPlaneClient
        from fwemu.client.recipes.sft_loop import Config, WeightSyncConfig, main

        interrupt_at = min(interrupt_at, steps - 1)
        with machine_of(ctx) as m, tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data.jsonl"
            _write_dataset(data, steps * 2)
            transport = m.target.transport()

            def config(log: str, model_id: str | None) -> Config:
                return Config(log_path=str(Path(tmp) / log), base_model=m.target.base_model, dataset=str(data),
                              output_model_id=model_id, lora_rank=4 if lora else 0, batch_size=2,
                              max_steps=steps, weight_sync=WeightSyncConfig(dcp_save_interval=interval),
                              base_url=m.target.base_url, api_key=m.account.api_key, transport=transport,
                              ready_poll_s=0.01, progress=False)

            def stop_at(event):
                if event.step == interrupt_at:
                    raise KeyboardInterrupt

            quiet = contextlib.redirect_stderr(io.StringIO())
            with quiet:
                straight = main(config("straight", m.world.fresh("m")))
            out = io.StringIO()
            with contextlib.redirect_stderr(out):
                try:
                    main(config("interrupted", None), on_step=stop_at)
                except KeyboardInterrupt:
                    pass
                else:
                    R2.fail(f"the recipe was not interrupted at step {interrupt_at}")
                model_id = m.world.fresh("m")
                resumed = main(config("interrupted", model_id))
            said = io.StringIO()
            with contextlib.redirect_stderr(said):
                rerun = main(config("interrupted", model_id))
            cp = ControlPlaneClient(m.target.base_url, m.account.api_key, transport=transport)
            try:
                _check_recipe(m, cp, straight, resumed, rerun, said.getvalue(), interval, steps, interrupt_at,
                              model_id)
            finally:
                cp.close()
    return recipe_saves_resumes_and_promotes


def _check_recipe(m, cp, straight, resumed, rerun, stderr, interval, steps, interrupt_at, model_id) -> None:
    rows = cp.list_checkpoints(resumed["job_id"])
    resumable = [r.short_name for r in rows if r.resumable]
    want = [f"step-{s}" for s in range(interval, steps, interval)] if interval else []
    want_interrupted = [n for n in want if int(n.split("-")[1]) <= interrupt_at]
    R3.require(set(want) <= set(resumable) and f"step-{steps}" in resumable,
               f"dcp_save_interval={interval}, {steps} steps: resumable rows {resumable}, expected {want} "
               f"plus the final step-{steps}")
    extra = sorted(set(resumable) - set(want) - {f"step-{steps}"})
    R3.require(not extra, f"dcp_save_interval={interval}: unexpected resumable rows {extra}")
    expected_from = want_interrupted[-1] if want_interrupted else None
    R3.require(resumed["resumed_from"] == expected_from,
               f"interrupted at step {interrupt_at} with dcp_save_interval={interval}: the rerun resumed from "
               f"{resumed['resumed_from']}, expected {expected_from or 'a fresh start at step 0'}")
    R5.require(resumed["final_checkpoint"] in resumable and resumed["final_sampler_checkpoint"]
               in {r.short_name for r in rows if r.promotable},
               f"the finished run's final save is {resumed['final_checkpoint']} / "
               f"{resumed['final_sampler_checkpoint']}; expected a listed resumable and a listed promotable row")
    newest = max((r for r in rows if r.promotable), key=lambda r: r.create_time)
    model = cp.get_model(model_id)
    R5.require(model.state == "READY", f"the recipe's promoted model {model_id} is {model.state}")
    source = model.raw.get("sourceCheckpoint")
    if source is not None:
        R5.require(source == newest.name, f"the recipe promoted {source}; the newest promotable row is {newest.name}")
    R5.require(rerun["promoted_model"] == model.name and model_id in stderr,
               f"a rerun of the finished run returned promoted_model={rerun['promoted_model']!r} and said "
               f"{stderr[-300:]!r}; it must name the existing model {model.name}, not skip in silence")
    # R2 end to end: the interrupted-and-resumed run ends on the same weights as the straight run.
    probes = []
    for run in (straight, resumed):
        handle = m.driver.connect(run["job_id"], cp.get_job(run["job_id"]).lora_rank)
        try:
            handle.load_state(run["final_checkpoint"], optimizer=False)
            probes.append(handle.probe())
        finally:
            handle.close()
    inv.check_probe(R2, f"sft_loop interrupted at step {interrupt_at} and resumed (dcp_save_interval={interval}) "
                        f"vs the same config run straight", probes[1], probes[0])


