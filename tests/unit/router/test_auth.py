import hashlib

import pytest

from tinyimg.core.auth import (
    KeyFileError,
    RateLimiter,
    TokenBucket,
    hash_bearer,
    hash_key,
    match_key,
    parse_bearer,
    parse_key_lines,
)
from tinyimg.core.tenants import load_tenants


def test_hash_key_is_sha256_hex():
    assert hash_key("secret") == hashlib.sha256(b"secret").hexdigest()


def test_parse_key_lines_skips_blanks_and_comments():
    assert parse_key_lines("# ops keys\n k1 \n\nk2\n  # old\n") == ["k1", "k2"]


def test_load_tenants_from_file_keeps_no_plain_key(tmp_path):
    path = tmp_path / "keys"
    path.write_text("alpha\nbeta\n")
    hashes = load_tenants(path).key_hashes
    assert hashes == [hash_key("alpha"), hash_key("beta")]
    assert "alpha" not in hashes


def test_load_tenants_from_mounted_secret_dir_skips_hidden_entries(tmp_path):
    (tmp_path / "team-a").write_text("ka\n")
    (tmp_path / "team-b").write_text("kb")
    (tmp_path / "..data").mkdir()
    (tmp_path / ".hidden").write_text("not-a-key")
    assert sorted(load_tenants(tmp_path).key_hashes) == sorted([hash_key("ka"), hash_key("kb")])


@pytest.mark.parametrize("content", ["", "# only a comment\n"], ids=["empty", "comments-only"])
def test_load_tenants_refuses_a_file_without_keys(tmp_path, content):
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(KeyFileError, match="no API keys"):
        load_tenants(path)


def test_load_tenants_names_a_missing_file(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        load_tenants(tmp_path / "absent")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None), ("", None)],
    ids=["bearer", "lowercase-and-spaces", "basic-scheme", "no-token", "absent", "empty"],
)
def test_parse_bearer(header, token):
    assert parse_bearer(header) == token


def test_match_key_returns_the_matching_hash_or_none():
    hashes = [hash_key("k1"), hash_key("k2")]
    assert match_key("k2", hashes) == hash_key("k2")
    assert match_key("k3", hashes) is None
    assert match_key(None, hashes) is None
    assert match_key(hash_key("k1"), hashes) is None  # the stored hash itself is not a key


def test_token_bucket_allows_burst_then_asks_to_wait():
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(10.0) == pytest.approx(0.5)


def test_token_bucket_refills_at_its_rate_up_to_burst():
    bucket = TokenBucket(rate=2.0, burst=2)
    bucket.take(0.0), bucket.take(0.0)
    assert bucket.take(0.25) == pytest.approx(0.25)  # half a token there, half missing at 2/s
    assert bucket.take(0.5) == 0.0
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_rate_limiter_keeps_one_bucket_per_key():
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0


def test_rate_limiter_drops_refilled_buckets_once_it_holds_too_many():
    limiter = RateLimiter(rate=1.0, burst=2, max_buckets=2)
    limiter.take("idle", 0.0)
    limiter.take("busy", 9.0), limiter.take("busy", 9.0)
    assert limiter.take("new", 10.0) == 0.0  # "idle" refilled long ago: dropped; "busy" still owes
    assert sorted(limiter.buckets) == ["busy", "new"]
    assert limiter.take("busy", 10.0) == 0.0 and limiter.take("busy", 10.0) > 0  # its state was kept


def test_hash_bearer_is_the_keys_hash_or_none():
    assert hash_bearer("Bearer  secret-key ") == hash_key("secret-key")
    assert hash_bearer("bearer secret-key") == hash_key("secret-key")
    assert [hash_bearer(h) for h in (None, "", "Basic abc", "Bearer ")] == [None, None, None, None]
