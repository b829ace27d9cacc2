"""The HTTP layer: OpenAI's chat/completions and completions over the engine, request parsing and
response shapes, admission control and API keys."""
