"""Every route of the URL conf, read from ``get_resolver()``, so that a route added later is attacked too.

``api_routes()`` are the DRF views (the active-learning API, growth, adapters, the schema and its docs);
``page_routes()`` the HTML pages outside the admin (forest pages, labelling pages, staff pages). The admin's pages are
enumerated from ``admin.site._registry`` by the page tests. Path parameters are filled with sample values by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

UNSAFE_METHODS = ("post", "put", "patch", "delete")
_PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


@dataclass(frozen=True)
class Route:
    route: str  # as the URL conf writes it, e.g. "forest/<str:forest_name>/config"
    name: str | None
    view: object

    def path(self, **values: object) -> str:
        """The route's path with each parameter filled: ``values`` by name, else a sample of its converter."""

        def fill(match: re.Match) -> str:
            name = match.group("name")
            if name in values:
                return str(values[name])
            return "1" if match.group("converter") == "int" else "sample"

        return "/" + _PARAMETER.sub(fill, self.route)

    @property
    def parameters(self) -> list[tuple[str, str]]:
        """(name, converter) of every path parameter."""
        return [(m.group("name"), m.group("converter") or "str") for m in _PARAMETER.finditer(self.route)]

    @property
    def view_class(self):
        return getattr(self.view, "view_class", None)

    def methods(self) -> list[str]:
        """The HTTP methods the view's class answers (GET, POST, …; not HEAD or OPTIONS)."""
        cls = self.view_class
        if cls is None:
            return []
        return [m for m in ("get", *UNSAFE_METHODS) if hasattr(cls, m)]

    def __str__(self) -> str:
        return self.name or self.route


def all_routes() -> list[Route]:
    def walk(patterns, prefix: str = ""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield Route(prefix + str(pattern.pattern), pattern.name, pattern.callback)

    return list(walk(get_resolver().url_patterns))


def api_routes() -> list[Route]:
    return [r for r in all_routes() if r.view_class is not None and issubclass(r.view_class, APIView)]


def page_routes() -> list[Route]:
    """HTML pages outside the admin (their views are plain Django views)."""
    api = {r.route for r in api_routes()}
    return [
        r
        for r in all_routes()
        if not r.route.startswith("^admin/") and not r.route.startswith("admin/") and r.route not in api
    ]


def api_calls() -> list[tuple[Route, str]]:
    """(route, method) for every method of every API route."""
    return [(route, method) for route in api_routes() for method in route.methods()]
