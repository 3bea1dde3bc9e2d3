"""`CheckedRoute`: the route class of every area's routes, so one text rule covers every JSON body field."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from serve_app.inputs import InvalidText, check_text


class _CheckedRequest(Request):
    """A request whose JSON body is checked once, as it is parsed, against the text rule."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await super().json()
            try:
                check_text(body)
            except InvalidText as exc:
                raise HTTPException(422, str(exc)) from None
        return self._json


class CheckedRoute(APIRoute):
    """Every route's JSON body goes through `_CheckedRequest` (one text rule for every field)."""

    def get_route_handler(self) -> Any:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handle(_CheckedRequest(request.scope, request.receive))

        return checked
