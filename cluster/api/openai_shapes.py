"""OpenAI request parsing and response shapes (chat/completions and completions)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from cluster.pipeline.engine import GenerationParams

ROLES = ("system", "user", "assistant", "developer", "tool")


class RequestError(ValueError):
    """A malformed request: becomes a 400 with OpenAI's error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class ParsedRequest:
    params: GenerationParams
    stream: bool
    include_usage: bool
    model: str
    messages: list[dict] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None   # completions may send token ids instead of text
    want_logprobs: bool = False


# Parameters with behaviour this server does not have: refused unless they ask for the default.
UNSUPPORTED_UNLESS_DEFAULT = {
    "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None, "echo": False, "suffix": None,
    "best_of": 1, "tools": None, "functions": None, "response_format": None,
}


def _refuse_unsupported(body: dict) -> None:
    for key, default in UNSUPPORTED_UNLESS_DEFAULT.items():
        value = body.get(key, default)
        if value not in (default, None, {}, []) and not (key == "response_format" and value == {"type": "text"}):
            raise RequestError(f"'{key}' is not supported by this server (got {value!r})", key)


def _number(body: dict, key: str, default, *, low=None, high=None, integer=False):
    value = body.get(key, default)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise RequestError(f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}", key)
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestError(f"'{key}' must be between {low} and {high}, got {value!r}", key)
    return value


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be a boolean, got {value!r}", key)
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        return stop
    raise RequestError("'stop' must be a string or a list of up to 4 strings", "stop")


def parse_request(body: Any, *, chat: bool, default_max_tokens: int) -> ParsedRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if _number(body, "n", 1, integer=True) != 1:
        raise RequestError("only n=1 is supported", "n")
    _refuse_unsupported(body)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"'max_tokens' must be a positive integer, got {max_tokens!r}", "max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"'seed' must be an integer, got {seed!r}", "seed")
    top_logprobs = _number(body, "top_logprobs", 0, low=0, high=20, integer=True)
    logprobs = body.get("logprobs")
    if chat:
        if logprobs is not None and not isinstance(logprobs, bool):
            raise RequestError("'logprobs' must be a boolean", "logprobs")
        if top_logprobs and not logprobs:
            raise RequestError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        want_logprobs = bool(logprobs)
    else:
        # The legacy completions API's logprobs is the number of alternatives.
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= 5):
            raise RequestError("'logprobs' must be an integer 0-5 for completions", "logprobs")
        want_logprobs = logprobs is not None
        top_logprobs = logprobs or 0
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=float(_number(body, "temperature", 1.0, low=0, high=2)),
        top_p=float(_number(body, "top_p", 1.0, low=0, high=1)),
        top_k=int(_number(body, "top_k", 0, low=0, integer=True)),
        seed=seed,
        stop=_stop(body),
        top_logprobs=top_logprobs,
        speculate=_flag(body, "speculation", True),
    )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    model = body.get("model", "")
    if not isinstance(model, str):
        raise RequestError("'model' must be a string", "model")
    parsed = ParsedRequest(params, stream, bool(options.get("include_usage")), model, want_logprobs=want_logprobs)
    if chat:
        parsed.messages = _messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            parsed.prompt_ids = list(prompt)
        elif isinstance(prompt, list) and len(prompt) > 1:
            raise RequestError("only one prompt per request is supported", "prompt")
        elif not isinstance(prompt, str) or not prompt:
            raise RequestError("'prompt' must be a non-empty string (or a list of token ids)", "prompt")
        else:
            parsed.prompt = prompt
    return parsed


def _messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object", "messages")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}", "messages")
        content = message.get("content")
        if isinstance(content, list):
            # Text parts only: this server has no vision or audio.
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise RequestError(f"messages[{i}].content parts must be text parts", "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string", "messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


@dataclass(frozen=True)
class ModelDefaults:
    """What a request gets when it does not say: stop strings and a system prompt (Ollama's)."""

    stop: tuple[str, ...] = ()
    system: str | None = None


def with_defaults(parsed: ParsedRequest, defaults: ModelDefaults) -> ParsedRequest:
    """The model's own defaults (an Ollama model's stop strings and system prompt) where the request
    did not say: its stop strings join the request's, its system prompt opens a chat that has none."""
    if defaults.stop:
        parsed.params.stop = list(dict.fromkeys([*parsed.params.stop, *defaults.stop]))
    if defaults.system and parsed.messages is not None and not any(m["role"] == "system" for m in parsed.messages):
        parsed.messages = [{"role": "system", "content": defaults.system}, *parsed.messages]
    return parsed
