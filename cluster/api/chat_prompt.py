"""A chat request's prompt: its messages (and tools) through the model's template, and the grammar
its tool choice needs. Which tool-call format the answer will be in is decided here too."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from cluster.api.openai_shapes import ParsedRequest
from cluster.api.request_errors import RequestError
from cluster.api.tool_calls import detect_format
from cluster.api.tools import call_grammar, generic_messages, tool_results_as_user
from cluster.pipeline.tokenizer import PromptTokenizer


# Formats whose calls cluster/api/tools.py call_grammar can hold an answer to.
CONSTRAINABLE = ("hermes", "llama3", "mistral", "generic")


@dataclass
class ChatPrompt:
    ids: list[int]
    tool_format: str | None  # the format to parse calls in (None: no tools were offered)


def chat_prompt(tokenizer: PromptTokenizer, parsed: ParsedRequest) -> ChatPrompt:
    """The prompt's token ids; sets the request's grammar when its tools need one."""
    messages, tools = parsed.messages, parsed.tools
    assert messages is not None
    if not tokenizer.has_chat_template:
        plain = generic_messages(messages, tools)
        text = "\n".join(f"{m['role']}: {m['content']}" if tools else m["content"] for m in plain)
        if tools is not None:
            parsed.params.grammar = call_grammar(tools, "generic")
        return ChatPrompt(tokenizer.encode_text(text), "generic" if tools else None)
    fmt = detect_format(tokenizer.chat_template)
    if tools is not None and tools.choice == "required" and fmt not in CONSTRAINABLE:
        # A format whose calls no grammar here writes (harmony's channels): a call that must come comes
        # in the generic scheme, which every model can be held to.
        fmt = "generic"
    history_has_tools = any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if fmt != "generic":  # the template renders tools and earlier calls itself
        offered = [t.to_openai() for t in tools.tools] if tools is not None else None
        ids = _encode(tokenizer, messages, offered)
    elif tools is not None or history_has_tools:
        ids = _encode(tokenizer, generic_messages(messages, tools), None)
    else:
        ids = _encode(tokenizer, messages, None)
    if tools is not None:
        parsed.params.grammar = call_grammar(tools, fmt)
    return ChatPrompt(ids, fmt if tools is not None else None)


def _encode(tokenizer: PromptTokenizer, messages: list[dict], tools: list[dict] | None) -> list[int]:
    try:
        return tokenizer.encode_chat(messages, tools)
    except TemplateError as exc:
        if not any(m["role"] == "tool" for m in messages):
            raise RequestError(f"the model's chat template refused these messages: {exc}", "messages") from exc
    try:  # a template without a `tool` role (many insist on user / assistant turns)
        return tokenizer.encode_chat(tool_results_as_user(messages), tools)
    except TemplateError as exc:
        raise RequestError(f"the model's chat template refused these messages: {exc}", "messages") from exc
