"""Incremental decoding of the stand-in model with a key/value cache (torch).

Without a cache every sampled token reruns the model over the whole prefix, so a completion of
C tokens after a prompt of P costs C forwards of P..P+C-1 positions. `CachedDecoder` runs the
prompt once (prefill) and then one position per token, keeping each layer's rotated keys and
values. It calls the model's own modules (norms, projections, LoRA wrappers, MLP, head), so
only the attention core is written here, following `tiny_llama.Attention` step for step: the
same RoPE tables (`model.rope`), the same GQA repeat, the same SDPA scale.

The logits it gives are the model's logits up to float32 rounding (different matmul shapes sum
in a different order), not bit for bit; that is why the sampler still scores a finished
completion with one full forward (`sampler.score`), the computation the trainer's `forward`
does, and reports those as `logprob`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fwemu.emulator.trainer.model_session import _sdpa_context
from fwemu.emulator.trainer.tiny_llama import TinyLlamaForCausalLM, rotate_half


class CachedDecoder:
    """`logits(ids)` for a growing sequence: only the positions not seen before are computed.

    `ids` must extend the previous call's ids (the sampler appends one token at a time); any
    other sequence starts over with a fresh prefill.
    """

    def __init__(self, model: TinyLlamaForCausalLM, device: torch.device):
        self.model, self.device = model, device
        self._ids: list[int] = []
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        self._cos = self._sin = None

    def _tables(self, upto: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables for positions 0..upto-1 (grown by doubling; a position's values do not
        depend on the table's length)."""
        if self._cos is None or self._cos.shape[1] < upto:
            have = self._cos.shape[1] if self._cos is not None else 32
            size = max(upto, min(2 * have, self.model.size.max_position_embeddings))
            self._cos, self._sin = self.model.rope(size, self.device, dtype)
        return self._cos, self._sin

    @torch.no_grad()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """float32 logits of the positions of `ids` not yet computed: [new, vocab]."""
        n = len(self._ids)
        if n == 0 or len(ids) <= n or ids[:n] != self._ids:
            self._ids, self._k, self._v, n = [], [], [], 0
        with _sdpa_context(self.device):
            out = self._forward(ids[n:], n)
        self._ids = list(ids)
        return out

    def last_logits(self, ids: list[int]) -> torch.Tensor:
        """The logits of the last position of `ids` (what sampling needs)."""
        return self.logits(ids)[-1]

    def _forward(self, new: list[int], start: int) -> torch.Tensor:
        m = self.model
        x = m.model.embed_tokens(torch.tensor([new], dtype=torch.int64, device=self.device))
        t = len(new)
        cos_all, sin_all = self._tables(start + t, x.dtype)
        cos, sin = cos_all[:, start:start + t].unsqueeze(1), sin_all[:, start:start + t].unsqueeze(1)
        for i, layer in enumerate(m.model.layers):
            x = x + self._attend(layer.self_attn, layer.input_layernorm(x), cos, sin, i, t)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return m.lm_head(m.model.norm(x))[0].float()

    def _attend(self, attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int, t: int):
        b = 1
        q = attn.q_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if layer < len(self._k):
            k = torch.cat((self._k[layer], k), dim=2)
            v = torch.cat((self._v[layer], v), dim=2)
            self._k[layer], self._v[layer] = k, v
        else:
            self._k.append(k)
            self._v.append(v)
        total = k.shape[2]
        rep = attn.num_heads // attn.num_kv_heads
        if rep > 1:
            shape = (b, attn.num_heads, total, attn.head_dim)
            k = k[:, :, None].expand(b, attn.num_kv_heads, rep, total, attn.head_dim).reshape(shape)
            v = v[:, :, None].expand(b, attn.num_kv_heads, rep, total, attn.head_dim).reshape(shape)
        # prefill (t == total): causal; one new position: it sees every cached one
        causal = t == total and t > 1
        if t != total and t > 1:  # several new positions after a cached prefix: explicit mask
            mask = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(total - t)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.head_dim ** -0.5)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=attn.head_dim ** -0.5)
        return attn.o_proj(out.transpose(1, 2).reshape(b, t, attn.num_heads * attn.head_dim))
