"""Tool calling: `tools`, `tool_choice` and `parallel_tool_calls` of /v1/chat/completions.

Two ways to put tools before a model:
- its own chat template, when the template renders `tools` in a format we parse (Hermes / Qwen
  `<tool_call>`, Llama 3 JSON, Mistral `[TOOL_CALLS]`: cluster/api/tool_calls.py);
- otherwise the generic scheme (as llama.cpp's server does for templates that know nothing of
  tools, the demo's SmolLM2 among them): the tools are described in a system message and a grammar
  holds the answer to either text or `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
  calls naming one of the tools, with arguments valid for its schema.
With `tool_choice` "required" or a named function the answer must be calls (a grammar in every
format), so it always parses, even from a small model. "none" leaves the tools out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cluster.api.request_errors import RequestError
from cluster.api.structured_output import JSON_LAYOUT, check_grammar

# Text that is not a call: anything that does not open with "<" (where a call would start).
FREE_TEXT = r"/[^<](.|\n)*/"
MAX_TOOLS = 128


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict

    def to_openai(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                  "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: str               # "auto", "required" (a named function is "required" of one tool)
    parallel: bool

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]


def parse_tools(body: dict) -> ToolRequest | None:
    """The request's tools, or None when there are none to offer (no tools, or tool_choice none)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise RequestError("'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise RequestError("'tool_choice' needs 'tools'", "tool_choice")
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise RequestError(f"'tools' must be a list of at most {MAX_TOOLS} tools", "tools")
    parsed = tuple(_tool(i, tool) for i, tool in enumerate(tools))
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise RequestError("tool names must be unique", "tools")
    if choice is None or choice == "auto":
        return ToolRequest(parsed, "auto", parallel)
    if choice == "none":
        return None
    if choice == "required":
        return ToolRequest(parsed, "required", parallel)
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        chosen = [t for t in parsed if t.name == name]
        if not chosen:
            raise RequestError(f"tool_choice names {name!r}, which is not one of the tools ({', '.join(names)})",
                               "tool_choice")
        return ToolRequest(tuple(chosen), "required", False)
    raise RequestError("'tool_choice' must be 'none', 'auto', 'required' or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")


def _tool(i: int, tool: Any) -> Tool:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise RequestError(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}", "tools")
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise RequestError(f"{where}.function.name must be a string of 1 to 64 characters", "tools")
    description = function.get("description", "")
    if not isinstance(description, str):
        raise RequestError(f"{where}.function.description must be a string", "tools")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise RequestError(f"{where}.function.parameters must be a JSON schema object", "tools")
    return Tool(name, description, parameters)


def call_schema(request: ToolRequest, *, arguments_key: str = "arguments") -> dict:
    """One call to one of the tools: its name and arguments valid for that tool's schema."""
    options = [{"type": "object",
                "properties": {"name": {"const": tool.name}, arguments_key: tool.parameters},
                "required": ["name", arguments_key], "additionalProperties": False}
               for tool in request.tools]
    return {"anyOf": options, "x-guidance": {**JSON_LAYOUT, "lenient": True}}


def call_grammar(request: ToolRequest, fmt: str) -> str | None:
    """The grammar for the answer in format `fmt`; None where the model's own format goes unconstrained
    (tool_choice auto with a template that renders the tools)."""
    if request.choice == "auto" and fmt != "generic":
        return None
    if fmt not in ("hermes", "llama3", "mistral", "generic"):
        raise ValueError(f"no call grammar for the {fmt} format")
    if fmt == "llama3":
        call = f"%json {json.dumps(call_schema(request, arguments_key='parameters'))}"
        calls = f"call ((\";\" | \"\\n\") call)*" if request.parallel else "call"
        grammar = f"start: {calls}\ncall: {call}\n"
    elif fmt == "mistral":
        one = call_schema(request)
        listed = {"type": "array", "items": one, "minItems": 1, **({} if request.parallel else {"maxItems": 1}),
                  "x-guidance": one["x-guidance"]}
        grammar = f"start: \"[TOOL_CALLS]\" %json {json.dumps(listed)}\n"
    else:  # hermes and generic: tagged calls
        newline = "\"\\n\"" if fmt == "hermes" else ""
        calls = "call+" if request.parallel else "call"
        body = "calls" if request.choice == "required" else f"calls | TEXT\nTEXT: {FREE_TEXT}"
        grammar = (f"start: {body}\ncalls: {calls}\n"
                   f"call: \"<tool_call>\" {newline} %json {json.dumps(call_schema(request))} {newline} \"</tool_call>\" {newline}\n")
    check_grammar(grammar, "tools")
    return grammar


def generic_instructions(request: ToolRequest) -> str:
    """The system message that offers the tools to a model whose template knows nothing of them."""
    listed = json.dumps([{"name": t.name, "description": t.description, "parameters": t.parameters}
                         for t in request.tools], ensure_ascii=False)
    how = ("You must call a tool." if request.choice == "required"
           else "Call a tool when it helps; otherwise answer normally.")
    return (f"You have these tools:\n{listed}\n{how} To call a tool, answer with only\n"
            '<tool_call>{"name": "<tool name>", "arguments": {<the arguments as JSON>}}</tool_call>')


def generic_messages(messages: list[dict], request: ToolRequest | None) -> list[dict]:
    """Messages for the generic scheme: the tools' description joins the system message, earlier
    calls are written back as the tagged text the model produced, tool results become messages of
    the template's `tool` role (cluster/api/http_api.py falls back to `user` for templates without one)."""
    out = []
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = "".join(f"<tool_call>{json.dumps({'name': c['function']['name'], 'arguments': c['function']['arguments']}, ensure_ascii=False)}</tool_call>"
                            for c in message["tool_calls"])
            out.append({"role": "assistant", "content": (message.get("content") or "") + calls})
        elif message["role"] == "tool":
            out.append({"role": "tool", "content": message["content"]})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    if request is not None:
        instructions = generic_instructions(request)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def tool_results_as_user(messages: list[dict]) -> list[dict]:
    """For a template that refuses a `tool` role: its results said by the user."""
    return [{"role": "user", "content": f"Tool result: {m['content']}"} if m["role"] == "tool" else m
            for m in messages]
