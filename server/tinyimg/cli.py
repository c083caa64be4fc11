"""The ``tinyimg`` command. Each subcommand's work lives in its own module and is imported only
when that subcommand runs, so ``tinyimg router`` never imports torch."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from tinyimg.families import FAMILIES  # import-light: torch loads only when a builder runs

# Subcommands implemented in other modules, each with a ``main(argv) -> int``.
DELEGATED = {"router": "tinyimg.router.cli", "audit": "tinyimg.provenance.verify", "preload": "tinyimg.runtime.preload"}
EXIT_CONFIG_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyimg", description="Serve diffusion image models over HTTP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the models of a config file")
    serve.add_argument("--config", required=True, type=Path, help="config file (see config.yaml)")
    serve.add_argument(
        "--model", action="append", dest="models", metavar="NAME", help="serve only this model (repeatable)"
    )
    serve.add_argument("--host", help="listen address (default: the config's host)")
    serve.add_argument("--port", type=int, help="listen port (default: the config's port)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="the least severe log records written (JSON lines on stderr)")
    serve.add_argument(
        "--termination-log", type=Path, metavar="PATH",
        help="write why models failed to load here, if the file exists (Kubernetes: the terminationMessagePath)",
    )

    tiny = sub.add_parser("make-tiny-model", help="build a diffusers pipeline with tiny random weights")
    tiny.add_argument("--family", required=True, choices=sorted(FAMILIES), help="the model family to build")
    tiny.add_argument("--out", required=True, type=Path, help="directory to save_pretrained into")

    lora = sub.add_parser("make-tiny-lora", help="build a tiny random LoRA adapter for a tiny model")
    lora.add_argument("--family", required=True, choices=sorted(FAMILIES), help="the family of the tiny model it adapts")
    lora.add_argument("--out", required=True, type=Path, help="directory to write the adapter into")
    lora.add_argument("--seed", type=int, default=None, help="seed of its random weights (another seed: another adapter)")

    classifier = sub.add_parser("make-tiny-classifier", help="build a tiny random image classifier (content checks)")
    classifier.add_argument("--out", required=True, type=Path, help="directory to save_pretrained into")
    classifier.add_argument("--seed", type=int, default=None, help="seed of its random weights")

    for name in DELEGATED:
        sub.add_parser(name, help=f"the {name} commands (see tinyimg {name} --help)", add_help=False)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from tinyimg.api.reloader import ConfigSource
    from tinyimg.core.logs import configure_logging
    from tinyimg.core.tracing import TracingConfigError, configure_tracing
    from tinyimg.serve import load_serve_config, run_server
    from tinyimg.spec import ConfigError

    try:
        config = load_serve_config(args.config, args.models, args.host, args.port)
    except ConfigError as err:
        print(f"tinyimg serve: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    configure_logging(args.log_level)
    try:
        configure_tracing("tinyimg-server")  # before the app is built: its edge asks whether tracing is on
    except TracingConfigError as err:
        print(f"tinyimg serve: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        source = ConfigSource(Path(args.config), lambda: load_serve_config(args.config, args.models, args.host, args.port))
        run_server(config, args.log_level, args.termination_log, source)
    except ConfigError as err:  # a file the config names (routerSecretFile) cannot be used
        print(f"tinyimg serve: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return 0


def run_make_tiny_model(args: argparse.Namespace) -> int:
    from tinyimg.make_tiny import run_make_tiny_model as make

    make(args.family, args.out)
    print(f"wrote a tiny {args.family} pipeline to {args.out}")
    return 0


def run_make_tiny_lora(args: argparse.Namespace) -> int:
    from tinyimg.make_tiny import run_make_tiny_lora as make

    make(args.family, args.out, **({"seed": args.seed} if args.seed is not None else {}))
    print(f"wrote a tiny {args.family} LoRA adapter to {args.out}")
    return 0


def run_make_tiny_classifier(args: argparse.Namespace) -> int:
    from tinyimg.make_tiny import run_make_tiny_classifier as make

    make(args.out, **({"seed": args.seed} if args.seed is not None else {}))
    print(f"wrote a tiny image classifier to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        try:
            module = importlib.import_module(DELEGATED[argv[0]])
        except ModuleNotFoundError as err:
            print(f"tinyimg {argv[0]}: not available in this installation ({err})", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        return cast(int, module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    commands = {"serve": run_serve, "make-tiny-model": run_make_tiny_model, "make-tiny-lora": run_make_tiny_lora,
                "make-tiny-classifier": run_make_tiny_classifier}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
