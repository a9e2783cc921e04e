"""``ShardedTrainerModel``: one rank of a multi-process trainer (FSDP2 over the stand-in).

Every rank of the default process group builds the same ``TrainerModel`` (same deterministic
init), then ``fully_shard`` (FSDP2) keeps only its dim-0 shard of every parameter, gradient and
Adam moment as a DTensor. Each rank is driven with the same calls in the same order
(rank_group.py); what differs per rank is the data:

* data parallel: ``forward_backward`` / ``forward`` validate the whole batch on every rank (so a
  bad datum fails on all ranks alike, before any collective), then rank r runs its contiguous
  share of the datums. Ranks with fewer micro-batches run idle passes (one pad token, zero
  loss) so every rank issues the same FSDP all-gathers and reduce-scatters. Per-datum outputs
  and metrics are gathered in datum order, so the reply equals the one-process reply.
* losses are raw sums, so gradients are summed over ranks, not averaged
  (``set_gradient_divide_factor(1.0)``); the token / sequence counts used by
  ``grad_accumulation_normalization`` are global.
* the gradient norm is the global one (``full_tensor()`` of DTensor norms), so clipping and the
  ``grad_norm:mean`` metric match the one-process trainer.
* ``save_state`` is ``dcp.save`` through the process group: one ``__<rank>_0.distcp`` per rank,
  a ``.metadata`` with every shard. ``load_state`` is ``dcp.load`` into this rank's shards, so a
  checkpoint saved at any number of ranks (or by one process) reshards to this world size.
* sampler exports gather full weights on rank 0 (``get_model_state_dict`` with
  ``full_state_dict=True, cpu_offload=True``) into an unsharded CPU copy of the model, which
  rank 0 alone writes; the other ranks write nothing.

``precision="bf16"`` (CUDA only) runs forward/backward in bfloat16 through FSDP2's
``MixedPrecisionPolicy`` with float32 gradient reduction; parameters, Adam state and every
checkpoint stay float32.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from fwemu.client.tokenizer import PAD_ID

from . import losses
from .errors import TrainerUserError
from .lora import apply_lora
from .model_session import TrainerModel, _sdpa_context
from .model_config import vocab_origin
from .tiny_llama import TinyLlamaForCausalLM, derive_seed

PRECISIONS = ("fp32", "bf16")


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of n items; the first n % world ranks get one more."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class ShardedTrainerModel(TrainerModel):
    """A ``TrainerModel`` on one rank of an initialised default process group (module docstring)."""

    no_dist = False

    def __init__(self, *args, precision: str = "fp32", **kwargs) -> None:
        if not dist.is_initialized():
            raise RuntimeError("ShardedTrainerModel needs an initialised default process group")
        if precision not in PRECISIONS:
            raise TrainerUserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.precision = precision
        self._shadow: TinyLlamaForCausalLM | None = None
        super().__init__(*args, **kwargs)
        if precision == "bf16" and self.device.type != "cuda":
            raise TrainerUserError("precision bf16 needs CUDA; the CPU trainer runs float32")

    # ------------------------------------------------------------------ hooks

    def _shard(self) -> None:
        mp = None
        if self.precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        kw = {"mp_policy": mp} if mp is not None else {}
        for layer in self.model.model.layers:
            fully_shard(layer, **kw)
        fully_shard(self.model, **kw)
        for module in self.model.modules():  # losses are sums: sum the ranks' gradients, never average
            if isinstance(module, FSDPModule):  # (plain SUM: gloo has no PREMUL_SUM)
                module.set_gradient_divide_factor(1.0)
                module.set_force_sum_reduction_for_comms(True)

    def _total_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def _entry_like(self, t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t)  # a DTensor with this rank's shard, on the parameter's device

    def _export_module(self) -> torch.nn.Module | None:
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank != 0:
            return None
        if self._shadow is None:
            self._shadow = TinyLlamaForCausalLM.create(self.size, derive_seed("fwemu/base", self.base_model), "cpu")
            if self.lora_rank:
                apply_lora(self._shadow, self.lora_rank, float(self.lora_alpha),
                           derive_seed("fwemu/lora", self.base_model, self.seed))
        self._shadow.load_state_dict(full)
        return self._shadow

    # ------------------------------------------------------------------ data parallel passes

    def _run(self, data: Sequence[Mapping], loss_fn: str, loss_fn_config: Mapping | None, backward: bool) -> dict:
        prepared = losses.prepare(data, loss_fn, loss_fn_config, self.size.vocab_size,
                                  self.size.max_position_embeddings,
                                  vocab_note=vocab_origin(self.base_model, self.size.vocab_size))
        lo, hi = share(len(prepared), self.rank, self.world)
        batches = self._micro_batches(prepared[lo:hi])
        count = torch.tensor([len(batches)], dtype=torch.int64, device=self._comm_device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        results = []
        grad = torch.enable_grad() if backward else torch.no_grad()
        with grad, _sdpa_context(self.device):
            for i in range(int(count.item())):
                if i >= len(batches):
                    self._idle_pass(backward)
                    continue
                result = losses.compute(loss_fn, self._target_logprobs(batches[i]), batches[i])
                if backward:
                    result.loss.backward()
                result.loss = None
                results.append(result)
        # FSDP2 keeps the root's parameters gathered after a forward without backward; reshard
        # so the registered parameters are the optimiser's sharded DTensors again.
        self.model.reshard()
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, losses.merge(results))
        merged = losses.merge(gathered)  # rank order is datum order
        if backward:
            self._acc_tokens += merged.loss_tokens
            self._acc_sequences += merged.loss_sequences
        return {"loss_fn_output_type": losses.LOSS_FN_OUTPUT_TYPE,
                "loss_fn_outputs": merged.outputs, "metrics": merged.metrics}

    def _idle_pass(self, backward: bool) -> None:
        """One pad token through the model with zero loss: the same collectives as a real pass."""
        logits = self.model(torch.full((1, 1), PAD_ID, dtype=torch.int64, device=self.device))
        if backward:
            (logits.float().sum() * 0.0).backward()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------ DCP

    def save_state(self, dest, fresh_optimizer: bool = False) -> None:
        """``TrainerModel.save_state`` through the process group; ``fresh_optimizer`` (the
        ``drop-optimizer-state`` break switch only) writes zero moments and Adam steps instead."""
        if not fresh_optimizer:
            return super().save_state(dest)
        import warnings
        from pathlib import Path

        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemWriter
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        dest = Path(dest)
        with self._lock:
            dest.mkdir(parents=True, exist_ok=True)
            osd = get_optimizer_state_dict(self.model, self.optimizer)
            osd = {"state": {fqn: {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                             for fqn, s in osd["state"].items()},
                   "param_groups": osd["param_groups"]}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dcp.save({"model": self.trainable_state_dict(), "optim": osd}, storage_writer=FileSystemWriter(dest))
