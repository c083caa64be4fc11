import pytest

from tinyimg.core.auth import hash_key
from tinyimg.router.cli import build_parser, load_discovery, load_settings, main
from tinyimg.router.discovery_static import StaticDiscovery


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no backends"),
        (["--backend", "foo"], "expected MODEL=URL"),
        (["--kubernetes", "--backend", "a=http://h:1"], "exclude each other"),
        (["--backend", "a=http://h:1", "--api-keys-file", "/nonexistent/keys"], "cannot read API keys"),
    ],
    ids=["no-backends", "bad-flag", "both-modes", "missing-keys-file"],
)
def test_main_refuses_bad_arguments_with_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_flags_and_file_merge_into_one_static_discovery(tmp_path):
    backends = tmp_path / "backends.yaml"
    backends.write_text("backends:\n  a: [http://h:1]\n  b: http://h:3\n")
    args = build_parser().parse_args(["--backends", str(backends), "--backend", "a=http://h:2", "--backend", "a=http://h:1"])
    discovery = load_discovery(args)
    assert isinstance(discovery, StaticDiscovery)
    assert discovery.backends == {"a": ["http://h:1", "http://h:2"], "b": ["http://h:3"]}


def test_settings_hash_keys_and_protect_health(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k1\n")
    args = build_parser().parse_args(["--api-keys-file", str(keys), "--rate-limit", "5", "--protect-health"])
    settings = load_settings(args)
    assert settings.key_hashes == (hash_key("k1"),)
    assert (settings.rate_limit, settings.rate_burst, settings.open_paths) == (5.0, 10.0, ())
    assert load_settings(build_parser().parse_args([])).open_paths == ("/health", "/health/ready", "/metrics")


def test_flags_left_out_take_the_settings_defaults_and_the_upstream_timeout_is_derived():
    from tinyimg.core.drain import build_upstream_timeout
    from tinyimg.router.settings import RouterSettings

    assert load_settings(build_parser().parse_args([])) == RouterSettings()
    # The longest request timeout a model may declare (a day) plus the drain module's slack.
    assert RouterSettings().upstream_timeout == build_upstream_timeout(86_400)
    args = build_parser().parse_args(["--trusted-proxy", "10.0.0.1", "--max-connections", "50", "--port", "9000"])
    settings = load_settings(args)
    assert (settings.trusted_proxies, settings.max_connections, settings.port) == (("10.0.0.1",), 50, 9000)
    assert settings.edge_limits().max_connections == 50
