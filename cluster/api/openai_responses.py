"""OpenAI response bodies built from the engine's events: completions, chunks, logprobs."""

from __future__ import annotations

from typing import Callable, Sequence

from cluster.api.openai_shapes import new_id, now, usage
from cluster.api.tool_calls import ToolCallStream, parse_tool_calls
from cluster.pipeline.engine import TokenStep


class ResponseShaper:
    """One request's response pieces; `chat` picks chat/completions or completions shapes."""

    def __init__(self, *, chat: bool, model: str, decode: Callable[[Sequence[int]], str], want_logprobs: bool,
                 tool_format: str | None = None):
        self.chat = chat
        self.tool_format = tool_format  # tools were offered: calls are parsed out of the text in this format
        self._calls = ToolCallStream(tool_format) if tool_format else None
        self._called = 0
        self.model = model
        self.decode = decode
        self.want_logprobs = want_logprobs
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self._text_offset = 0

    def logprobs(self, tokens: list[TokenStep]) -> dict | None:
        if not self.want_logprobs:
            return None
        decode = self.decode
        if self.chat:
            return {"content": [
                {"token": (piece := decode([t.token_id])), "logprob": t.logprob, "bytes": list(piece.encode()),
                 "top_logprobs": [{"token": (alt := decode([i])), "logprob": lp, "bytes": list(alt.encode())}
                                  for i, lp in t.top]}
                for t in tokens]}
        pieces = [decode([t.token_id]) for t in tokens]
        offsets = []
        for piece in pieces:
            offsets.append(self._text_offset)
            self._text_offset += len(piece)
        return {"tokens": pieces,
                "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{decode([i]): lp for i, lp in t.top} for t in tokens],
                "text_offset": offsets}

    def complete(self, text: str, tokens: list[TokenStep], reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
        choice: dict = {"index": 0, "finish_reason": reason, "logprobs": self.logprobs(tokens)}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
            if self.tool_format:
                content, calls = parse_tool_calls(text, self.tool_format)
                if calls:
                    choice["message"] = {"role": "assistant", "content": content or None,
                                         "tool_calls": [call.to_openai() for call in calls]}
                    choice["finish_reason"] = "tool_calls" if reason == "stop" else reason
        else:
            choice["text"] = text
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created, "model": self.model, "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def _chunk(self, choices: list, **extra) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices, **extra}

    def first_chunk(self) -> dict | None:
        """Chat streams open with the assistant's role; completions have no such chunk."""
        if not self.chat:
            return None
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])

    def delta_chunk(self, text: str, tokens: list[TokenStep]) -> dict:
        piece: dict = {"index": 0, "finish_reason": None, "logprobs": self.logprobs(tokens)}
        if self.chat:
            piece["delta"] = {"content": text}
        else:
            piece["text"] = text
        return self._chunk([piece])

    def delta_chunks(self, text: str, tokens: list[TokenStep]) -> list[dict]:
        """A text delta's chunks: itself, or with tools offered, its content and any calls completed."""
        if self._calls is None:
            return [self.delta_chunk(text, tokens)]
        return self._tool_chunks(self._calls.feed(text), tokens)

    def _tool_chunks(self, events: list, tokens: list[TokenStep]) -> list[dict]:
        chunks = []
        for kind, value in events:
            if kind == "content":
                if value:
                    chunks.append(self.delta_chunk(value, tokens))
                    tokens = []
            else:
                chunks.append(self._chunk([{"index": 0, "finish_reason": None, "logprobs": None,
                                            "delta": {"tool_calls": [value.to_openai(self._called)]}}]))
                self._called += 1
        return chunks

    def final_chunks(self, reason: str) -> list[dict]:
        """What is held back (text that might have begun a call), then the finish chunk."""
        chunks = self._tool_chunks(self._calls.finish(), []) if self._calls is not None else []
        if self._called and reason == "stop":
            reason = "tool_calls"
        return [*chunks, self.finish_chunk(reason)]

    def finish_chunk(self, reason: str) -> dict:
        last: dict = {"index": 0, "finish_reason": reason, "logprobs": None}
        if self.chat:
            last["delta"] = {}
        else:
            last["text"] = ""
        return self._chunk([last])

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        return self._chunk([], usage=usage(prompt_tokens, completion_tokens))
