"""`/inference/v1/completions` requests and responses as pure functions (no HTTP, no torch).

The request is checked the way the serving stack checks it: unknown fields are refused with
"Extra inputs are not permitted, field: '<name>'" (the SDK matches that exact text to fall back
from Parquet router replay and top-K references, which the emulator does not offer), and errors
carry the OpenAI-style string code `invalid_request_error` the SDK compares.
Responses follow the completions schema the SDK's DeploymentSampler parses: `choices[].text`,
`finish_reason`, `logprobs.content[]` (token, token_id, logprob, sampling_logprob, top_logprobs),
`raw_output.completion_token_ids`, `usage`; streamed as SSE chunks ending in `data: [DONE]`.
With `echo`, the prompt comes back in front of the completion (text, `completion_token_ids`,
and one `logprobs.content` row per prompt token, the first of which has no context and reports
0.0), the layout the SDK's sampler strips again (`logprobs_echoed`).
Token ids are checked against the served model's vocabulary by `check_vocab` once the
deployment is known; text comes from `detokenize`, which knows the family's added tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from fwemu.client.tokenizer import encode

from .detokenize import Decode, decoder_for

from .sampling_params import Completion, SamplingParams

MAX_N = 16
MAX_TOKENS = 4096
MAX_PROMPT = 32768
MAX_TOKEN_ID = 1 << 24  # parse bound; the served vocabulary is checked by check_vocab
# accepted and without effect on a dense stand-in model (no experts to route, no prompt cache)
_IGNORED = {"perf_metrics_in_response", "prompt_cache_key", "include_routing_matrix", "user", "raw_output",
            "return_token_ids", "reset_prompt_cache", "context_length_exceeded_behavior", "min_tokens"}
_NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "repetition_penalty": 1, "min_p": 0}
_FIELDS = {"model", "prompt", "n", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
           "logprobs", "top_logprobs", "echo", "ignore_eos", *_IGNORED, *_NEUTRAL}
_BYTE_DECODE = decoder_for(None)


class CompletionError(ValueError):
    """A request the server refuses; `status` is the HTTP status (400 or 404)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code

    def body(self) -> dict:
        return {"error": {"object": "error", "type": self.code, "code": self.code, "message": self.message}}


@dataclass(frozen=True)
class Request:
    model: str
    prompt: list[int]
    n: int
    stream: bool
    seed: int | None
    logprobs: bool
    params: SamplingParams
    echo: bool = False


def _number(body: Mapping, key: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    v = body.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise CompletionError(f"{key} must be a number (got {v!r})")
    if v < lo or v > hi or (lo_open and v == lo):
        raise CompletionError(f"{key}={v} is out of range ({'(' if lo_open else '['}{lo}, {hi}])")
    return float(v)


def _int(body: Mapping, key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CompletionError(f"{key} must be an integer in [{lo}, {hi}] (got {v!r})")
    return v


def parse(body: Any) -> Request:
    """The checked request; raises CompletionError."""
    if not isinstance(body, Mapping):
        raise CompletionError("the request body must be a JSON object")
    for key in body:
        if key not in _FIELDS:
            raise CompletionError(f"Extra inputs are not permitted, field: '{key}'")
    for key, neutral in _NEUTRAL.items():
        if body.get(key) not in (None, neutral):
            raise CompletionError(f"{key} is not supported by the emulator (only {neutral})")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise CompletionError("model is required: accounts/<account>/deployments/<deployment id>")
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompt = encode(prompt)
    if (not isinstance(prompt, list) or not prompt or len(prompt) > MAX_PROMPT
            or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < MAX_TOKEN_ID for t in prompt)):
        raise CompletionError(f"prompt must be a non-empty string or a list of at most {MAX_PROMPT} non-negative "
                              "token ids")
    echo = body.get("echo", False)
    if echo is None:
        echo = False
    if not isinstance(echo, bool):
        raise CompletionError("echo must be true or false")
    lp = body.get("logprobs", False)
    if lp is None:
        lp = False
    if isinstance(lp, bool):
        top = _int(body, "top_logprobs", 0, 0, 20) or 0
    elif isinstance(lp, int) and 0 <= lp <= 20:  # legacy completions: logprobs=<number of alternatives>
        top, lp = lp, True
    else:
        raise CompletionError(f"logprobs must be true/false or an integer in [0, 20] (got {lp!r})")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, (str, int)) and not isinstance(stop, bool) else (stop or [])
    if not isinstance(stop, list) or len(stop) > 16 or any(
            isinstance(s, bool) or not isinstance(s, (str, int)) for s in stop):
        raise CompletionError("stop must be a string, a token id, or a list of at most 16 of them")
    if any(isinstance(s, int) and not 0 <= s < MAX_TOKEN_ID for s in stop):
        raise CompletionError("stop token ids must be non-negative token ids")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise CompletionError("ignore_eos must be true or false")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise CompletionError("stream must be true or false")
    params = SamplingParams(
        max_tokens=_int(body, "max_tokens", 16, 0, MAX_TOKENS),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=_int(body, "top_k", 0, 0, MAX_TOKEN_ID),
        stop_ids=frozenset(s for s in stop if isinstance(s, int)),
        stop_strings=tuple(s for s in stop if isinstance(s, str) and s),
        ignore_eos=ignore_eos,
        top_logprobs=top if lp else 0,
    )
    return Request(model=model, prompt=list(prompt), n=_int(body, "n", 1, 1, MAX_N), stream=stream,
                   seed=_int(body, "seed", None, 0, 2**63 - 1), logprobs=bool(lp), params=params, echo=echo)


