"""A small LLaMA-style causal LM in plain torch, numerically matching HF ``LlamaForCausalLM``.

Parameter names are exactly Hugging Face's (``model.layers.0.self_attn.q_proj.weight``...), so
``state_dict()`` is already the ``model.safetensors`` layout and the DCP keys carry the names
the inspector and real tooling expect. Numerics follow transformers' implementation step by
step (float32 RMSNorm, RoPE with ``rotate_half``, GQA by repeating kv heads, SiLU-gated MLP) so
an exported directory loaded by transformers gives the same logits.

Initial weights are a pure function of a 64-bit seed (``derive_seed``) drawn from a private
``torch.Generator`` on the CPU, so the same base model has the same weights in every process
and on every device, and the global torch RNG is never touched.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from .model_config import ModelSize

INIT_STD = 0.02  # HF LlamaConfig.initializer_range


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (unlike ``hash()``, the same in every process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, size: ModelSize) -> None:
        super().__init__()
        h, d = size.hidden_size, size.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = size.num_heads, size.num_kv_heads, d
        self.q_proj = nn.Linear(h, size.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, size.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, size.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(size.num_heads * d, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.num_heads // self.num_kv_heads
        if rep > 1:  # HF repeat_kv: query head i reads kv head i // rep
            k = k[:, :, None].expand(b, self.num_kv_heads, rep, t, self.head_dim).reshape(b, self.num_heads, t, self.head_dim)
            v = v[:, :, None].expand(b, self.num_kv_heads, rep, t, self.head_dim).reshape(b, self.num_heads, t, self.head_dim)
        # Causal only: batches are right-padded, so a real position never sees a pad.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.head_dim ** -0.5)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, size: ModelSize) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(size.hidden_size, size.intermediate_size, bias=False)
        self.up_proj = nn.Linear(size.hidden_size, size.intermediate_size, bias=False)
        self.down_proj = nn.Linear(size.intermediate_size, size.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, size: ModelSize) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(size.hidden_size, size.rms_norm_eps)
        self.self_attn = Attention(size)
        self.post_attention_layernorm = RMSNorm(size.hidden_size, size.rms_norm_eps)
        self.mlp = MLP(size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """HF ``LlamaModel``: the ``model.`` prefix of every name except ``lm_head``."""

    def __init__(self, size: ModelSize) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(size.vocab_size, size.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(size) for _ in range(size.num_layers))
        self.norm = RMSNorm(size.hidden_size, size.rms_norm_eps)


class TinyLlamaForCausalLM(nn.Module):
    """Build with ``TinyLlamaForCausalLM.create(size, seed, device)``; ``forward(ids) -> logits``."""

    def __init__(self, size: ModelSize) -> None:
        super().__init__()
        self.size = size
        self.model = LlamaBody(size)
        self.lm_head = nn.Linear(size.hidden_size, size.vocab_size, bias=False)
        d = size.head_dim
        # A plain attribute, not a buffer: it is not state, and meta-device construction
        # would leave a buffer uninitialised. Computed on the CPU exactly as transformers does.
        self._inv_freq = 1.0 / (size.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device="cpu").float() / d))

    @classmethod
    def create(cls, size: ModelSize, seed: int, device: torch.device | str = "cpu") -> "TinyLlamaForCausalLM":
        """Allocate without torch's default init (no global RNG use), then ``init_weights(seed)``."""
        with torch.device("meta"):
            model = cls(size)
        model.to_empty(device=device)
        model.init_weights(seed)
        return model

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """N(0, 0.02) for embeddings and projections, ones for norms, in registration order."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, INIT_STD, generator=gen))

    def rope(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if seq_len > self.size.max_position_embeddings:
            raise ValueError(f"sequence of {seq_len} tokens exceeds max_position_embeddings {self.size.max_position_embeddings}")
        pos = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = pos[:, None] * self._inv_freq.to(device)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[None]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rope(input_ids.shape[1], x.device, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))
