"""The playground page (``GET /ui`` on the model server and the router): one HTML file with its
script inline, shipped as package data, and the route that serves it, open like the listings (the
page itself asks for the API key and sends it with the calls it makes). It loads nothing from
outside (it must work in a cluster without internet) and calls only the public API: /models,
/status, /v1/jobs and its events."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse


@cache
def read_page() -> str:
    return resources.files(__package__).joinpath("playground.html").read_text(encoding="utf-8")


router = APIRouter(tags=["ui"])


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def read_playground() -> HTMLResponse:
    # Inline script and style only, nothing from elsewhere: say so to the browser too. Images are
    # the API's (blob: once fetched with the key) and the previews' JPEG data: URLs.
    # Never framed by another site (clickjacking): frame-ancestors, and X-Frame-Options for old browsers.
    policy = ("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:;"
              " frame-ancestors 'none'")
    headers = {"Content-Security-Policy": policy, "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
    return HTMLResponse(read_page(), headers=headers)
