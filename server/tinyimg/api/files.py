"""``GET /v1/files/<key>``: a job image by its capability URL (directory result store): no
``Authorization``, the URL's signature and expiry are the permission (403 ``url_invalid`` /
``url_expired``). The router serves the same URLs from the same directory."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tinyimg.api.deps import DurableDep
from tinyimg.durable.reader import build_image_response
from tinyimg.wire.contract import EDGE_ERRORS, build_error_responses

router = APIRouter(tags=["jobs"])


@router.get(
    "/v1/files/{key:path}",
    responses={200: {"content": {m: {} for m in ("image/png", "image/jpeg", "image/webp")}},
               **build_error_responses(403, 404, *EDGE_ERRORS)},
    response_class=Response,
)
async def read_file_route(key: str, request: Request, durable: DurableDep) -> Response:
    return build_image_response(await durable.file(key, request.url.query), "private, max-age=300")
