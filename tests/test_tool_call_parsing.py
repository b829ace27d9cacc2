"""Tool calls read from model output (cluster/api/tool_calls.py), whole and streamed.

The outputs below are written the way the models print them: Qwen 2.5 (hermes), Llama 3.1, Mistral v3
and the newer Mistral `name[ARGS]` form, gpt-oss (harmony, as generated after the prompt's
`<|start|>assistant`), plus the ways they go wrong.
"""

from __future__ import annotations

import json
import random

import pytest

from cluster.api.tool_calls import FORMATS, ToolCall, ToolCallStream, detect_format, parse_tool_calls

PARIS = ("get_weather", {"city": "Paris"})
PARIS_TIME = ("get_time", {"timezone": "Europe/Paris"})

# (format, model output, expected content, expected calls as (name, arguments))
CASES = [
    # Qwen 2.5 / Hermes
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', "", [PARIS]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
               '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>',
     "", [PARIS, PARIS_TIME]),
    ("hermes", "I'll look up the weather in Paris for you.\n\n"
               '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "I'll look up the weather in Paris for you.", [PARIS]),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>', "", [PARIS]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>', "", [PARIS]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "São Paulo"}}\n</tool_call>', "",
     [("get_weather", {"city": "São Paulo"})]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',  # a brace short
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>', []),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": "Paris"}\n</tool_call>\n'
               '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>',
     '<tool_call>\n{"name": "get_weather", "arguments": "Paris"}\n</tool_call>', [PARIS_TIME]),
    ("hermes", '<tool_call>\n{"name": ["get_weather"], "arguments": {}}\n</tool_call>',
     '<tool_call>\n{"name": ["get_weather"], "arguments": {}}\n</tool_call>', []),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # cut off by max_tokens
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', []),
    ("hermes", "The weather in Paris is sunny, 24 degrees.", "The weather in Paris is sunny, 24 degrees.", []),
    ("hermes", "Use x < y and <b>bold</b> [1, 2].", "Use x < y and <b>bold</b> [1, 2].", []),
    ("generic", 'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call> Done.',
     "Checking. Done.", [PARIS]),
    # Llama 3.1
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
    ("llama3", '\n\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n', "", [PARIS]),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}; '
               '{"name": "get_time", "parameters": {"timezone": "Europe/Paris"}}', "", [PARIS, PARIS_TIME]),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}\n'
               '{"name": "get_time", "parameters": {"timezone": "Europe/Paris"}}', "", [PARIS, PARIS_TIME]),
    ("llama3", '{"name": "search", "parameters": {"q": "a } in [braces] and \\"quotes}\\""}}', "",
     [("search", {"q": 'a } in [braces] and "quotes}"'})]),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}',  # a brace short
     '{"name": "get_weather", "parameters": {"city": "Paris"}', []),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}]',
     '{"name": "get_weather", "parameters": {"city": "Paris"}]', []),
    ("llama3", '{"answer": 42, "unit": "degrees"}', '{"answer": 42, "unit": "degrees"}', []),
    ("llama3", '{"name": "Alice"}', '{"name": "Alice"}', []),
    ("llama3", 'Sure! {"name": "get_weather", "parameters": {"city": "Paris"}}',
     'Sure! {"name": "get_weather", "parameters": {"city": "Paris"}}', []),
    ("llama3", "The weather in Paris is sunny, 24 degrees.", "The weather in Paris is sunny, 24 degrees.", []),
    ("llama3", '<|python_tag|>brave_search.call(query="Paris weather")',
     '<|python_tag|>brave_search.call(query="Paris weather")', []),
    # Mistral v3
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]', "", [PARIS]),
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                '{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}]', "", [PARIS, PARIS_TIME]),
    ("mistral", 'Let me check that for you. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
     "Let me check that for you.", [PARIS]),
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}]',  # a brace short
     '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}]', []),
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": 5}]',
     '[TOOL_CALLS] [{"name": "get_weather", "arguments": 5}]', []),
    # Mistral Small 3.2 / Devstral
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "", [PARIS]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"timezone": "Europe/Paris"}',
     "", [PARIS, PARIS_TIME]),
    ("mistral", 'Checking the forecast.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "Checking the forecast.",
     [PARIS]),
    ("mistral", '[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Paris"}', "", [PARIS]),
    ("mistral", '[TOOL_CALLS] [{"name": "search", "arguments": {"q": "]} ["}}]', "", [("search", {"q": "]} ["})]),
    ("mistral", '[TOOL_CALLS]search[ARGS]{"q": "} {\\"x\\": 1}"}', "", [("search", {"q": '} {"x": 1}'})]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": Paris}', '[TOOL_CALLS]get_weather[ARGS]{"city": Paris}', []),
    ("mistral", '[TOOL_CALLS]get_weather{"city": "Paris"}', '[TOOL_CALLS]get_weather{"city": "Paris"}', []),
    ("mistral", "The weather in Paris is sunny, 24 degrees.", "The weather in Paris is sunny, 24 degrees.", []),
    ("mistral", "Numbers [1, 2, 3] and [TOOLS] in brackets.", "Numbers [1, 2, 3] and [TOOLS] in brackets.", []),
    # gpt-oss (harmony)
    ("harmony", "<|channel|>analysis<|message|>The user wants the weather in Paris. I should call get_weather."
                "<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                '<|message|>{"city": "Paris"}', "", [PARIS]),
    ("harmony", "<|channel|>analysis<|message|>Weather and time in Paris: two calls.<|end|>"
                "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                '<|message|>{"city": "Paris"}<|call|>'
                "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json"
                '<|message|>{"timezone": "Europe/Paris"}<|call|>', "", [PARIS, PARIS_TIME]),
    ("harmony", "<|channel|>analysis<|message|>2 + 2 = 4. Simple.<|end|>"
                "<|start|>assistant<|channel|>final<|message|>The answer is 4.", "The answer is 4.", []),
    ("harmony", "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>"
                "The answer is 4.<|return|>", "The answer is 4.", []),
    ("harmony", "<|channel|>final<|message|>The weather in Paris is sunny, 24 degrees.",
     "The weather in Paris is sunny, 24 degrees.", []),
    ("harmony", "<|channel|>analysis<|message|>Need the weather.<|end|>"
                "<|start|>assistant to=functions.get_weather<|channel|>commentary json"
                '<|message|>{"city": "Paris"}<|call|>', "", [PARIS]),
    ("harmony", "<|channel|>commentary<|message|>Let me check the weather for you.<|end|>"
                "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                '<|message|>{"city": "São Paulo"}', "", [("get_weather", {"city": "São Paulo"})]),
    ("harmony", "<|channel|>analysis<|message|>Search it.<|end|><|start|>assistant<|channel|>commentary "
                'to=functions.search <|constrain|>json<|message|>{"q": "a <|b|> } and \\"quotes\\" <"}',
     "", [("search", {"q": 'a <|b|> } and "quotes" <'})]),
    ("harmony", "<|channel|>commentary to=functions.get_weather <|constrain|>json"
                '<|message|>{"city": Paris}<|call|>', "", []),  # malformed arguments
    ("harmony", "<|channel|>commentary to=functions.get_weather <|constrain|>json"
                '<|message|>["Paris"]<|call|>'
                "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json"
                '<|message|>{"timezone": "Europe/Paris"}<|call|>', "", [PARIS_TIME]),
    ("harmony", "<|channel|>commentary to=functions.get_weather <|constrain|>json"
                '<|message|>{"city": "Par', "", []),  # cut off by max_tokens
    ("harmony", "<|channel|>analysis<|message|>Let me think about the weather in", "", []),  # cut off
    ("harmony", '<|channel|>commentary to=browser.search <|constrain|>json<|message|>{"query": "Paris"}<|call|>',
     "", []),  # a built-in tool, not a function
    ("harmony", "<|channel|>analysis<|message|>Thinking.<|end|><|start|>assistant<|channel|>final<|message|>"
                "Use x < y and <b>bold</b>, <|not a marker|> [1, 2].", "Use x < y and <b>bold</b>, <|not a marker|> [1, 2].",
     []),
    ("harmony", "The weather in Paris is sunny, 24 degrees.", "The weather in Paris is sunny, 24 degrees.", []),
    ("harmony", "Sure. <|channel|>final<|message|>It is 4.", "Sure. It is 4.", []),
]
CASE_IDS = [f"{fmt}-{i}" for i, (fmt, *_) in enumerate(CASES)]


def pairs(calls: list[ToolCall]) -> list[tuple[str, dict]]:
    return [(call.name, json.loads(call.arguments)) for call in calls]


def run_stream(fmt: str, chunks: list[str]) -> tuple[str, list[ToolCall]]:
    stream = ToolCallStream(fmt)
    events = [event for chunk in chunks for event in stream.feed(chunk)] + stream.finish()
    assert all(kind in ("content", "call") for kind, _ in events)
    content = "".join(value for kind, value in events if kind == "content")
    return content, [value for kind, value in events if kind == "call"]


def random_chunks(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@pytest.mark.parametrize("fmt, text, content, calls", CASES, ids=CASE_IDS)
def test_parse_recorded_output(fmt, text, content, calls):
    got_content, got_calls = parse_tool_calls(text, fmt)
    assert got_content == content
    assert pairs(got_calls) == calls


@pytest.mark.parametrize("fmt, text, content, calls", CASES, ids=CASE_IDS)
def test_stream_assembles_to_parse(fmt, text, content, calls):
    whole_content, whole_calls = parse_tool_calls(text, fmt)
    rng = random.Random(20240611)
    splits = [[text], list(text)] + [random_chunks(text, rng) for _ in range(50)]
    for chunks in splits:
        got_content, got_calls = run_stream(fmt, chunks)
        assert got_content.strip() == whole_content == content, chunks
        assert pairs(got_calls) == pairs(whole_calls) == calls, chunks


def test_arguments_are_json_text_without_ascii_escapes():
    _, [call] = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"city": "Zürich", "n": [1, 2]}}</tool_call>',
                                 "hermes")
    assert call.arguments == '{"city": "Zürich", "n": [1, 2]}'


