"""Requests for the structured-output tests: twenty varied JSON schemas with a prompt each, and two
tools. Kept apart from the tests so the benchmark (cluster bench --structured) asks the same."""

from __future__ import annotations

NAME = {"type": "string", "maxLength": 40}

SCHEMAS: list[tuple[str, dict]] = [
    ("Describe a person called Ada who is 36.",
     {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
      "required": ["name", "age"], "additionalProperties": False}),
    ("What colour is the sky?",
     {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue", "grey"]}}, "required": ["color"]}),
    ("List some fruits.",
     {"type": "object", "properties": {"fruits": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}},
      "required": ["fruits"]}),
    ("Give the address of a bakery in Paris.",
     {"type": "object", "properties": {"address": {
         "type": "object", "properties": {"street": NAME, "city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
         "required": ["street", "city", "zip"], "additionalProperties": False}}, "required": ["address"]}),
    ("What is the temperature in Oslo today?",
     {"type": "object", "properties": {"celsius": {"type": "number", "minimum": -50, "maximum": 60}},
      "required": ["celsius"]}),
    ("Is water wet?",
     {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"],
      "additionalProperties": False}),
    ("Write a shopping list.",
     {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
         "type": "object", "properties": {"item": NAME, "quantity": {"type": "integer", "minimum": 1, "maximum": 20}},
         "required": ["item", "quantity"], "additionalProperties": False}}}, "required": ["items"]}),
    ("Suggest a title for a blog post about tea.",
     {"type": "object", "properties": {"title": NAME, "tags": {"type": "array", "items": NAME, "maxItems": 2}},
      "required": ["title"], "additionalProperties": False}),
    ("Rate the film Casablanca.",
     {"type": "object", "properties": {"rating": {"enum": [1, 2, 3, 4, 5]}}, "required": ["rating"]}),
    ("Tell me about a famous novel.",
     {"type": "object", "properties": {"book": {
         "type": "object", "properties": {"title": NAME, "author": {
             "type": "object", "properties": {"name": NAME, "born": {"type": "integer", "minimum": 1000, "maximum": 2025}},
             "required": ["name", "born"], "additionalProperties": False}},
         "required": ["title", "author"], "additionalProperties": False}}, "required": ["book"]}),
    ("Summarise the plot of Hamlet.",
     {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 60}}, "required": ["summary"]}),
    ("Name a fruit.",
     {"type": "object", "properties": {"kind": {"const": "fruit"}, "name": NAME}, "required": ["kind", "name"],
      "additionalProperties": False}),
    ("How many legs does a spider have?",
     {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 100}, NAME]}},
      "required": ["value"]}),
    ("Give me some lucky numbers.",
     {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 99}, "minItems": 2, "maxItems": 5}),
    ("What is the middle name of Isaac Newton?",
     {"type": "object", "properties": {"first": NAME, "middle": {"anyOf": [NAME, {"type": "null"}]}},
      "required": ["first", "middle"], "additionalProperties": False}),
    ("Where is the centre of a unit square?",
     {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1},
                                       "y": {"type": "number", "minimum": 0, "maximum": 1}},
      "required": ["x", "y"], "additionalProperties": False}),
    ("How do I boil an egg?",
     {"type": "object", "properties": {"steps": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 4},
                                       "done": {"type": "boolean"}}, "required": ["steps", "done"]}),
    ("How much does a coffee cost?",
     {"type": "object", "properties": {"price": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                                       "currency": {"enum": ["EUR", "USD", "GBP"]}},
      "required": ["price", "currency"], "additionalProperties": False}),
    ("What is the capital of Italy?",
     {"type": "object", "properties": {"country": {"enum": ["France", "Italy", "Spain"]}, "capital": NAME},
      "required": ["country", "capital"], "additionalProperties": False}),
    ("Write a 2 by 2 matrix.",
     {"type": "object", "properties": {"matrix": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
         "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": -9, "maximum": 9}}}},
      "required": ["matrix"], "additionalProperties": False}),
]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": NAME, "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Adds two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                                        "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                       "required": ["a", "b"], "additionalProperties": False}}},
]

TOOL_PROMPTS = ["What is the weather in Lisbon?", "What is 17 plus 25?", "Is it raining in Tokyo right now?",
                "Add 3 and 4 for me."]


def response_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
