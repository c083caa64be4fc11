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
    policy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:"
    return HTMLResponse(read_page(), headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})
