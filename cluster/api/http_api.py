"""The coordinator's HTTP API, in OpenAI's shapes: chat/completions and completions
(streaming and not), models, health; with admission control, request deadlines and
cancellation when the client goes away."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cluster.api.admission import Admission, AdmissionRefused
from cluster.api.api_keys import key_accepted
from cluster.api.chat_prompt import ChatPrompt, chat_prompt
from cluster.api.cluster_view import ClusterView
from cluster.api.coordinator_metrics import CoordinatorMetrics, RequestTimer
from cluster.api.openai_responses import ResponseShaper
from cluster.api.web_page import add_page_routes
from cluster.api.openai_shapes import (ModelDefaults, ParsedRequest, RequestError, error_body, now, parse_request,
                                      with_defaults)
from cluster.pipeline.engine import Engine, Finish, TextDelta, TokenStep
from cluster.pipeline.pipeline_client import PipelineError

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 512


def error_response(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> web.Response:
    return web.json_response(error_body(message, kind=kind, param=param, code=code), status=status, headers=headers)


@web.middleware
async def openai_errors(request: web.Request, handler):
    """Every failure, routing ones included, leaves in OpenAI's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return error_response(exc.status, f"{request.method} {request.path}: {exc.reason}", kind=kind)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        return error_response(500, "internal server error; see the coordinator's log", kind="server_error")


