"""``tinyimg router``: parse flags, build the discovery and the app, run uvicorn.

    tinyimg router [--backend MODEL=URL ...] [--backends FILE] [--kubernetes [--namespace NS]]
                   [--host H] [--port N] [--api-keys-file F] [--rate-limit RPS] [--rate-burst N]
                   [--trusted-proxy ADDR ...] [--max-connections N] [--upstream-timeout S]
                   [--shutdown-timeout S]
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from tinyimg.router.settings import RouterSettings

if TYPE_CHECKING:
    from tinyimg.router.discovery_kube import KubeDiscovery
    from tinyimg.router.discovery_static import StaticDiscovery


def build_parser() -> argparse.ArgumentParser:
    """Flags left out default to None and then to RouterSettings' own defaults (one place)."""
    d = RouterSettings()
    p = argparse.ArgumentParser(prog="tinyimg router", description="Route generation requests to model servers.")
    p.add_argument("--backend", action="append", default=[], metavar="MODEL=URL", help="a model's backend (repeat)")
    p.add_argument("--backends", metavar="FILE", help="YAML file: backends: {model: [url, ...]}")
    p.add_argument("--kubernetes", action="store_true", help="discover ImageModels and their pods in a cluster")
    p.add_argument("--namespace", help="namespace to watch (default: the router's own, or the kubeconfig's)")
    p.add_argument(
        "--autoscaler", choices=("builtin", "keda", "hpa", "none"), default="builtin",
        help="who scales autoscaled models (with --kubernetes): requests for a model at zero are held only when it can"
             " wake it (builtin: the demand annotation; keda: the waiting-requests metric)",
    )
    p.add_argument("--host", help=f"listen address (default {d.host})")
    p.add_argument("--port", type=int, help=f"listen port (default {d.port})")
    p.add_argument("--api-keys-file", metavar="PATH", help="file with one key per line, or YAML with tenants (docs: Tenants), or a mounted Secret dir")
    p.add_argument("--rate-limit", type=float, metavar="RPS", help="requests per second per tenant (per key for a plain keys file)")
    p.add_argument("--rate-burst", type=float, metavar="N", help=f"bucket size (default {d.rate_burst:g})")
    p.add_argument("--protect-health", action="store_true", help="require a key on /health* and /metrics too")
    p.add_argument("--poll-interval", type=float, metavar="S", help=f"default {d.poll_interval:g}")
    p.add_argument(
        "--upstream-timeout", type=float, metavar="S",
        help=f"wait for a generation answer (default {d.upstream_timeout:g}: the longest model deadline + slack)",
    )
    p.add_argument(
        "--trusted-proxy", action="append", dest="trusted_proxies", metavar="ADDR",
        help="believe X-Forwarded-For/-Proto from this address or network (repeat; default none)",
    )
    p.add_argument("--max-connections", type=int, metavar="N", help=f"open connections (default {d.max_connections})")
    p.add_argument("--max-body-bytes", type=int, metavar="N", help=f"largest request body (default {d.max_body_bytes})")
    p.add_argument(
        "--max-body-bytes-total", type=int, metavar="N",
        help=f"request bodies held at once, all requests together (default {d.max_body_bytes_total})",
    )
    p.add_argument(
        "--shutdown-timeout", type=float, metavar="S",
        help=f"on SIGTERM, wait at most this long for open requests, then cancel them (default {d.shutdown_timeout:g})",
    )
    p.add_argument(
        "--job-secret-file", metavar="PATH",
        help="secret that signs job ids; give every replica the same one (default: random per process)",
    )
    p.add_argument("--redis-url", metavar="URL", help="the shared job queue (redis://...): jobs are answered from it")
    p.add_argument(
        "--result-store", metavar="DIR|S3URL",
        help="the pods' result store: a directory (served at /v1/files) or s3://BUCKET/PREFIX?endpoint=URL&region=NAME",
    )
    p.add_argument("--url-ttl-seconds", type=int, metavar="S", help=f"image URL lifetime (default {d.url_ttl_seconds})")
    p.add_argument("--log-level", default="info", help="the least severe log records written (JSON lines on stderr)")
    return p


