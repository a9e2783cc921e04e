"""Wire datums -> validated tensors -> loss, per-datum outputs and ``name:reduction`` metrics.

Wire semantics (docs/wire.md B.3): a datum's ``model_input.chunks[].tokens`` are the N input tokens;
every ``loss_fn_inputs`` tensor is aligned with them position by position (position i holds the
target predicted *at* input i). ``TensorData`` arrives as ``{"data", "dtype", "shape"?}``,
possibly CSR-sparse (``sparse_crow_indices`` / ``sparse_col_indices``, 2-D only), or as a raw
list whose dtype follows the key (``target_tokens`` int64, everything else float32).

Losses are raw sums over tokens and datums, never means: the SDK accumulates several
``forward_backward`` calls and normalises at ``optim_step`` (``grad_accumulation_normalization``).

* ``cross_entropy``: ``sum(-weights * logp(target))``; ``target_tokens`` may be [N] or [N, K]
  (K targets per position, weighted alike); weights default to ones.
* ``importance_sampling``: ``sum(-weights * exp(logp - logprobs) * advantages)``, where
  ``logprobs`` are the sampler's log-probabilities of the targets.
* ``ppo``: ``sum(-weights * min(r * A, clip(r, low, high) * A))`` with ``r = exp(logp - logprobs)``;
  ``clip_low_threshold`` / ``clip_high_threshold`` (ratio bounds, default 0.8 / 1.2) come from
  ``loss_fn_inputs`` (scalar or per position) or ``loss_fn_config``.

"Loss tokens" (for ``num_loss_tokens`` normalisation) are positions that can carry gradient:
non-zero weight for cross-entropy, non-zero ``weights * advantages`` for the policy losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import TrainerUserError

SUPPORTED_LOSSES = ("cross_entropy", "importance_sampling", "ppo")
LOSS_FN_OUTPUT_TYPE = "ArrayRecord"
DEFAULT_CLIP_LOW = 0.8
DEFAULT_CLIP_HIGH = 1.2

_INT_KEYS = {"target_tokens"}
_NP_DTYPES = {"int64": np.int64, "float32": np.float32}


def tensor_from_wire(value: Any, key: str) -> torch.Tensor:
    """Decode one wire ``TensorData`` (dict, CSR dict, raw list or number) to a dense CPU tensor."""
    wanted = "int64" if key in _INT_KEYS else "float32"
    if isinstance(value, Mapping):
        dtype = value.get("dtype", wanted)
        if dtype not in _NP_DTYPES:
            raise TrainerUserError(f"{key}: unsupported dtype {dtype!r}; TensorData dtype must be int64 or float32")
        data = value.get("data")
        if data is None:
            data = []
        shape = value.get("shape")
        if shape is not None and (not isinstance(shape, Sequence) or not all(isinstance(s, int) and s >= 0 for s in shape)):
            raise TrainerUserError(f"{key}: shape must be a list of non-negative ints, got {shape!r}")
        crow, col = value.get("sparse_crow_indices"), value.get("sparse_col_indices")
        if crow is not None or col is not None:
            arr = _dense_from_csr(key, data, crow, col, shape, dtype)
        else:
            arr = _array(key, data, dtype)
            if shape is not None:
                if arr.size != math.prod(shape):
                    raise TrainerUserError(f"{key}: {arr.size} values do not fill shape {list(shape)}")
                arr = arr.reshape(shape)
    elif isinstance(value, (list, tuple, int, float)) and not isinstance(value, bool):
        arr = _array(key, value, wanted)
    else:
        raise TrainerUserError(f"{key}: expected TensorData ({{'data', 'dtype', 'shape'}}) or a list, got {type(value).__name__}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _array(key: str, data: Any, dtype: str) -> np.ndarray:
    try:
        raw = np.asarray(data)
    except ValueError:
        raise TrainerUserError(f"{key}: data must be a rectangular numeric array") from None
    if raw.dtype == object or raw.dtype.kind not in "biuf":
        raise TrainerUserError(f"{key}: data must be numbers")
    if dtype == "int64":
        if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
            raise TrainerUserError(f"{key}: int64 tensor holds non-integer values")
        return raw.astype(np.int64)
    arr = raw.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise TrainerUserError(f"{key}: float32 tensor holds NaN or infinite values")
    return arr


def _dense_from_csr(key: str, data: Any, crow: Any, col: Any, shape: Any, dtype: str) -> np.ndarray:
    if crow is None or col is None or shape is None or len(shape) != 2:
        raise TrainerUserError(f"{key}: a CSR tensor needs sparse_crow_indices, sparse_col_indices and a 2-D shape")
    rows, cols = shape
    values = _array(key, data, dtype).reshape(-1)
    crow_a = _array(key + ".sparse_crow_indices", crow, "int64").reshape(-1)
    col_a = _array(key + ".sparse_col_indices", col, "int64").reshape(-1)
    nnz = values.size
    if (crow_a.size != rows + 1 or crow_a[0] != 0 or crow_a[-1] != nnz or np.any(np.diff(crow_a) < 0)
            or col_a.size != nnz or np.any(col_a < 0) or np.any(col_a >= cols)):
        raise TrainerUserError(f"{key}: inconsistent CSR indices for shape {list(shape)} with {nnz} values")
    dense = np.zeros((rows, cols), dtype=_NP_DTYPES[dtype])
    row_of = np.repeat(np.arange(rows), np.diff(crow_a))
    dense[row_of, col_a] = values
    return dense


def tensor_to_wire(t: torch.Tensor) -> dict:
    """A dense float32/int64 wire ``TensorData`` of ``t``."""
    t = t.detach().to("cpu")
    dtype = "int64" if not t.is_floating_point() else "float32"
    t = t.to(torch.int64 if dtype == "int64" else torch.float32)
    return {"data": t.reshape(-1).tolist(), "dtype": dtype, "shape": list(t.shape)}


@dataclass
class PreparedDatum:
    """One validated datum: input ids plus its aligned loss tensors (CPU)."""

    tokens: list[int]
    targets: torch.Tensor            # int64 [N] or [N, K]
    weights: torch.Tensor            # float32, same shape as targets
    sampling_logprobs: torch.Tensor | None = None   # float32 [N] (policy losses)
    advantages: torch.Tensor | None = None          # float32 [N]
    clip_low: torch.Tensor | None = None            # float32 [N] (ppo)
    clip_high: torch.Tensor | None = None

    def loss_mask(self) -> torch.Tensor:
        """Positions that can carry gradient (see module docstring)."""
        if self.advantages is not None:
            return (self.weights * self.advantages) != 0
        w = self.weights if self.weights.dim() == 1 else self.weights.abs().sum(-1)
        return w != 0


def check_loss_fn(loss_fn: str) -> None:
    if loss_fn not in SUPPORTED_LOSSES:
        raise TrainerUserError(
            f"loss_fn {loss_fn!r} is not supported by the fwemu trainer; supported: {', '.join(SUPPORTED_LOSSES)}")


def _input_tokens(datum: Mapping, n: int, vocab_size: int) -> list[int]:
    model_input = datum.get("model_input")
    chunks = model_input.get("chunks") if isinstance(model_input, Mapping) else None
    if not isinstance(chunks, Sequence) or isinstance(chunks, (str, bytes)):
        raise TrainerUserError(f"datum {n}: model_input.chunks must be a list of token chunks")
    tokens: list[int] = []
    for c, chunk in enumerate(chunks):
        if not isinstance(chunk, Mapping):
            raise TrainerUserError(f"datum {n}: chunk {c} must be an object")
        kind = chunk.get("type", "encoded_text")
        if kind != "encoded_text":
            raise TrainerUserError(f"datum {n}: chunk {c} has type {kind!r}; the fwemu stand-in model takes encoded_text chunks only")
        toks = chunk.get("tokens")
        if not isinstance(toks, Sequence) or isinstance(toks, (str, bytes)):
            raise TrainerUserError(f"datum {n}: chunk {c} tokens must be a list of ints")
        for t in toks:
            if not isinstance(t, int) or isinstance(t, bool):
                raise TrainerUserError(f"datum {n}: chunk {c} holds a non-integer token {t!r}")
        tokens.extend(toks)
    if not tokens:
        raise TrainerUserError(f"datum {n}: model_input has no tokens")
    _check_vocab(torch.tensor(tokens), vocab_size, f"datum {n} model_input")
    return tokens


class OutOfVocabulary(TrainerUserError):
    """A token id the stand-in model has no embedding for; ``prepare`` adds why and how to widen."""

    def __init__(self, message: str, token_id: int) -> None:
        super().__init__(message)
        self.token_id = token_id


def _check_vocab(ids: torch.Tensor, vocab_size: int, where: str) -> None:
    bad = ((ids < 0) | (ids >= vocab_size)).nonzero()
    if bad.numel():
        pos = tuple(int(i) for i in bad[0])
        value = int(ids[pos])
        where_pos = pos[0] if len(pos) == 1 else list(pos)
        raise OutOfVocabulary(
            f"{where}: token id {value} at position {where_pos} is outside the vocabulary (0..{vocab_size - 1})",
            value)


def _vocab_help(exc: OutOfVocabulary, vocab_size: int, vocab_note: str) -> str:
    why = f" of the stand-in model ({vocab_note})" if vocab_note else " of the stand-in model"
    widen = (f"; or start the emulator with FWEMU_MODEL_SIZE=vocab={exc.token_id + 1} (or more) to widen it"
             if exc.token_id >= vocab_size else "")
    return (f"{exc}{why}. fwemu trains a small stand-in for every base model: encode with its stand-in "
            "tokenizer (after eval \"$(fwemu env)\", AutoTokenizer.from_pretrained loads it offline) or with "
            f"client.tokenizer (ids 0-255 are bytes, 256 BOS, 257 EOS, 258 PAD){widen}")


def prepare(data: Sequence[Mapping], loss_fn: str, loss_fn_config: Mapping | None,
            vocab_size: int, max_len: int, vocab_note: str = "") -> list[PreparedDatum]:
    """Validate a request's datums for ``loss_fn``; every problem is a TrainerUserError naming the datum.

    ``vocab_note`` says where the vocabulary size comes from, for the out-of-range message."""
    try:
        return _prepare(data, loss_fn, loss_fn_config, vocab_size, max_len)
    except OutOfVocabulary as exc:
        raise TrainerUserError(_vocab_help(exc, vocab_size, vocab_note)) from None


def _prepare(data: Sequence[Mapping], loss_fn: str, loss_fn_config: Mapping | None,
             vocab_size: int, max_len: int) -> list[PreparedDatum]:
    check_loss_fn(loss_fn)
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)) or not data:
        raise TrainerUserError("data must be a non-empty list of Datum objects")
    config = dict(loss_fn_config or {})
    if config.get("output") not in (None, "logprobs"):
        # The SDK's embedding / contrastive calls ask for other outputs; silently returning
        # log-probabilities instead would look like success.
        raise TrainerUserError(f"loss_fn_config.output={config['output']!r} (embeddings / contrastive) is not "
                               "supported by the fwemu stand-in; it computes token log-probabilities only")
    out = []
    for n, datum in enumerate(data):
        if not isinstance(datum, Mapping):
            raise TrainerUserError(f"datum {n}: expected an object with model_input and loss_fn_inputs")
        tokens = _input_tokens(datum, n, vocab_size)
        if len(tokens) > max_len:
            raise TrainerUserError(f"datum {n}: {len(tokens)} tokens exceed the stand-in model's context of {max_len} "
                                   "(raise it with FWEMU_MODEL_SIZE=max_pos=N)")
        inputs = datum.get("loss_fn_inputs") or {}
        if not isinstance(inputs, Mapping):
            raise TrainerUserError(f"datum {n}: loss_fn_inputs must be an object")
        out.append(_prepare_one(n, tokens, inputs, loss_fn, config, vocab_size))
    return out


def _prepare_one(n: int, tokens: list[int], inputs: Mapping, loss_fn: str, config: dict, vocab_size: int) -> PreparedDatum:
    N = len(tokens)
    if "target_tokens" not in inputs:
        raise TrainerUserError(f"datum {n}: loss_fn_inputs.target_tokens is required for {loss_fn}")
    targets = tensor_from_wire(inputs["target_tokens"], "target_tokens")
    policy = loss_fn != "cross_entropy"
    if targets.dim() not in ((1,) if policy else (1, 2)) or targets.shape[0] != N:
        raise TrainerUserError(
            f"datum {n}: target_tokens has shape {list(targets.shape)} but the input has {N} tokens; "
            f"targets are aligned with the inputs ([{N}]{'' if policy else f' or [{N}, K]'}), position i "
            "holding the token that follows input i")
    _check_vocab(targets, vocab_size, f"datum {n} target_tokens")
    if "weights" in inputs:
        weights = tensor_from_wire(inputs["weights"], "weights")
        if weights.shape != targets.shape:
            raise TrainerUserError(f"datum {n}: weights shape {list(weights.shape)} != target_tokens shape {list(targets.shape)}")
    else:
        weights = torch.ones(targets.shape, dtype=torch.float32)
    prepared = PreparedDatum(tokens, targets, weights)
    if policy:
        for key in ("logprobs", "advantages"):
            if key not in inputs:
                raise TrainerUserError(f"datum {n}: loss_fn_inputs.{key} is required for {loss_fn}")
        prepared.sampling_logprobs = _aligned(n, inputs, "logprobs", N)
        prepared.advantages = _aligned(n, inputs, "advantages", N)
        if loss_fn == "ppo":
            prepared.clip_low = _threshold(n, inputs, config, "clip_low_threshold", DEFAULT_CLIP_LOW, N)
            prepared.clip_high = _threshold(n, inputs, config, "clip_high_threshold", DEFAULT_CLIP_HIGH, N)
            if bool((prepared.clip_low > prepared.clip_high).any()):
                raise TrainerUserError(f"datum {n}: clip_low_threshold exceeds clip_high_threshold")
    return prepared


def _aligned(n: int, inputs: Mapping, key: str, N: int) -> torch.Tensor:
    t = tensor_from_wire(inputs[key], key)
    if t.shape != (N,):
        raise TrainerUserError(f"datum {n}: {key} has shape {list(t.shape)}, expected [{N}] (one per input token)")
    return t


def _threshold(n: int, inputs: Mapping, config: Mapping, key: str, default: float, N: int) -> torch.Tensor:
    if key in inputs:
        t = tensor_from_wire(inputs[key], key).reshape(-1)
    elif key in config:
        t = tensor_from_wire(config[key], key).reshape(-1)
    else:
        t = torch.tensor([default], dtype=torch.float32)
    if t.numel() == 1:
        t = t.expand(N).clone()
    if t.shape != (N,) or bool((t < 0).any()):
        raise TrainerUserError(f"datum {n}: {key} must be a non-negative scalar or one value per input token")
    return t


@dataclass
class LossResult:
    loss: torch.Tensor | None               # scalar, differentiable (None after ``merge``)
    outputs: list[dict]                     # one {name: TensorData} per datum
    metrics: dict[str, float]               # ``name:reduction`` keys only
    loss_tokens: int                        # positions that carry gradient
    loss_sequences: int                     # datums with at least one such position
    ratio_means: list[float] = field(default_factory=list)   # per datum (policy losses)
    clip_fractions: list[float] = field(default_factory=list)  # per datum (ppo)


def compute(loss_fn: str, target_logprobs: Sequence[torch.Tensor], prepared: Sequence[PreparedDatum]) -> LossResult:
    """Loss over a batch given each datum's log-probabilities of its targets (shape of targets)."""
    total = None
    outputs: list[dict] = []
    ratio_means: list[float] = []
    clip_fracs: list[float] = []
    tokens = sequences = 0
    for lp, d in zip(target_logprobs, prepared):
        w = d.weights.to(lp.device)
        if loss_fn == "cross_entropy":
            elementwise = -(w * lp)
        else:
            adv = d.advantages.to(lp.device)
            ratio = torch.exp(lp - d.sampling_logprobs.to(lp.device))
            if loss_fn == "importance_sampling":
                objective = ratio * adv
            else:
                low, high = d.clip_low.to(lp.device), d.clip_high.to(lp.device)
                clipped = torch.minimum(torch.maximum(ratio, low), high)
                objective = torch.minimum(ratio * adv, clipped * adv)
                clip_fracs.append(float(((ratio < low) | (ratio > high)).float().mean()))
            ratio_means.append(float(ratio.detach().mean()))
            elementwise = -(w * objective)
        s = elementwise.sum()
        total = s if total is None else total + s
        outputs.append({"logprobs": tensor_to_wire(lp), "elementwise_loss": tensor_to_wire(elementwise)})
        mask = d.loss_mask()
        tokens += int(mask.sum())
        sequences += int(bool(mask.any()))
    metrics = {"loss:sum": float(total.detach())}
    return LossResult(total, outputs, metrics, tokens, sequences, ratio_means, clip_fracs)


def merge(results: Sequence[LossResult]) -> LossResult:
    """Combine micro-batch results into one response (datum order kept)."""
    outputs = [o for r in results for o in r.outputs]
    ratio_means = [x for r in results for x in r.ratio_means]
    clip_fracs = [x for r in results for x in r.clip_fractions]
    metrics = {"loss:sum": float(sum(r.metrics["loss:sum"] for r in results))}
    if ratio_means:
        metrics["importance_ratio:mean"] = float(np.mean(ratio_means))
    if clip_fracs:
        metrics["clip_fraction:mean"] = float(np.mean(clip_fracs))
    return LossResult(None, outputs, metrics, sum(r.loss_tokens for r in results),
                      sum(r.loss_sequences for r in results), ratio_means, clip_fracs)
