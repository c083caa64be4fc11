"""The result store's pure parts and its directory backend: capability URL signatures, expiry,
keys a URL may name, the PNG text chunk, atomic writes, the TTL sweep."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time

import pytest
from PIL import Image

from tinyimg.core.errors import ApiError
from tinyimg.durable.results import (
    DirResultStore,
    build_file_url,
    check_file_signature,
    image_key,
    read_image_key,
    record_key,
)
from tinyimg.provenance.pngtext import add_png_text

SECRET = b"s" * 64
KEY = image_key("job_" + "a" * 32, 0, "png")


def query_of(url: str) -> str:
    return url.split("?", 1)[1]


def code_of(call) -> str:
    with pytest.raises(ApiError) as err:
        call()
    assert err.value.status == 403
    return err.value.code


def test_a_signed_url_is_valid_until_it_expires_and_only_for_its_key():
    url = build_file_url(SECRET, KEY, "http://h/base/", 60, now=999.2)  # at least 60 s: rounded up
    assert url.startswith(f"http://h/base/v1/files/{KEY}?expires=1060&sig=")
    check_file_signature(SECRET, KEY, query_of(url), now=1059.0)  # no exception: valid
    assert code_of(lambda: check_file_signature(SECRET, KEY, query_of(url), now=1061.0)) == "url_expired"
    other = image_key("job_" + "b" * 32, 0, "png")
    assert code_of(lambda: check_file_signature(SECRET, other, query_of(url), now=1000.0)) == "url_invalid"
    assert code_of(lambda: check_file_signature(b"t" * 64, KEY, query_of(url), now=1000.0)) == "url_invalid"
    later = query_of(url).replace("expires=1060", "expires=9999")  # a longer life is not given by editing
    assert code_of(lambda: check_file_signature(SECRET, KEY, later, now=1000.0)) == "url_invalid"


@pytest.mark.parametrize("query", ["", "expires=&sig=", "expires=-5&sig=x", "expires=\uff11\uff12&sig=x", "expires=1e9&sig=x",
                                   "expires=" + "9" * 40 + "&sig=x", "sig=%FF%FE&expires=10", "expires=10&sig=\u00e9",
                                   "&".join(["expires=10"] * 50)])
def test_malformed_signatures_are_invalid_not_errors(query):
    assert code_of(lambda: check_file_signature(SECRET, KEY, query, now=0.0)) == "url_invalid"


@pytest.mark.parametrize("key", ["jobs/job_x/0.png", f"jobs/job_{'a' * 32}/job.json", f"jobs/job_{'a' * 32}/../x.png",
                                 f"jobs/job_{'a' * 32}/0.gif", "../etc/passwd", f"/jobs/job_{'a' * 32}/0.png", ""])
def test_only_job_images_can_be_named_by_a_file_url(key):
    assert code_of(lambda: read_image_key(key)) == "url_invalid"
    assert read_image_key(KEY) == KEY


def test_the_png_text_chunk_carries_the_parameters_and_other_formats_pass_unchanged():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, "PNG")
    text = json.dumps({"prompt": "un renard « roux »", "seed": 42}, ensure_ascii=False)
    tagged = add_png_text(buffer.getvalue(), "parameters", text)
    image = Image.open(io.BytesIO(tagged))
    assert json.loads(image.text["parameters"]) == {"prompt": "un renard « roux »", "seed": 42}
    assert image.convert("RGB").getpixel((1, 1)) == (10, 20, 30)
    assert add_png_text(b"\xff\xd8jpeg bytes", "parameters", text) == b"\xff\xd8jpeg bytes"


def test_the_directory_store_round_trips_signs_with_its_own_secret_and_sweeps_by_age(tmp_path):
    clock = [1_000_000.0]
    store = DirResultStore(tmp_path / "results", clock=lambda: clock[0])
    again = DirResultStore(tmp_path / "results")  # a second process on the same directory
    assert store.secret == again.secret and len(store.secret) >= 32
    assert oct((tmp_path / "results" / ".url-secret").stat().st_mode & 0o777) == "0o600"

    async def scenario():
        await store.put(KEY, b"png", "image/png", {"tinyimg-seed": "7"})
        await store.put(record_key("job_" + "a" * 32), b"{}", "application/json", {})
        found = await again.get(KEY)
        assert (found.data, found.content_type, found.metadata) == (b"png", "image/png", {"tinyimg-seed": "7"})
        assert await store.get(image_key("job_" + "c" * 32, 0, "png")) is None
        url = await store.url(KEY, "http://h", 30)
        store.check(KEY, query_of(url))
        assert not [p for p in (tmp_path / "results").rglob("*.tmp")]  # writes are atomic renames
        os.utime(tmp_path / "results" / record_key("job_" + "a" * 32), (time.time() - 100, time.time() - 100))
        clock[0] = time.time()
        assert await store.sweep(3600) == 0
        assert await store.sweep(50) == 1
        assert await store.get(KEY) is None
        assert store.writes == 2 and store.write_failures == 0

    asyncio.run(scenario())


def test_an_unusable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"jobs\.resultStore\.dir"):
        DirResultStore(blocker / "results")
