"""The gateway with `trainer_ranks=2` (`fwemu serve --trainer-ranks 2`): the same wire calls train
a 2-rank FSDP2 trainer, whose numbers match the one-process gateway's and whose saves are multi-rank."""

from __future__ import annotations

import numpy as np

from fwemu.emulator.trainer.rank_group import MultiRankTrainer
from tests.gateway.helpers import datum, gateway

T = "CHECKPOINT_TYPE_"


def session_numbers(ranks: int) -> dict:
    """Two steps, a save, a sampler export, two more steps, a resume, and one step after it."""
    with gateway(trainer_ranks=ranks) as gw:
        job = gw.create_job(f"ranks-{ranks}")
        model = gw.model(job)
        state = next(iter(gw.runtime()._jobs.values())).models[model]
        steps = [gw.step(job, model) for _ in range(2)]
        assert gw.save_state(job, model, "step-2")["path"] == "step-2"
        gw.save_sampler(job, model, "step-2-0badc0de", "base")
        steps += [gw.step(job, model) for _ in range(2)]
        gw.load(job, model, "step-2", optimizer=True)
        steps.append(gw.step(job, model))
        fwd = gw.ok(job, "forward", {"forward_input": {"data": [datum()], "loss_fn": "cross_entropy"},
                                     "model_id": model, "seq_id": gw.seq(job, model)})
        out = {"losses": [fb["metrics"]["loss:sum"] for fb, _ in steps],
               "norms": [op["metrics"]["grad_norm:mean"] for _, op in steps],
               "steps": [op["metrics"]["step:max"] for _, op in steps],
               "forward": fwd["metrics"]["loss:sum"], "kinds": gw.kinds(job),
               "ranks": gw.app.state.services.store.get_checkpoint("local", job, "step-2").details.get("ranks"),
               "trainer": state.trainer}
        gw.ok(job, "unload_model", {"model_id": model, "type": "unload_model"})
        return out


def test_two_rank_gateway_matches_one_rank_gateway():
    one, two = session_numbers(1), session_numbers(2)
    assert isinstance(two["trainer"], MultiRankTrainer) and not isinstance(one["trainer"], MultiRankTrainer)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["norms"], one["norms"], rtol=1e-5)
    np.testing.assert_allclose(two["forward"], one["forward"], rtol=1e-5)
    assert two["steps"] == one["steps"] == [1.0, 2.0, 3.0, 4.0, 3.0]  # the resume restored step 2
    assert two["kinds"]["step-2"] == (T + "TRAINING", False)
    assert two["kinds"] == one["kinds"]
    assert (one["ranks"], two["ranks"]) == (1, 2)  # the inspector counted the saves' data files
    for p in two["trainer"]._procs:  # unload_model stops the rank processes
        p.join(20)
        assert not p.is_alive()
