"""Routes that analyse their endpoint the first time a request reaches them, not at import.

Why: FastAPI builds a dependency tree and pydantic validators for every parameter of every
endpoint when the route is created (about 0.5 ms a route, and the first parameter imports
pydantic.v1 for a compatibility check). The emulator has ~40 endpoints and a test suite usually
touches a handful, so paying that up front made `fwemu serve` start 1.5x slower than a bare
FastAPI app. A LazyAPIRoute only compiles its path regex when created; the first request whose
path matches it (or anything that reads its FastAPI attributes, such as the OpenAPI document)
runs the normal `APIRoute.__init__` once. Behaviour after that is FastAPI's own.

`add_routes` puts built routers on the app directly: `include_router` would wrap them in
FastAPI's lazily re-analysed route contexts and analyse every endpoint a second time.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette._utils import get_route_path  # the exact path Starlette's own Route.matches uses
from starlette.routing import BaseRoute, Match, compile_path

_BUILD_LOCK = threading.RLock()


class LazyAPIRoute(APIRoute):
    """An APIRoute whose FastAPI analysis runs on first use; pass as `APIRouter(route_class=...)`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:  # noqa: super() deferred
        self.__dict__["_pending"] = (path, endpoint, kwargs)
        self.__dict__["_path_regex"] = compile_path(path)[0]

    def _build(self) -> None:
        with _BUILD_LOCK:
            pending = self.__dict__.get("_pending")
            if pending is None:
                return
            path, endpoint, kwargs = pending
            APIRoute.__init__(self, path, endpoint, **kwargs)
            del self.__dict__["_pending"]

    @property
    def built(self) -> bool:
        return "_pending" not in self.__dict__

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the instance does not have yet, i.e. before _build().
        if name.startswith("__") or "_pending" not in self.__dict__:
            raise AttributeError(name)
        self._build()
        return getattr(self, name)

    def matches(self, scope) -> tuple[Match, dict]:
        if "_pending" in self.__dict__:
            if scope["type"] != "http" or not self.__dict__["_path_regex"].match(get_route_path(scope)):
                return Match.NONE, {}
            self._build()
        return super().matches(scope)


def flatten(router: APIRouter) -> list[BaseRoute]:
    """The routes a router holds, with nested included routers expanded in order."""
    out: list[BaseRoute] = []
    for route in router.routes:
        nested = None if isinstance(route, APIRoute) else getattr(route, "original_router", None)
        out.extend(flatten(nested) if isinstance(nested, APIRouter) else [route])  # FastAPI's _IncludedRouter
    return out


def add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Append the routers' route objects to the app as they are (no prefix or dependencies added)."""
    for router in routers:
        app.router.routes.extend(flatten(router))