def check_vocab(req: Request, vocab_size: int) -> None:
    """Prompt and stop ids must be ids of the served model (its vocabulary is per base model)."""
    bad = [t for t in req.prompt if t >= vocab_size] + [t for t in req.params.stop_ids if t >= vocab_size]
    if bad:
        raise CompletionError(f"token id {bad[0]} is outside the model's vocabulary [0, {vocab_size})")


# ---------------------------------------------------------------------- responses
def token_text(token_id: int, decode: Decode = _BYTE_DECODE) -> str:
    return decode([token_id], skip_special=False)


def token_bytes(token_id: int, decode: Decode = _BYTE_DECODE) -> list[int]:
    """The raw bytes of a byte token (a lone UTF-8 lead byte is not valid text on its own)."""
    return [token_id] if token_id < 256 else list(token_text(token_id, decode).encode("utf-8"))


def _row(token: int, logprob: float, sampling_logprob: float | None, top: list[tuple[int, float]] | None,
         decode: Decode) -> dict:
    entry: dict[str, Any] = {"token": token_text(token, decode), "token_id": token, "logprob": logprob,
                             "sampling_logprob": sampling_logprob, "bytes": token_bytes(token, decode)}
    if top is not None:
        entry["top_logprobs"] = [{"token": token_text(t, decode), "token_id": t, "logprob": v} for t, v in top]
    return entry


def _content(c: Completion, i: int, top: int, decode: Decode = _BYTE_DECODE) -> dict:
    return _row(c.tokens[i], c.logprobs[i], c.sampling_logprobs[i], c.top[i] if top else None, decode)


def _echo_rows(req: Request, c: Completion, decode: Decode) -> list[dict]:
    """One row per prompt token: the first has no context (0.0, no alternatives); prompt tokens
    were not sampled, so `sampling_logprob` is null."""
    top = req.params.top_logprobs
    rows = [_row(req.prompt[0], 0.0, None, [] if top else None, decode)]
    for j, tok in enumerate(req.prompt[1:]):
        rows.append(_row(tok, c.prompt_logprobs[j], None, c.prompt_top[j] if top else None, decode))
    return rows


def _choice(req: Request, index: int, c: Completion, decode: Decode) -> dict:
    ids = req.prompt + c.tokens if req.echo else c.tokens
    text = decode(req.prompt) + c.text if req.echo else c.text
    choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": c.finish_reason,
                              "raw_output": {"prompt_token_ids": req.prompt, "completion_token_ids": ids}}
    if req.logprobs:
        rows = _echo_rows(req, c, decode) if req.echo else []
        rows += [_content(c, i, req.params.top_logprobs, decode) for i in range(len(c.tokens))]
        choice["logprobs"] = {"content": rows}
    return choice


def usage(req: Request, completions: list[Completion]) -> dict:
    done = sum(len(c.tokens) for c in completions)
    return {"prompt_tokens": len(req.prompt), "completion_tokens": done, "total_tokens": len(req.prompt) + done}


def response(req: Request, completions: list[Completion], response_id: str, decode: Decode = _BYTE_DECODE) -> dict:
    return {"id": response_id, "object": "text_completion", "created": int(time.time()), "model": req.model,
            "choices": [_choice(req, i, c, decode) for i, c in enumerate(completions)],
            "usage": usage(req, completions)}


def _text_deltas(c: Completion, decode: Decode) -> list[str]:
    """Per-token pieces of the final text (they join to exactly `c.text`)."""
    pieces, shown = [], 0
    for i in range(len(c.tokens)):
        upto = decode(c.tokens[: i + 1])[: len(c.text)]
        if not c.text.startswith(upto):  # an incomplete UTF-8 sequence decoded as U+FFFD so far
            pieces.append("")
            continue
        pieces.append(upto[shown:])
        shown = len(upto)
    if pieces:
        pieces[-1] += c.text[shown:]
    return pieces


def sse_events(req: Request, completions: list[Completion], response_id: str,
               perf_metrics: Mapping[str, str] | None = None, decode: Decode = _BYTE_DECODE) -> Iterator[bytes]:
    """The streamed form: (with echo, one chunk of the prompt,) one chunk per token and choice,
    a final chunk per choice, usage, [DONE]."""
    created = int(time.time())

    def chunk(choices: list[dict], **extra) -> bytes:
        doc = {"id": response_id, "object": "text_completion", "created": created, "model": req.model,
               "choices": choices, **extra}
        return f"data: {json.dumps(doc)}\n\n".encode()

    for index, c in enumerate(completions):
        if req.echo:
            echoed: dict[str, Any] = {"index": index, "text": decode(req.prompt), "finish_reason": None}
            if req.logprobs:
                echoed["logprobs"] = {"content": _echo_rows(req, c, decode)}
            yield chunk([echoed])
        deltas = _text_deltas(c, decode)
        for i in range(len(c.tokens)):
            piece: dict[str, Any] = {"index": index, "text": deltas[i], "finish_reason": None}
            if req.logprobs:
                piece["logprobs"] = {"content": [_content(c, i, req.params.top_logprobs, decode)]}
            yield chunk([piece])
        ids = req.prompt + c.tokens if req.echo else c.tokens
        final = {"index": index, "text": "", "finish_reason": c.finish_reason,
                 "raw_output": {"prompt_token_ids": req.prompt, "completion_token_ids": ids}}
        yield chunk([final])
    extra: dict[str, Any] = {"usage": usage(req, completions)}
    if perf_metrics:
        extra["perf_metrics"] = dict(perf_metrics)
    yield chunk([], **extra)
    yield b"data: [DONE]\n\n"