def load_settings(args: argparse.Namespace) -> RouterSettings:
    from tinyimg.core.jobs import read_job_secret
    from tinyimg.core.tenants import load_tenants

    table = load_tenants(args.api_keys_file) if args.api_keys_file else None

    given = {
        "host": args.host,
        "port": args.port,
        "rate_limit": args.rate_limit,
        "rate_burst": args.rate_burst,
        "poll_interval": args.poll_interval,
        "upstream_timeout": args.upstream_timeout,
        "max_connections": args.max_connections,
        "max_body_bytes": args.max_body_bytes,
        "max_body_bytes_total": args.max_body_bytes_total,
        "shutdown_timeout": args.shutdown_timeout,
        "trusted_proxies": tuple(args.trusted_proxies) if args.trusted_proxies else None,
        "key_hashes": tuple(table.key_hashes) if table is not None else None,
        "tenants": tuple(table.tenants.values()) if table is not None else None,
        "open_paths": () if args.protect_health else None,
        "job_secret": read_job_secret(args.job_secret_file, "--job-secret-file") if args.job_secret_file else None,
        "redis_url": args.redis_url,
        "result_store": args.result_store,
        "url_ttl_seconds": args.url_ttl_seconds,
    }
    if args.redis_url is not None and not args.redis_url.startswith(("redis://", "rediss://")):
        raise ValueError(f"--redis-url {args.redis_url}: expected redis://HOST:PORT[/DB] or rediss://...")
    if args.url_ttl_seconds is not None and not 1 <= args.url_ttl_seconds <= 7 * 86_400:
        raise ValueError("--url-ttl-seconds: between 1 and 604800 (7 days, the longest an S3 URL may last)")
    return RouterSettings(**{k: v for k, v in given.items() if v is not None})


def load_discovery(args: argparse.Namespace) -> KubeDiscovery | StaticDiscovery:
    if args.kubernetes:
        if args.backend or args.backends:
            raise ValueError("--kubernetes and --backend/--backends exclude each other")
        from tinyimg.kube.connection import load_kube_connection
        from tinyimg.router.discovery_kube import KubeDiscovery

        connection = load_kube_connection(args.namespace)
        return KubeDiscovery(connection, reload=lambda: load_kube_connection(args.namespace), autoscaler=args.autoscaler)
    from tinyimg.router.discovery_static import load_backends_file, merge_backends, parse_backend_flag

    flags: dict[str, list[str]] = {}
    for flag in args.backend:
        model, url = parse_backend_flag(flag)
        flags.setdefault(model, []).append(url)
    backends = merge_backends(load_backends_file(args.backends) if args.backends else {}, flags)
    if not backends:
        raise ValueError("no backends: give --backend MODEL=URL, --backends FILE or --kubernetes")
    from tinyimg.router.discovery_static import StaticDiscovery

    return StaticDiscovery(backends)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tinyimg.core.auth import KeyFileError
    from tinyimg.router.discovery_static import BackendsError

    try:
        settings = load_settings(args)
        discovery = load_discovery(args)
    except (ValueError, KeyFileError, BackendsError) as err:
        print(f"tinyimg router: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from tinyimg.core.logs import configure_logging
    from tinyimg.core.tracing import TracingConfigError, configure_tracing
    from tinyimg.http.server import build_server_options
    from tinyimg.router.app import create_router_app

    configure_logging(args.log_level)
    try:
        configure_tracing("tinyimg-router")  # before the app is built: its edge asks whether tracing is on
    except TracingConfigError as err:
        print(f"tinyimg router: {err}", file=sys.stderr)
        return 2
    # httpx logs every request at info: one line per poll and per forward is noise, not signal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_router_app(settings, discovery)
    options = build_server_options(settings.edge_limits(), settings.trusted_proxies)
    from tinyimg.router.drain import RouterServer

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="on", log_level=args.log_level,
        # uvicorn annotates an int, but only hands it to asyncio.wait_for: fractional seconds work.
        timeout_graceful_shutdown=settings.shutdown_timeout, **options,  # type: ignore[arg-type]
    )
    RouterServer(config, app.state.router).run()
    return 0
