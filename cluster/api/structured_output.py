"""`response_format` to a grammar the last stage enforces (node/grammar.py).

OpenAI's shapes: {"type": "text"}, {"type": "json_object"} (any JSON object) and
{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": bool}}. The schema is
enforced either way; `strict` decides what happens to a keyword llguidance does not implement (refused
with a 400 when strict, ignored otherwise) and whether objects are closed to properties they do not
list (strict: as OpenAI's strict mode, which requires `additionalProperties: false` everywhere). JSON comes out with one space after "," and ":" and no
other whitespace, which keeps a small model from wandering into endless blank lines.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance

from cluster.api.request_errors import RequestError

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_SCHEMA_BYTES = 128 * 1024


def json_options(*, strict: bool) -> dict:
    return {**JSON_LAYOUT, "lenient": not strict}


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others unless it says
    otherwise: OpenAI's strict mode, which requires `additionalProperties: false` on every object.
    (Left open, a small model goes on inventing properties until it runs out of tokens.)"""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: closed(sub) for name, sub in value.items()}  # a map of schemas, not a schema
        elif key in ("const", "enum", "default", "examples"):
            out[key] = value
        else:
            out[key] = closed(value)
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


def schema_grammar(schema: dict, *, strict: bool, param: str) -> str:
    """A JSON schema as an llguidance grammar; a schema llguidance cannot honour is the user's 400."""
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise RequestError(f"the schema is larger than {MAX_SCHEMA_BYTES} bytes", param)
    if strict:
        schema = closed(schema)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=json_options(strict=strict))
    except ValueError as exc:
        raise RequestError(f"the schema is not usable: {exc}", param) from exc
    check_grammar(grammar, param)
    return grammar


def check_grammar(grammar: str, param: str) -> None:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise RequestError(f"the schema cannot be enforced: {'; '.join(messages)}", param)


def response_format_grammar(value: Any) -> str | None:
    """The grammar a request's response_format asks for (None: free text)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise RequestError("'response_format' must be an object with a 'type'", "response_format")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return schema_grammar({"type": "object"}, strict=True, param="response_format")
    if kind != "json_schema":
        raise RequestError(f"response_format.type must be text, json_object or json_schema, got {kind!r}",
                           "response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise RequestError("response_format.json_schema must be an object with 'name' and 'schema'",
                           "response_format")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError("response_format.json_schema.name must be a non-empty string", "response_format")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise RequestError("response_format.json_schema.schema must be a JSON schema object", "response_format")
    strict = spec.get("strict", False)
    if not isinstance(strict, bool):
        raise RequestError("response_format.json_schema.strict must be a boolean", "response_format")
    return schema_grammar(schema or {"type": "object"}, strict=strict, param="response_format")
