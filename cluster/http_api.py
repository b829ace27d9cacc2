"""The coordinator's HTTP API, in OpenAI's shapes: chat/completions and completions
(streaming and not), models, health."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from cluster.engine import Engine, Finish, TextDelta, TokenStep
from cluster.openai_shapes import ParsedRequest, RequestError, error_body, new_id, now, parse_request, usage
from cluster.pipeline_client import PipelineError

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 512


def _error(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None) -> web.Response:
    return web.json_response(error_body(message, kind=kind, param=param), status=status)


class OpenAIServer:
    def __init__(self, engine: Engine, model_name: str, context_length: int | None):
        self.engine = engine
        self.model_name = model_name
        self.context_length = context_length
        self.created = now()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.model_name})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created, "owned_by": "boltpipe"}]}
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=False)

    async def _handle(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not valid JSON")
        try:
            parsed = parse_request(body, chat=chat, default_max_tokens=DEFAULT_MAX_TOKENS)
            if parsed.model and parsed.model != self.model_name:
                return _error(404, f"the model {parsed.model!r} does not exist; this server serves {self.model_name!r}",
                              param="model")
            tokenizer = self.engine.tokenizer
            if chat:
                prompt_ids = tokenizer.encode_chat(parsed.messages) if tokenizer.has_chat_template else tokenizer.encode_text(
                    "\n".join(m["content"] for m in parsed.messages))
            else:
                prompt_ids = tokenizer.encode_text(parsed.prompt)
            if self.context_length and len(prompt_ids) + 1 > self.context_length:
                raise RequestError(
                    f"the prompt has {len(prompt_ids)} tokens; this model's context is {self.context_length}",
                    "messages" if chat else "prompt", code="context_length_exceeded")
            parsed.params.max_tokens = min(parsed.params.max_tokens, max(1, (self.context_length or 1 << 30) - len(prompt_ids)))
        except RequestError as exc:
            return _error(exc.status, str(exc), param=exc.param)
        if parsed.stream:
            return await self._stream(request, parsed, prompt_ids, chat)
        return await self._complete(parsed, prompt_ids, chat)

    def _logprobs(self, tokens: list[TokenStep], chat: bool) -> dict:
        decode = self.engine.tokenizer.decode
        if chat:
            return {"content": [
                {"token": decode([t.token_id]), "logprob": t.logprob,
                 "top_logprobs": [{"token": decode([i]), "logprob": lp} for i, lp in t.top]}
                for t in tokens]}
        return {"tokens": [decode([t.token_id]) for t in tokens],
                "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{decode([i]): lp for i, lp in t.top} for t in tokens]}

    async def _complete(self, parsed: ParsedRequest, prompt_ids: list[int], chat: bool) -> web.Response:
        text, tokens, finish = [], [], None
        try:
            async for event in self.engine.text(prompt_ids, parsed.params):
                if isinstance(event, TextDelta):
                    text.append(event.text)
                    tokens.extend(event.tokens)
                elif isinstance(event, Finish):
                    finish = event
        except PipelineError as exc:
            return _error(503, f"generation failed: {exc}", kind="server_error")
        assert finish is not None
        content = "".join(text)
        choice: dict = {"index": 0, "finish_reason": finish.reason,
                        "logprobs": self._logprobs(tokens, chat) if parsed.want_logprobs else None}
        if chat:
            choice["message"] = {"role": "assistant", "content": content}
        else:
            choice["text"] = content
        return web.json_response({
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion" if chat else "text_completion",
            "created": now(), "model": self.model_name, "choices": [choice],
            "usage": usage(finish.prompt_tokens, finish.completion_tokens),
        })

    async def _stream(self, request: web.Request, parsed: ParsedRequest, prompt_ids: list[int], chat: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def send(payload: dict) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        def chunk(choices: list, **extra) -> dict:
            return {"id": ident, "object": kind, "created": created, "model": self.model_name, "choices": choices, **extra}

        if chat:
            await send(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        try:
            async for event in self.engine.text(prompt_ids, parsed.params):
                if isinstance(event, TextDelta):
                    piece: dict = {"index": 0, "finish_reason": None,
                                   "logprobs": self._logprobs(event.tokens, chat) if parsed.want_logprobs else None}
                    if chat:
                        piece["delta"] = {"content": event.text}
                    else:
                        piece["text"] = event.text
                    await send(chunk([piece]))
                elif isinstance(event, Finish):
                    last: dict = {"index": 0, "finish_reason": event.reason, "logprobs": None}
                    if chat:
                        last["delta"] = {}
                    else:
                        last["text"] = ""
                    await send(chunk([last]))
                    if parsed.include_usage:
                        await send(chunk([], usage=usage(event.prompt_tokens, event.completion_tokens)))
        except PipelineError as exc:
            await send(error_body(f"generation failed: {exc}", kind="server_error"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
