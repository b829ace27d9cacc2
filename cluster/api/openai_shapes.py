"""OpenAI request parsing and response shapes (chat/completions and completions)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cluster.api.request_errors import RequestError, error_body  # noqa: F401 (shared names)
from cluster.api.structured_output import response_format_grammar
from cluster.api.tools import ToolRequest, parse_tools
from cluster.pipeline.engine import DEFAULT_PENALTY_CONTEXT, GenerationParams

ROLES = ("system", "user", "assistant", "developer", "tool")




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
    tools: ToolRequest | None = None      # tools offered to the model (tool_choice none: None)


# Every parameter is honoured or refused, never dropped. These are OpenAI's that change nothing
# here (who is asking, what to store): accepted.
NO_EFFECT = {"user", "metadata", "store", "service_tier", "stream_options"}
COMMON = {"model", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
          "seed", "stop", "n", "presence_penalty", "frequency_penalty", "repetition_penalty",
          "repetition_context_size", "logit_bias", "logprobs", "top_logprobs", "speculation", "response_format"}
CHAT_ONLY = {"messages", "tools", "tool_choice", "parallel_tool_calls"}
COMPLETIONS_ONLY = {"prompt"}
# Behaviour this server does not have: refused unless they ask for the default.
UNSUPPORTED_UNLESS_DEFAULT = {"echo": False, "suffix": None, "best_of": 1, "functions": None, "function_call": None,
                              "modalities": ["text"], "audio": None, "prediction": None, "reasoning_effort": None,
                              "web_search_options": None}


def _refuse_unknown(body: dict, *, chat: bool) -> None:
    known = NO_EFFECT | COMMON | (CHAT_ONLY if chat else COMPLETIONS_ONLY)
    for key, value in body.items():
        if key in known:
            continue
        if key in UNSUPPORTED_UNLESS_DEFAULT:
            if value not in (UNSUPPORTED_UNLESS_DEFAULT[key], None, {}, []):
                raise RequestError(f"'{key}' is not supported by this server (got {value!r})", key)
            continue
        elsewhere = "chat/completions" if key in CHAT_ONLY else "completions" if key in COMPLETIONS_ONLY else None
        raise RequestError(f"unrecognized request argument supplied: {key!r}"
                           + (f" (it belongs to /v1/{elsewhere})" if elsewhere else ""), key)


def _logit_bias(body: dict, vocab_size: int) -> dict[int, float]:
    value = body.get("logit_bias")
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 1024:
        raise RequestError("'logit_bias' must map token ids to numbers (at most 1024 of them)", "logit_bias")
    bias = {}
    for key, number in value.items():
        try:
            token_id = int(key)
        except (TypeError, ValueError):
            raise RequestError(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
        if vocab_size and not 0 <= token_id < vocab_size:
            raise RequestError(f"logit_bias token ids must lie in [0, {vocab_size}), got {token_id}", "logit_bias")
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not -100 <= number <= 100:
            raise RequestError(f"logit_bias values must be numbers from -100 to 100, got {number!r}", "logit_bias")
        bias[token_id] = float(number)
    return bias


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


def parse_request(body: Any, *, chat: bool, default_max_tokens: int, vocab_size: int = 0) -> ParsedRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if _number(body, "n", 1, integer=True) != 1:
        raise RequestError("only n=1 is supported", "n")
    _refuse_unknown(body, chat=chat)
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
        min_p=float(_number(body, "min_p", 0.0, low=0, high=1)),
        presence_penalty=float(_number(body, "presence_penalty", 0.0, low=-2, high=2)),
        frequency_penalty=float(_number(body, "frequency_penalty", 0.0, low=-2, high=2)),
        repetition_penalty=float(_number(body, "repetition_penalty", 0.0, low=0, high=10)),
        penalty_context=int(_number(body, "repetition_context_size", DEFAULT_PENALTY_CONTEXT, low=1, high=4000,
                                    integer=True)),
        logit_bias=_logit_bias(body, vocab_size),
        grammar=response_format_grammar(body.get("response_format")),
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
        parsed.tools = parse_tools(body)
        if parsed.tools is not None and params.grammar is not None:
            raise RequestError("a request cannot offer tools and ask for a response_format at once "
                               "(tool_choice none leaves the tools out)", "response_format")
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
        calls = _tool_calls(i, message) if role == "assistant" else []
        content = message.get("content")
        if content is None and calls:
            content = ""  # an assistant turn that only called tools
        if isinstance(content, list):
            # Text parts only: this server has no vision or audio.
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise RequestError(f"messages[{i}].content parts must be text parts", "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string", "messages")
        entry: dict = {"role": "system" if role == "developer" else role, "content": content}
        if calls:
            entry["tool_calls"] = calls
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestError(f"messages[{i}].tool_call_id must name the call this result answers", "messages")
            entry["tool_call_id"] = call_id
        out.append(entry)
    return out


def _tool_calls(i: int, message: dict) -> list[dict]:
    """An assistant message's earlier calls, their arguments parsed (templates render them as objects)."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    where = f"messages[{i}].tool_calls"
    if not isinstance(calls, list):
        raise RequestError(f"{where} must be a list", "messages")
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError(f"{where}[{j}] must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}",
                               "messages")
        arguments = function.get("arguments", "{}")
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            raise RequestError(f"{where}[{j}].function.arguments must be a JSON object", "messages") from None
        if not isinstance(arguments, dict):
            raise RequestError(f"{where}[{j}].function.arguments must be a JSON object", "messages")
        out.append({"id": str(call.get("id", "")), "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
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