def require_api_key(keys: list[str]):
    """OpenAI's Bearer keys on /v1/ (health and metrics stay open for probes and Prometheus)."""

    @web.middleware
    async def check(request: web.Request, handler):
        if keys and request.path.startswith("/v1/"):
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not presented.strip():
                return error_response(401, "You didn't provide an API key. You need to provide your API key in an "
                                      "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                                      code="invalid_api_key")
            if not key_accepted(presented.strip(), keys):
                shown = presented.strip()[:6] + "*" * 4
                return error_response(401, f"Incorrect API key provided: {shown}. The keys this server accepts are "
                                      "set in the inventory (serve.api_keys) or BOLTPIPE_API_KEYS.",
                                      code="invalid_api_key")
        return await handler(request)

    return check


@dataclass
class ServeLimits:
    context_length: int
    request_timeout_s: float = 600.0
    vanished_nodes: set[str] = field(default_factory=set)  # serving nodes no longer advertised by Bonjour
    api_keys: list[str] = field(default_factory=list)      # empty: no key needed


class OpenAIServer:
    def __init__(self, engine: Engine, model_name: str, admission: Admission, metrics: CoordinatorMetrics,
                 limits: ServeLimits, defaults: ModelDefaults | None = None, view: ClusterView | None = None):
        self.view = view  # the web page's view of the cluster (None: no page)
        self.engine = engine
        self.model_name = model_name
        self.admission = admission
        self.metrics = metrics
        self.limits = limits
        self.defaults = defaults or ModelDefaults()
        self.created = now()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024,
                              middlewares=[openai_errors, require_api_key(self.limits.api_keys)])
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        if self.view is not None:
            add_page_routes(app, self.view)
        return app

    @staticmethod
    def runner(app: web.Application) -> web.AppRunner:
        # handler_cancellation: a client that disconnects cancels its handler, which ends its session.
        return web.AppRunner(app, access_log=None, handler_cancellation=True)

    async def health(self, request: web.Request) -> web.Response:
        stats = self.admission.stats()
        vanished = sorted(self.limits.vanished_nodes)
        watch = self.engine.client.watch
        down = {watch.client.stages[i].name: why for i, why in sorted(watch.down.items())}
        body = {"status": "degraded" if vanished or down else "ok", "model": self.model_name, "running": stats.running,
                "waiting": stats.waiting, "max_running": stats.max_running}
        if vanished:
            body["nodes_vanished"] = vanished
        if down:
            body["nodes_down"] = down
        return web.json_response(body, status=503 if vanished or down else 200)

    async def prometheus(self, request: web.Request) -> web.Response:
        # Always the plain text format: prometheus_client's OpenMetrics output loses the colon of
        # `boltpipe:` sample names (client_python#1177), and Prometheus would then store them renamed.
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "boltpipe",
                "context_length": self.limits.context_length}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.model_name:
            return error_response(404, f"the model {request.match_info['model']!r} does not exist", param="model",
                                  kind="not_found_error", code="model_not_found")
        return web.json_response(self._model_card())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=False)

    def _prompt(self, parsed: ParsedRequest, chat: bool) -> ChatPrompt:
        tokenizer = self.engine.tokenizer
        if chat:
            return chat_prompt(tokenizer, parsed)
        if parsed.prompt_ids is not None:
            return ChatPrompt(parsed.prompt_ids, None)
        return ChatPrompt(tokenizer.encode_text(parsed.prompt), None)

    async def _handle(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.metrics.failed("invalid_request")
            return error_response(400, "the request body is not valid JSON")
        try:
            parsed = with_defaults(parse_request(body, chat=chat, default_max_tokens=DEFAULT_MAX_TOKENS,
                                                 vocab_size=self.engine.vocab_size), self.defaults)
            if parsed.model and parsed.model != self.model_name:
                self.metrics.failed("invalid_request")
                return error_response(404, f"the model {parsed.model!r} does not exist; this server serves "
                                      f"{self.model_name!r}", param="model", kind="not_found_error",
                                      code="model_not_found")
            prompt = self._prompt(parsed, chat)
            prompt_ids = prompt.ids
            if parsed.params.grammar is not None and self.engine.constraint_problem:
                raise RequestError("this request needs constrained decoding (response_format or tools), which the "
                                   f"cluster's last stage cannot do: {self.engine.constraint_problem}",
                                   "tools" if parsed.tools is not None else "response_format")
            vocab = self.engine.vocab_size
            if parsed.prompt_ids is not None and vocab and any(not 0 <= i < vocab for i in prompt_ids):
                raise RequestError(f"prompt token ids must lie in [0, {vocab})", "prompt")
            context = self.limits.context_length
            if not prompt_ids:
                raise RequestError("the prompt is empty after tokenization", "messages" if chat else "prompt")
            if len(prompt_ids) + 1 > context:
                raise RequestError(
                    f"this model's context is {context} tokens, but the prompt has {len(prompt_ids)} "
                    "(one more is needed to generate); shorten it",
                    "messages" if chat else "prompt", code="context_length_exceeded")
            parsed.params.max_tokens = min(parsed.params.max_tokens, context - len(prompt_ids))
        except RequestError as exc:
            self.metrics.failed("invalid_request")
            return error_response(exc.status, str(exc), param=exc.param, code=exc.code)
        timer = self.metrics.request(arrived, len(prompt_ids))
        try:
            async with self.admission.slot():
                timer.admitted()
                shaper = ResponseShaper(chat=chat, model=self.model_name, decode=self.engine.tokenizer.decode,
                                        want_logprobs=parsed.want_logprobs, tool_format=prompt.tool_format)
                if parsed.stream:
                    return await self._stream(request, parsed, prompt_ids, shaper, timer)
                return await self._complete(parsed, prompt_ids, shaper, timer)
        except AdmissionRefused as exc:
            timer.failed("rejected" if exc.status == 429 else "queue_timeout")
            return error_response(exc.status, str(exc), kind="server_overloaded" if exc.status == 503 else "rate_limit_exceeded",
                                  code="server_busy", headers={"Retry-After": str(exc.retry_after_s)})
        except (asyncio.CancelledError, ConnectionResetError):
            timer.finished("abort")  # the client left
            raise
        except Exception:
            timer.failed("internal")
            raise

    async def _complete(self, parsed: ParsedRequest, prompt_ids: list[int], shaper: ResponseShaper,
                        timer: RequestTimer) -> web.Response:
        text: list[str] = []
        tokens: list[TokenStep] = []
        finish: Finish | None = None
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                async for event in self.engine.text(prompt_ids, parsed.params, timer.token):
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                        tokens.extend(event.tokens)
                    else:
                        finish = event
        except TimeoutError:
            timer.failed("deadline")
            return error_response(504, f"the request ran past its deadline of {self.limits.request_timeout_s:g} s "
                                  "(serve.request_timeout_s)", kind="timeout_error", code="deadline_exceeded")
        except PipelineError as exc:
            timer.failed("pipeline_error")
            return error_response(503, f"generation failed: {exc}", kind="server_error")
        assert finish is not None
        timer.finished(finish.reason)
        return web.json_response(shaper.complete("".join(text), tokens, finish.reason, finish.prompt_tokens,
                                                 finish.completion_tokens))

    async def _stream(self, request: web.Request, parsed: ParsedRequest, prompt_ids: list[int],
                      shaper: ResponseShaper, timer: RequestTimer) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(payload: dict) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        try:
            if (first := shaper.first_chunk()) is not None:
                await send(first)
            async with asyncio.timeout(self.limits.request_timeout_s):
                async for event in self.engine.text(prompt_ids, parsed.params, timer.token):
                    if isinstance(event, TextDelta):
                        for chunk in shaper.delta_chunks(event.text, event.tokens):
                            await send(chunk)
                    else:
                        timer.finished(event.reason)
                        for chunk in shaper.final_chunks(event.reason):
                            await send(chunk)
                        if parsed.include_usage:
                            await send(shaper.usage_chunk(event.prompt_tokens, event.completion_tokens))
        except TimeoutError:
            timer.failed("deadline")
            await send(error_body(f"the request ran past its deadline of {self.limits.request_timeout_s:g} s",
                                  kind="timeout_error", code="deadline_exceeded"))
        except PipelineError as exc:
            timer.failed("pipeline_error")
            await send(error_body(f"generation failed: {exc}", kind="server_error"))
        except ConnectionResetError:
            # The client left; leaving the engine's generator above has ended the session.
            timer.finished("abort")
            return response
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
