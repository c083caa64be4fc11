import pytest

from tinyimg.router.discovery_static import (
    BackendsError,
    StaticDiscovery,
    load_backends_file,
    merge_backends,
    parse_backend_flag,
    parse_backends_document,
)
from tinyimg.router.table import BackendTable


def test_parse_backend_flag_strips_trailing_slash():
    assert parse_backend_flag("tiny-sdxl=http://127.0.0.1:8001/") == ("tiny-sdxl", "http://127.0.0.1:8001")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("tiny-sdxl", "expected MODEL=URL"),
        ("Tiny=http://h:1", "not a valid model name"),
        ("m=ftp://h:1", "not an http"),
        ("m=http://", "not an http"),
        ("m=http://h:1/?x=1", "query or fragment"),
    ],
    ids=["no-equals", "bad-model-name", "bad-scheme", "no-host", "query"],
)
def test_parse_backend_flag_rejects(flag, message):
    with pytest.raises(BackendsError, match=message):
        parse_backend_flag(flag)


def test_parse_backends_document_accepts_list_single_url_and_empty():
    doc = {"backends": {"a": ["http://h:1", "http://h:2/"], "b": "http://h:3", "c": None}}
    assert parse_backends_document(doc, "f") == {"a": ["http://h:1", "http://h:2"], "b": ["http://h:3"], "c": []}


@pytest.mark.parametrize(
    "doc",
    [[], {"models": {}}, {"backends": {"a": 3}}, {"backends": {"A_b": []}}],
    ids=["not-a-mapping", "no-backends-key", "url-not-a-string", "bad-model-name"],
)
def test_parse_backends_document_rejects(doc):
    with pytest.raises(BackendsError, match=r"^f"):
        parse_backends_document(doc, "f")


def test_load_backends_file_reports_bad_yaml(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("backends: [unclosed\n")
    with pytest.raises(BackendsError, match="not valid YAML"):
        load_backends_file(path)


def test_merge_backends_keeps_order_and_drops_duplicates():
    merged = merge_backends({"a": ["http://h:1"]}, {"a": ["http://h:2", "http://h:1"], "b": ["http://h:3"]})
    assert merged == {"a": ["http://h:1", "http://h:2"], "b": ["http://h:3"]}


async def test_static_discovery_fills_the_table_and_keeps_models_without_backends():
    table = BackendTable()
    await StaticDiscovery({"a": ["http://h:1", "http://h:2"], "b": ["http://h:1"], "c": []}).start(table)
    assert table.synced
    assert sorted(table.models) == ["a", "b", "c"]
    assert [p.url for p in table.pods_of("a")] == ["http://h:1", "http://h:2"]
    assert table.pods_of("c") == []
    assert sorted(table.pods) == ["http://h:1", "http://h:2"]  # one process serving two models is one pod
