"""The generation routes without FastAPI's routing and dependency layers.

``POST /generate`` and ``POST /v1/images/generations`` are nearly all of a router's traffic, and
their handler needs nothing FastAPI adds (the body is forwarded as bytes, unparsed but for its
``model``): measured under 32 clients, routing, dependency solving and the exception middleware
were about a quarter of the router's time per request. This ASGI middleware sits inside the
shared edge (request id, access log, body bounds) and answers those two routes itself with the
same functions the FastAPI routes call (access check, forwarding) and the same error answer;
every other request, and any other method on those paths, goes on to FastAPI. The FastAPI routes
stay: they document the API (OpenAPI) and serve an app built without this middleware.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tinyimg.core.errors import ApiError
from tinyimg.http.handlers import answer_api_error, answer_http_error
from tinyimg.router.routes.generate import JSON_GENERATION_PATHS, forward_generation
from tinyimg.router.state import RouterState, check_access


class GenerationFastPath:
    def __init__(self, app: ASGIApp, state: RouterState):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in JSON_GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        scope["tinyimg_route"] = scope["path"]  # the trace's span name (no FastAPI route here)
        request = Request(scope, receive)
        try:
            await check_access(request, self.state)
            response = await forward_generation(request, self.state)
        except ApiError as err:
            response = await answer_api_error(request, err)
        except HTTPException as err:  # the edge's body bound (tinyimg.http.context), raised while reading
            response = await answer_http_error(request, err)
        await response(scope, receive, send)
