"""Tools into prompts and grammars (cluster/api/chat_prompt.py, tools.py) and request parsing of the
new parameters (openai_shapes.py), in this process with the demo's real tokenizer: the demo's
template knows nothing of tools, so they go in a system message under the generic scheme; a
Hermes-style template (Qwen's kind, put in the demo tokenizer's place) renders them itself and
earlier calls come back as its own `<tool_call>` blocks; every grammar accepts a well-formed call
and refuses text where a call is required."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.api.chat_prompt import chat_prompt
from cluster.api.openai_shapes import RequestError, parse_request
from cluster.api.tools import call_grammar, parse_tools
from cluster.pipeline.tokenizer import PromptTokenizer
from node.grammar import GrammarError, GrammarState, build_tokenizer
from tests.structured_cases import TOOLS

HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n{%- for tool in tools %}{{ tool | tojson }}\n{%- endfor %}"
    "</tools>\nFor each call return <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{%- for call in message.tool_calls %}<tool_call>\n{\"name\": \"{{ call.function.name }}\", \"arguments\": "
    "{{ call.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": json.dumps({"city": "Oslo", "unit": "celsius"})}}
HISTORY = [{"role": "user", "content": "Weather in Oslo?"},
           {"role": "assistant", "content": None, "tool_calls": [CALL]},
           {"role": "tool", "tool_call_id": "call_1", "content": "{\"celsius\": 4}"}]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> PromptTokenizer:
    return PromptTokenizer(smollm2_dir)


@pytest.fixture(scope="module")
def hermes(smollm2_dir: Path) -> PromptTokenizer:
    tok = PromptTokenizer(smollm2_dir)
    tok._hf.chat_template = HERMES_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def grammar_tokenizer(smollm2_dir: Path):
    return build_tokenizer(smollm2_dir, 49152)


def _parsed(**body):
    return parse_request({"messages": HISTORY[:1], **body}, chat=True, default_max_tokens=64, vocab_size=49152)


def _accepts(grammar_tokenizer, grammar: str, text: str) -> bool:
    try:
        GrammarState(grammar_tokenizer, grammar, grammar_tokenizer.tokenize_str(text))
        return True
    except GrammarError:
        return False


def test_generic_scheme_describes_the_tools_and_holds_the_answer_to_a_call(tokenizer, grammar_tokenizer) -> None:
    parsed = _parsed(tools=TOOLS, tool_choice="required")
    prompt = chat_prompt(tokenizer, parsed)
    text = tokenizer.decode(prompt.ids)
    assert prompt.tool_format == "generic"
    assert '"name": "get_weather"' in text and "<tool_call>" in text and text.count("<|im_start|>system") == 1
    good = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
    assert _accepts(grammar_tokenizer, parsed.params.grammar, good)
    assert not _accepts(grammar_tokenizer, parsed.params.grammar, "Hello")  # a call is required
    assert not _accepts(grammar_tokenizer, parsed.params.grammar,
                        '<tool_call>{"name": "add", "arguments": {"a": "two"')  # arguments follow the schema
    auto = _parsed(tools=TOOLS)
    chat_prompt(tokenizer, auto)
    assert _accepts(grammar_tokenizer, auto.params.grammar, "Hello there") and _accepts(
        grammar_tokenizer, auto.params.grammar, good)


def test_generic_history_writes_calls_back_as_the_model_wrote_them(tokenizer) -> None:
    parsed = parse_request({"messages": HISTORY, "tools": TOOLS}, chat=True, default_max_tokens=64)
    text = tokenizer.decode(chat_prompt(tokenizer, parsed).ids)
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}</tool_call>' in text
    assert '<|im_start|>tool\n{"celsius": 4}' in text


def test_a_hermes_template_renders_the_tools_itself(hermes, grammar_tokenizer) -> None:
    parsed = parse_request({"messages": HISTORY, "tools": TOOLS, "tool_choice": "required"}, chat=True,
                           default_max_tokens=64)
    prompt = chat_prompt(hermes, parsed)
    text = hermes.decode(prompt.ids)
    assert prompt.tool_format == "hermes"
    assert "<tools>" in text and '"name": "add"' in text and "You have these tools" not in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>' in text
    assert "<tool_response>" in text
    assert _accepts(grammar_tokenizer, parsed.params.grammar,
                    '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n')
    auto = parse_request({"messages": HISTORY[:1], "tools": TOOLS}, chat=True, default_max_tokens=64)
    chat_prompt(hermes, auto)
    assert auto.params.grammar is None  # auto with the model's own format: its own answer, parsed


def test_llama3_and_mistral_grammars_hold_their_formats(grammar_tokenizer) -> None:
    request = parse_tools({"tools": TOOLS, "tool_choice": "required"})
    llama = call_grammar(request, "llama3")
    assert _accepts(grammar_tokenizer, llama, '{"name": "add", "parameters": {"a": 1, "b": 2}}')
    assert not _accepts(grammar_tokenizer, llama, '{"name": "fly", "parameters": {}}')
    mistral = call_grammar(request, "mistral")
    assert _accepts(grammar_tokenizer, mistral, '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]')


@pytest.mark.parametrize("body, message", [
    ({"tools": "x"}, "'tools' must be a list"),
    ({"tools": [{"type": "function"}]}, "tools[0] must be"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "function.name must be a string"),
    ({"tools": TOOLS + TOOLS[:1]}, "tool names must be unique"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "'tool_choice' must be"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "'parallel_tool_calls' must be a boolean"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}}, "JSON schema object"),
    ({"response_format": "json"}, "must be an object with a 'type'"),
    ({"presence_penalty": 3}, "'presence_penalty' must be between -2 and 2"),
    ({"repetition_penalty": -1}, "'repetition_penalty' must be between 0 and 10"),
    ({"repetition_context_size": 0}, "'repetition_context_size' must be between 1 and 4000"),
    ({"logit_bias": {"a": 1}}, "logit_bias keys must be token ids"),
    ({"functions": [{"name": "f"}]}, "'functions' is not supported"),
    ({"messages": [{"role": "tool", "content": "4"}]}, "tool_call_id must name the call"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}]},
     "arguments must be a JSON object"),
])
def test_malformed_tools_and_parameters_are_refused_with_the_field(body: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_request({"messages": HISTORY[:1], **body}, chat=True, default_max_tokens=64, vocab_size=49152)


def test_parameters_reach_the_generation() -> None:
    parsed = _parsed(min_p=0.1, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.2,
                     repetition_context_size=64, logit_bias={"17": -100}, response_format={"type": "json_object"})
    params = parsed.params
    assert (params.min_p, params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (
        0.1, 0.5, -0.5, 1.2)
    assert params.penalty_context == 64 and params.logit_bias == {17: -100.0} and params.grammar
    wire = params.to_wire()
    assert dict(wire.logit_bias) == {17: -100.0} and abs(wire.min_p - 0.1) < 1e-6
