"""A Starlette router that only tries the routes whose shape can match the request path.

Starlette's ``Router`` tries every route in order with a regex, so dispatch costs grow with the route
count (30 and growing under ``/v1``); on the message routes it was a tenth of the CPU spent per
request. A ``Route`` whose parameters each match within one path segment (every built-in convertor
but ``path``) can only match paths with its number of segments, and, when its first segment is
literal, only paths that start with that segment. Grouping routes by that shape, each group in the
original order, finds the same first full match as Starlette while trying a handful of routes.
Whatever the index cannot decide (no full match among the candidates: 404, 405, slash redirects)
falls back to Starlette's own scan of every route, so dispatch is unchanged.
"""

from __future__ import annotations

from starlette._utils import get_route_path
from starlette.convertors import FloatConvertor, IntegerConvertor, StringConvertor, UUIDConvertor
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send

_ONE_SEGMENT = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)

Shape = tuple[int, str | None]  # (number of path segments, literal first segment or None)


def _shape(route: BaseRoute) -> Shape | None:
    """The shape every path ``route`` matches has; None when it could match paths of any shape."""
    if not isinstance(route, Route):
        return None
    if not all(isinstance(c, _ONE_SEGMENT) for c in route.param_convertors.values()):
        return None
    parts = route.path.split("/")[1:]
    return len(parts), (parts[0] if "{" not in parts[0] else None)


class IndexedRouter(Router):
    _index: dict[Shape, list[BaseRoute]]
    _by_count: dict[int, list[BaseRoute]]
    _wildcards: list[BaseRoute]
    _indexed_count = -1

    def _build_index(self) -> None:
        shapes = [(r, _shape(r)) for r in self.routes]

        def fitting(n: int, first: str | None) -> list[BaseRoute]:
            """The routes, in order, that could match a path of ``n`` segments starting with ``first``
            (None: a first segment that no route spells out)."""
            return [r for r, s in shapes if s is None or (s[0] == n and s[1] in (first, None))]

        known = {s for _, s in shapes if s is not None}
        self._index = {(n, first): fitting(n, first) for n, first in known if first is not None}
        self._by_count = {n: fitting(n, None) for n, _ in known}
        self._wildcards = fitting(-1, None)
        self._indexed_count = len(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._indexed_count != len(self.routes):  # routes added after start-up
                self._build_index()
            parts = get_route_path(scope).split("/")
            n = len(parts) - 1
            candidates = self._index.get((n, parts[1] if n else ""))
            if candidates is None:
                candidates = self._by_count.get(n, self._wildcards)
            for route in candidates:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
