"""GET /v1/files/<key>: a job image by its capability URL, served from the pods' result directory
(``--result-store DIR``, the same ReadWriteMany volume): no key needed, the URL's signature and
expiry are the permission. With an S3 store, image URLs point at the bucket and never come here."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tinyimg.core.errors import ApiError
from tinyimg.router.state import StateDep
from tinyimg.wire.contract import EDGE_ERRORS, build_error_responses

router = APIRouter(tags=["jobs"])


@router.get(
    "/v1/files/{key:path}",
    responses={200: {"content": {m: {} for m in ("image/png", "image/jpeg", "image/webp")}},
               **build_error_responses(403, 404, *EDGE_ERRORS)},
    response_class=Response,
)
async def read_file(key: str, request: Request, state: StateDep) -> Response:
    if state.durable is None:
        raise ApiError("this router has no --result-store: it serves no image files", 404, "not_found")
    found = await state.durable.file(key, request.url.query)
    return Response(found.data, media_type=found.content_type,
                    headers={"Cache-Control": "private, max-age=300", "X-Seed": found.metadata.get("tinyimg-seed", "")})
