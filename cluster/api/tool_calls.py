"""Tool calls in a model's generated text, as OpenAI `tool_calls`.

Models print their calls in the format their chat template taught them:
- "hermes" (Qwen 2.5/3, Hermes, SmolLM3...): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
  blocks, any number, with text around them;
- "generic": boltpipe's own scheme for templates that know nothing of tools; the same blocks;
- "llama3" (Llama 3.1/3.2/3.3): the whole answer is `{"name": ..., "parameters": {...}}`, optionally
  after `<|python_tag|>`, several of them separated by `;` or newlines;
- "mistral": `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (older models), or
  `[TOOL_CALLS]name[ARGS]{...}` repeated (Mistral Small 3.2, Devstral), after optional text;
- "harmony" (OpenAI gpt-oss): a sequence of messages
  `[<|start|>assistant[ to=functions.NAME]]<|channel|>CHANNEL[ to=functions.NAME][ <|constrain|>json]<|message|>BODY`,
  each ending at `<|end|>`, `<|call|>`, `<|return|>` or the end of the text. A message addressed to
  `functions.NAME` is a call whose arguments are its BODY (a JSON object); the answer is the BODY of the
  `final` channel messages; `analysis` and other bodies are dropped, and so is a call whose BODY is not a
  JSON object. Text outside any message is content (a model that skipped the format).

`parse_tool_calls` reads a finished answer; `ToolCallStream` reads one while it streams, passing text
through at once unless it may be the start of a call. Both are driven by the same per-format scanner,
so they cannot disagree: a scanner looks at the text not yet decided and either decides how much of
its beginning is content or a call, or (mid-stream only) asks for more text. Text that looks like a
call but does not hold one (bad JSON, a name that is not a string, arguments that are not an object)
stays content (harmony: is dropped with the rest of its message).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

FORMATS = ("hermes", "llama3", "mistral", "generic", "harmony")

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_CALLS, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
HARMONY_START, HARMONY_CHANNEL, HARMONY_CONSTRAIN, HARMONY_MESSAGE = (
    "<|start|>", "<|channel|>", "<|constrain|>", "<|message|>")
HARMONY_ENDS = ("<|end|>", "<|call|>", "<|return|>")
HARMONY_MARKERS = (HARMONY_START, HARMONY_CHANNEL, HARMONY_CONSTRAIN, HARMONY_MESSAGE, *HARMONY_ENDS)
HARMONY_FUNCTIONS = "functions."
_HARMONY_LONGEST = max(len(marker) for marker in HARMONY_MARKERS)

WHITESPACE = " \t\r\n"
# A function name (OpenAI allows letters, digits, "_" and "-"; some tools use dots) and a Mistral call id.
_NAME = re.compile(r"[\w.\-]+")
_CALL_ID = re.compile(r"[\w\-]+")
# Llama 3.1's template spells out the call it wants: {"name": function name, "parameters": ...}.
_PARAMETERS_STYLE = re.compile(r'\\?"parameters\\?"\s*:')
# A harmony header's channel (`<|channel|>analysis`) and recipient (`to=functions.get_weather`).
_HARMONY_CHANNEL_NAME = re.compile(r"<\|channel\|>\s*([^\s<]*)")
_HARMONY_RECIPIENT = re.compile(r"(?<!\w)to=([^\s<]+)")


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object as text, as OpenAI sends it
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def to_openai(self, index: int | None = None) -> dict:
        """The call as an entry of `tool_calls`; streaming deltas also carry its `index`."""
        call = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return call if index is None else {"index": index, **call}


def detect_format(chat_template: str | None) -> str:
    """Which tool-call format a model's chat template uses: "harmony" when the template mentions
    <|channel|> (gpt-oss; checked first, as its templates mention other formats' words too), "hermes" when
    it mentions <tool_call> (Qwen 2.5/3, Hermes, SmolLM3...), "mistral" when it mentions [TOOL_CALLS], "llama3" when
    it mentions <|python_tag|> or ipython or the Llama 3.1 'parameters' JSON style, else "generic" (a
    template that knows nothing of tools: boltpipe's own scheme)."""
    template = chat_template or ""
    if HARMONY_CHANNEL in template:
        return "harmony"
    if HERMES_OPEN in template:
        return "hermes"
    if MISTRAL_CALLS in template:
        return "mistral"
    if PYTHON_TAG in template or "ipython" in template or _PARAMETERS_STYLE.search(template):
        return "llama3"
    return "generic"


def parse_tool_calls(text: str, fmt: str) -> tuple[str, list[ToolCall]]:
    """(content left after removing the calls, stripped; the calls found). Malformed call text stays in
    the content and yields no call."""
    content, calls = [], []
    for kind, value in _drain(_scanner(fmt), text, final=True)[0]:
        (content if kind == "content" else calls).append(value)
    return "".join(content).strip(), calls


class ToolCallStream:
    """Incremental: feed(text_delta) -> list of events; finish() -> list of events. Events are
    ("content", str) or ("call", ToolCall). Content is passed through as soon as it cannot be the start
    of a call marker; text that might begin a call is held back until it is decided. A complete call is
    emitted as soon as its closing is seen (hermes/generic: </tool_call>; mistral: the closing of the JSON
    list or, for the newer [TOOL_CALLS]name[ARGS]{...} form, the end of the JSON object; llama3: when the
    JSON object closes; harmony: at the end of its message, `<|end|>`, `<|call|>`, the next message or
    finish(); the final channel's text is passed through as it arrives). At finish() anything held back that is not a complete call is emitted as
    content. Concatenating all content events and all calls equals parse_tool_calls on the whole text
    (content compared after strip)."""

    def __init__(self, fmt: str):
        self._scanner = _scanner(fmt)
        self._pending = ""  # text received but not decided yet
        self._finished = False

    def feed(self, text_delta: str) -> list[tuple[str, str | ToolCall]]:
        if self._finished:
            raise RuntimeError("ToolCallStream.feed after finish()")
        events, self._pending = _drain(self._scanner, self._pending + text_delta, final=False)
        return events

    def finish(self) -> list[tuple[str, str | ToolCall]]:
        if self._finished:
            return []
        self._finished = True
        events, self._pending = _drain(self._scanner, self._pending, final=True)
        return events


# A scanner's decision about the beginning of the undecided text: ("content", n, []) or ("calls", n,
# calls) for its first n characters (n > 0; calls may be empty for separators that are dropped), or
# None: "cannot tell yet", only when more text may come (final=False).
Decision = tuple[str, int, list[ToolCall]] | None


def _drain(scanner: "_Scanner", text: str, *, final: bool) -> tuple[list[tuple[str, str | ToolCall]], str]:
    """Decide as much of `text` as the scanner can: (the events, the undecided rest)."""
    events: list[tuple[str, str | ToolCall]] = []
    while text:
        decision = scanner.step(text, final)
        if decision is None:
            break
        kind, n, calls = decision
        scanner.decided()
        if kind == "content":
            if events and events[-1][0] == "content":  # one event per run of text
                events[-1] = ("content", events[-1][1] + text[:n])
            else:
                events.append(("content", text[:n]))
        else:
            events.extend(("call", call) for call in calls)
        text = text[n:]
    return events, text


def _scanner(fmt: str) -> "_Scanner":
    if fmt in ("hermes", "generic"):
        return _HermesScanner()
    if fmt == "llama3":
        return _Llama3Scanner()
    if fmt == "mistral":
        return _MistralScanner()
    if fmt == "harmony":
        return _HarmonyScanner()
    raise ValueError(f"unknown tool-call format {fmt!r} (one of {', '.join(FORMATS)})")


class _Scanner:
    def step(self, text: str, final: bool) -> Decision:
        raise NotImplementedError

    def decided(self) -> None:
        """The text the scanner looked at has moved on (a decision was taken)."""


class _HermesScanner(_Scanner):
    """`<tool_call>` ... `</tool_call>` blocks anywhere in the text."""

    def step(self, text: str, final: bool) -> Decision:
        start = text.find(HERMES_OPEN)
        if start != 0:
            return _content_before(text, start, HERMES_OPEN, final)
        end = text.find(HERMES_CLOSE, len(HERMES_OPEN))
        if end == -1:
            # Never closed: a call cut off (max_tokens), or text that merely mentions the tag.
            return ("content", len(text), []) if final else None
        end += len(HERMES_CLOSE)
        call = _call_from_json(text[len(HERMES_OPEN):end - len(HERMES_CLOSE)])
        return ("calls", end, [call]) if call else ("content", end, [])


class _Llama3Scanner(_Scanner):
    """JSON calls making up the whole answer; the first thing that is not a call ends them, and it and
    everything after it is content."""

    def __init__(self):
        self._state = "start"  # "start" -> "calls" -> ("content" once something is not a call)
        self._first = True     # the first call may follow <|python_tag|>
        self._json = _JsonEnd()

    def decided(self) -> None:
        self._json.reset()

    def step(self, text: str, final: bool) -> Decision:
        if self._state == "content":
            return "content", len(text), []
        if self._state == "start":
            return self._start(text, final)
        return self._call(text, final)

    def _start(self, text: str, final: bool) -> Decision:
        """Leading whitespace, then a call begins with `{` or <|python_tag|>, or the answer is text."""
        ws = _skip(text, 0, WHITESPACE)
        rest = text[ws:]
        if not rest or (PYTHON_TAG.startswith(rest) and rest != PYTHON_TAG):
            if not final:
                return None  # whitespace or part of the tag so far
        elif rest.startswith(("{", PYTHON_TAG)):
            self._state = "calls"
            return ("content", ws, []) if ws else self._call(text, final)
        self._state = "content"
        return "content", len(text), []

    def _call(self, text: str, final: bool) -> Decision:
        at = _skip(text, 0, WHITESPACE + ";")
        if self._first and text.startswith(PYTHON_TAG, at):
            at = _skip(text, at + len(PYTHON_TAG), WHITESPACE)
        if at == len(text):
            if not final:
                return None
            # Separators after the last call are dropped; a bare tag is text.
            return ("content", len(text), []) if self._first else ("calls", len(text), [])
        end = self._json.end(text, at) if text[at] == "{" else None
        if end is None and text[at] == "{" and not final:
            return None  # the object has not closed yet
        call = _call_from_json(text[at:end], require_arguments=True) if end else None
        if call is None:
            self._state = "content"
            return "content", len(text), []
        self._first = False
        return "calls", end, [call]


class _MistralScanner(_Scanner):
    """`[TOOL_CALLS]` then a JSON list of calls, or `name[ARGS]{...}` (with an optional `[CALL_ID]id`)."""

    def __init__(self):
        self._json = _JsonEnd()

    def decided(self) -> None:
        self._json.reset()

    def step(self, text: str, final: bool) -> Decision:
        start = text.find(MISTRAL_CALLS)
        if start != 0:
            return _content_before(text, start, MISTRAL_CALLS, final)
        at = _skip(text, len(MISTRAL_CALLS), WHITESPACE)
        if at == len(text):
            return ("content", len(text), []) if final else None
        if text[at] == "[":
            return self._list(text, at, final)
        return self._named(text, at, final)

    def _list(self, text: str, at: int, final: bool) -> Decision:
        end = self._json.end(text, at)
        if end is None:
            return ("content", len(text), []) if final else None
        try:
            items = json.loads(text[at:end])
        except ValueError:
            return "content", end, []
        calls = [_call_from_object(item) for item in items] if isinstance(items, list) else []
        if not calls or None in calls:
            return "content", end, []
        for call, item in zip(calls, items):
            if isinstance(item.get("id"), str) and item["id"]:
                call.id = item["id"]  # the model's own id, which its later turns refer to
        return "calls", end, calls

    def _named(self, text: str, at: int, final: bool) -> Decision:
        not_a_call = ("content", len(MISTRAL_CALLS), [])  # the marker is text; look on after it
        name = _NAME.match(text, at)
        if name is None:
            return not_a_call
        at, call_id = name.end(), None
        if _literal(text, at, MISTRAL_CALL_ID) == "yes":
            at += len(MISTRAL_CALL_ID)
            found = _CALL_ID.match(text, at)
            if found is None or found.end() == len(text):
                return not_a_call if final or (found is None and at < len(text)) else None
            call_id, at = found.group(), found.end()
        args = _literal(text, at, MISTRAL_ARGS)
        if args != "yes":
            # Mid-stream the name (or id) may go on, or "[ARGS]" / "[CALL_ID]" may be arriving.
            arriving = args == "maybe" or (call_id is None and _literal(text, at, MISTRAL_CALL_ID) == "maybe")
            return None if arriving and not final else not_a_call
        at = _skip(text, at + len(MISTRAL_ARGS), WHITESPACE)
        if at == len(text):
            return ("content", len(text), []) if final else None
        if text[at] != "{":
            return not_a_call
        end = self._json.end(text, at)
        if end is None:
            return ("content", len(text), []) if final else None
        arguments = _json_object(text[at:end])
        if arguments is None:
            return "content", end, []
        call = ToolCall(name.group(), _dump(arguments))
        if call_id:
            call.id = call_id  # the model's own id, which its later turns refer to
        return "calls", end, [call]


class _HarmonyScanner(_Scanner):
    """gpt-oss harmony messages: each header (`<|start|>`, `<|channel|>` ... `<|message|>`) is dropped once
    read, and tells what its body is: the answer ("content", passed on as it comes), a call's arguments
    ("call", kept until the message ends) or anything else ("drop", dropped as it comes). A message ends
    at `<|end|>`, `<|call|>` or `<|return|>` (dropped), or where the next one begins without one."""

    def __init__(self):
        self._in: str | None = None  # None between messages, else the body being read: "content" / "call" / "drop"
        self._name = ""              # the function a "call" body holds the arguments of
        self._from = 0               # where to look on for a marker in the undecided text (a header, a call)

    def decided(self) -> None:
        self._from = 0

    def step(self, text: str, final: bool) -> Decision:
        if self._in is None:
            return self._between(text, final)
        if self._in == "call":
            return self._call(text, final)
        return self._body(text, final)

    def _between(self, text: str, final: bool) -> Decision:
        at, marker = _harmony_marker(text, 0, final)
        if at > 0:
            return "content", at, []  # outside any message: a model that skipped the format
        if marker is None:
            return None  # what may begin a marker, mid-stream
        if marker in HARMONY_ENDS:
            return "calls", len(marker), []  # a stray end of a message
        return self._header(text, final)

    def _header(self, text: str, final: bool) -> Decision:
        """A header from `<|start|>`, `<|channel|>` (or a stray `<|constrain|>` / `<|message|>`) at 0."""
        at = self._from
        while True:
            at, marker = _harmony_marker(text, at, final)
            if marker == HARMONY_MESSAGE:
                self._open(text[:at])
                return "calls", at + len(marker), []
            if marker in (HARMONY_CHANNEL, HARMONY_CONSTRAIN) or (marker == HARMONY_START and at == 0):
                at += len(marker)
            elif marker is not None:  # an end or another message before the body: a broken header
                return "calls", at, []
            elif final:  # cut off before its body
                return "calls", len(text), []
            else:
                self._from = at
                return None

    def _open(self, header: str) -> None:
        recipient = _HARMONY_RECIPIENT.search(header)
        channel = _HARMONY_CHANNEL_NAME.search(header)
        if recipient is not None:
            to = recipient.group(1)
            name = to[len(HARMONY_FUNCTIONS):] if to.startswith(HARMONY_FUNCTIONS) else ""
            self._in, self._name = ("call", name) if _NAME.fullmatch(name) else ("drop", "")
        else:  # a message with no channel at all is taken for the answer
            self._in = "content" if channel is None or channel.group(1) == "final" else "drop"

    def _body(self, text: str, final: bool) -> Decision:
        """The answer or a dropped body: decided as it comes, up to what may begin a marker."""
        at, marker = _harmony_marker(text, 0, final)
        if at > 0:
            return ("content" if self._in == "content" else "calls"), at, []
        if marker is None:
            return None
        self._in = None
        if marker in HARMONY_ENDS:
            return "calls", len(marker), []
        return self._between(text, final)  # the next message begins without an end to this one

    def _call(self, text: str, final: bool) -> Decision:
        """A call's arguments, up to the end of its message."""
        at, marker = _harmony_marker(text, self._from, final)
        if marker is None and not final:
            self._from = at
            return None
        self._in = None
        end = at + len(marker) if marker in HARMONY_ENDS else at
        if end == 0:  # the next message begins at once: no arguments, no call
            return self._between(text, final)
        arguments = _json_object(text[:at])
        return "calls", end, [] if arguments is None else [ToolCall(self._name, _dump(arguments))]


def _harmony_marker(text: str, start: int, final: bool) -> tuple[int, str | None]:
    """The first harmony marker at or after `start`: (where, which); mid-stream (where, None) for an end
    of the text that may begin one; else (len(text), None)."""
    at = text.find("<|", start)
    while at != -1:
        for marker in HARMONY_MARKERS:
            if text.startswith(marker, at):
                return at, marker
        if not final and len(text) - at < _HARMONY_LONGEST and any(
                marker.startswith(text[at:]) for marker in HARMONY_MARKERS):
            return at, None
        at = text.find("<|", at + 2)
    if not final and text.endswith("<") and len(text) - 1 >= start:
        return len(text) - 1, None
    return len(text), None


def _content_before(text: str, marker_at: int, marker: str, final: bool) -> Decision:
    """Content up to where a marker starts (`marker_at`, -1 when absent), holding back an end of the
    text that may be the first characters of the marker."""
    if marker_at > 0:
        return "content", marker_at, []
    n = len(text) if final else len(text) - _marker_prefix_at_end(text, marker)
    return ("content", n, []) if n else None


def _marker_prefix_at_end(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a proper beginning of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _literal(text: str, at: int, literal: str) -> str:
    """Whether `literal` is at `at`: "yes", "maybe" (the text ends in its beginning) or "no"."""
    if text.startswith(literal, at):
        return "yes"
    return "maybe" if literal.startswith(text[at:]) else "no"


def _skip(text: str, at: int, chars: str) -> int:
    while at < len(text) and text[at] in chars:
        at += 1
    return at


class _JsonEnd:
    """Where the JSON object or list opening at `start` closes (brackets counted outside strings).

    A stream asks again after every delta with the same start and a longer text, so the scan resumes
    where it stopped instead of going over a long call's arguments once per token."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._start, self._pos, self._depth, self._in_string, self._escaped = -1, 0, 0, False, False

    def end(self, text: str, start: int) -> int | None:
        if start != self._start:
            self.reset()
            self._start, self._pos = start, start
        depth, in_string, escaped = self._depth, self._in_string, self._escaped
        for i in range(self._pos, len(text)):
            c = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
        self._pos, self._depth, self._in_string, self._escaped = len(text), depth, in_string, escaped
        return None


def _call_from_json(text: str, *, require_arguments: bool = False) -> ToolCall | None:
    try:
        return _call_from_object(json.loads(text), require_arguments=require_arguments)
    except ValueError:
        return None


def _call_from_object(obj: object, *, require_arguments: bool = False) -> ToolCall | None:
    """{"name": str, "arguments" or "parameters": object or JSON text of one} as a call, else None.
    Missing arguments are {} inside call markers, but not for Llama 3, whose calls are bare JSON that
    could as well be an answer the user asked for."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    key = next((k for k in ("arguments", "parameters") if k in obj), None)
    if key is None:
        return None if require_arguments else ToolCall(obj["name"], "{}")
    arguments = obj[key]
    if isinstance(arguments, str):  # some models send the arguments the way OpenAI does: as JSON text
        arguments = _json_object(arguments)
    if not isinstance(arguments, dict):
        return None
    return ToolCall(obj["name"], _dump(arguments))


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _dump(arguments: dict) -> str:
    return json.dumps(arguments, ensure_ascii=False)