def test_hermes_call_without_arguments_has_empty_object():
    _, [call] = parse_tool_calls('<tool_call>{"name": "get_time"}</tool_call>', "hermes")
    assert (call.name, call.arguments) == ("get_time", "{}")


def test_mistral_keeps_the_models_call_ids():
    _, [call] = parse_tool_calls('[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Paris"}', "mistral")
    assert call.id == "a1B2c3D4e"
    _, [call] = parse_tool_calls('[TOOL_CALLS] [{"name": "f", "arguments": {}, "id": "Xy9Xy9Xy9"}]', "mistral")
    assert call.id == "Xy9Xy9Xy9"


def test_to_openai_shape():
    call = ToolCall("get_weather", '{"city": "Paris"}')
    assert call.id.startswith("call_") and len(call.id) == len("call_") + 24
    assert ToolCall("x", "{}").id != call.id
    assert call.to_openai() == {"id": call.id, "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert call.to_openai(index=1) == {"index": 1, **call.to_openai()}


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        parse_tool_calls("hello", "chatml")
    with pytest.raises(ValueError):
        ToolCallStream("chatml")


QWEN_TEMPLATE = ('{%- if tools %}{{- "# Tools\\n\\nYou may call one or more functions" }}{%- for tool in tools %}'
                 '{{- "\\n" }}{{- tool | tojson }}{%- endfor %}{{- "\\n</tools>\\n\\nFor each function call, return a '
                 'json object with function name and arguments within <tool_call></tool_call> XML tags:\\n'
                 '<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>'
                 '<|im_end|>\\n" }}{%- endif %}')
MISTRAL_TEMPLATE = ('{%- if message.tool_calls is defined %}{{- "[TOOL_CALLS] [" }}{%- for tool_call in '
                    'message.tool_calls %}{{- tool_call.function|tojson }}{%- endfor %}{{- "]" + eos_token }}')
MISTRAL_NEW_TEMPLATE = '{%- for tool in message.tool_calls %}{{- "[TOOL_CALLS]" + tool.name + "[ARGS]" }}{%- endfor %}'
LLAMA_IPYTHON = ('{%- if message.role == "ipython" or message.role == "tool" %}'
                 '{{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}{%- endif %}')
LLAMA_PYTHON_TAG = '{%- if builtin_tools is defined %}{{- "<|python_tag|>" + tool_call.name }}{%- endif %}'
LLAMA_PARAMETERS = ('{{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name '
                    'and its value}. Do not use variables.\\n\\n\' }}')
GPT_OSS_TEMPLATE = ('{%- if message.tool_calls %}{{- "<|start|>assistant to=" + "functions." + tool_call.name + '
                    '"<|channel|>commentary " + (tool_call.content_type if tool_call.content_type is defined else '
                    '"json") + "<|message|>" }}{{- tool_call.arguments|tojson }}{{- "<|call|>" }}{%- endif %}'
                    '{#- the tools namespace, written as TypeScript: "namespace functions {" ... "<tool_call>" #}'
                    '{%- if add_generation_prompt %}<|start|>assistant{%- endif %}')
CHATML_NO_TOOLS = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                   "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                   "{% endif %}")


@pytest.mark.parametrize("template, fmt", [
    (QWEN_TEMPLATE, "hermes"),
    (MISTRAL_TEMPLATE, "mistral"),
    (MISTRAL_NEW_TEMPLATE, "mistral"),
    (LLAMA_IPYTHON, "llama3"),
    (LLAMA_PYTHON_TAG, "llama3"),
    (LLAMA_PARAMETERS, "llama3"),
    (GPT_OSS_TEMPLATE, "harmony"),
    (CHATML_NO_TOOLS, "generic"),
    ("", "generic"),
    (None, "generic"),
])
def test_detect_format(template, fmt):
    assert detect_format(template) == fmt
    assert fmt in FORMATS


@pytest.mark.parametrize("fmt", FORMATS)
def test_plain_text_streams_through_at_once(fmt):
    stream = ToolCallStream(fmt)
    words = "The weather in Paris is sunny today, around 24 degrees.".split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        assert stream.feed(piece) == [("content", piece)]
    assert stream.finish() == []


@pytest.mark.parametrize("fmt, marker", [("hermes", "<tool_call>"), ("generic", "<tool_call>"),
                                         ("mistral", "[TOOL_CALLS]"), ("harmony", "<|channel|>")])
def test_a_possible_marker_is_held_back_until_decided(fmt, marker):
    stream = ToolCallStream(fmt)
    assert stream.feed("Sure " + marker[:4]) == [("content", "Sure ")]
    assert stream.feed(marker[4:-1]) == []
    assert stream.feed("!") == [("content", marker[:-1] + "!")]  # not the marker after all
    assert stream.feed(marker[:5]) == []
    assert stream.finish() == [("content", marker[:5])]


@pytest.mark.parametrize("fmt, call_text", [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
    ("harmony", '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'),
    ("harmony", '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|end|>'),
])
def test_a_call_is_emitted_when_it_closes(fmt, call_text):
    stream = ToolCallStream(fmt)
    assert stream.feed(call_text[:-1]) == []
    [(kind, call)] = stream.feed(call_text[-1])
    assert kind == "call" and (call.name, json.loads(call.arguments)) == PARIS
    assert stream.finish() == []


def test_llama3_parallel_calls_each_emitted_when_closed():
    stream = ToolCallStream("llama3")
    [(_, first)] = stream.feed('{"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert first.name == "get_weather"
    assert stream.feed('; {"name": "get_time", "parameters": ') == []
    [(_, second)] = stream.feed('{"timezone": "Europe/Paris"}}')
    assert (second.name, json.loads(second.arguments)) == PARIS_TIME
    assert stream.finish() == []


def test_feed_after_finish_is_an_error():
    stream = ToolCallStream("hermes")
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed("more")


def test_harmony_call_without_an_end_is_emitted_at_finish():
    # The server stops at <|call|> without printing it: the call's message ends with the text.
    stream = ToolCallStream("harmony")
    assert stream.feed("<|channel|>analysis<|message|>I'll call it.<|end|><|start|>assistant") == []
    assert stream.feed('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": ') == []
    assert stream.feed('"Paris"}') == []
    [(kind, call)] = stream.finish()
    assert kind == "call" and (call.name, json.loads(call.arguments)) == PARIS


def test_harmony_a_call_is_emitted_when_the_next_message_begins():
    stream = ToolCallStream("harmony")
    assert stream.feed('<|channel|>commentary to=functions.get_weather json<|message|>{"city": "Paris"}') == []
    [(kind, call), content] = stream.feed("<|start|>assistant<|channel|>final<|message|>Checking.")
    assert kind == "call" and (call.name, json.loads(call.arguments)) == PARIS
    assert content == ("content", "Checking.")
    assert stream.finish() == []


def test_harmony_final_answer_streams_as_it_arrives():
    stream = ToolCallStream("harmony")
    assert stream.feed("<|channel|>analysis<|message|>Two plus two") == []
    assert stream.feed(" is four.<|end|><|start|>assistant<|channel|>fin") == []
    assert stream.feed("al<|message|>The answer") == [("content", "The answer")]
    assert stream.feed(" is 4 <") == [("content", " is 4 ")]  # "<" may begin a marker
    assert stream.feed("5.") == [("content", "<5.")]
    assert stream.feed(" Done<|") == [("content", " Done")]
    assert stream.feed("ret") == []
    assert stream.feed("urn|>") == []
    assert stream.finish() == []
