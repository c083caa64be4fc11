"""GET /ui: the playground page (tinyimg.ui), open like the listings: the page itself asks for
the API key and sends it with the API calls it makes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from tinyimg.ui import read_page

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
