"""The coordinator's web page: `/` and its files (cluster/api/page/, shipped in the package, nothing
fetched from elsewhere), `/ui/state` (one snapshot of cluster/api/cluster_view.py) and `/ui/events`
(the same snapshot about every second, as Server-Sent Events). The page chats through the OpenAI API
like any client, with the API key the user gives it when one is needed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from cluster.api.cluster_view import ClusterView

PAGE_DIR = Path(__file__).parent / "page"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
EVENT_EVERY_S = 1.0


def add_page_routes(app: web.Application, view: ClusterView) -> None:
    async def index(request: web.Request) -> web.Response:
        return web.Response(body=(PAGE_DIR / "index.html").read_bytes(), content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(PAGE_DIR / name).read_bytes(), content_type=FILES[name],
                            headers={"Cache-Control": "no-cache"})

    async def state(request: web.Request) -> web.Response:
        return web.json_response(await view.snapshot())

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            while True:
                await response.write(f"data: {json.dumps(await view.snapshot())}\n\n".encode())
                await asyncio.sleep(EVENT_EVERY_S)
        except (ConnectionResetError, asyncio.CancelledError):
            return response

    app.router.add_get("/", index)
    app.router.add_get("/ui/state", state)
    app.router.add_get("/ui/events", events)
    app.router.add_get("/ui/{name}", asset)
