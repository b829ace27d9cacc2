"""Requests that do not parse as their message get INVALID_ARGUMENT, saying so.

Left to itself, gRPC's asyncio server answers bytes that are not a valid protobuf with UNKNOWN and logs
a traceback for each one: a stranger sending garbage fills the worker's log. This interceptor gives
every method a deserializer that keeps the parse error instead of raising it, and a wrapper that
refuses such a request (or, on a stream, the stream at that message) before the handler sees it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import grpc


class Unparsable:
    """What the lenient deserializer returns for bytes that are not the method's message."""

    __slots__ = ("error",)

    def __init__(self, error: str):
        self.error = error


def lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or whatever a parser raises on garbage
            return Unparsable(f"the request is not a valid protobuf message: {exc}")
    return parse


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Unparsable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)


def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async def each() -> AsyncIterator[Any]:
        async for request in requests:
            await _refuse(request, context)
            yield request
    return each()


def wrap(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same method with a lenient deserializer and refusal of what did not parse."""
    parse, serialize = lenient(handler.request_deserializer), handler.response_serializer
    if not handler.request_streaming and not handler.response_streaming:
        async def unary_unary(request, context):
            await _refuse(request, context)
            return await handler.unary_unary(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, parse, serialize)
    if not handler.request_streaming:
        async def unary_stream(request, context):
            await _refuse(request, context)
            async for reply in handler.unary_stream(request, context):
                yield reply
        return grpc.unary_stream_rpc_method_handler(unary_stream, parse, serialize)
    if handler.response_streaming:
        async def stream_stream(requests, context):
            async for reply in handler.stream_stream(_checked(requests, context), context):
                yield reply
        return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)

    async def stream_unary(requests, context):
        return await handler.stream_unary(_checked(requests, context), context)
    return grpc.stream_unary_rpc_method_handler(stream_unary, parse, serialize)


class LenientDecoding(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        # Wrapped once per method: the handlers of a service never change while it serves.
        self._wrapped[method] = wrapped = wrap(handler)
        return wrapped
