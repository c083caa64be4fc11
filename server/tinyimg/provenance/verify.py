"""``tinyimg audit verify [--config FILE] IMAGE``: was this image made by this deployment, and by
which job?

Three independent signs: the invisible watermark (the payload of a model of the config that has
the watermark on, or the default text), the audit record stored under the image's SHA-256 in the
result store (the config's ``jobs.resultStore``, else ``.tinyimg/results`` as ``tinyimg serve``
uses), and the parameters and AI-generated mark in the file's metadata (anyone can write those,
so they only describe; they never prove). Exit 0 when the watermark or the audit record says it
was made here, 1 when neither does, 2 when the image or the config cannot be read. The report is
one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyimg.durable.results import DirResultStore, ResultStore, build_result_store
from tinyimg.provenance.audit import audit_key, sha256_hex
from tinyimg.provenance.manifest import read_cert_serial, read_manifest
from tinyimg.provenance.metadata import is_marked_generated, read_parameters
from tinyimg.provenance.watermark import build_payload, read_payload
from tinyimg.spec import DEFAULT_WATERMARK_TEXT, ConfigError, ServerConfig, load_config

DEFAULT_RESULT_DIR = ".tinyimg/results"  # tinyimg.serve's, under the working directory


def read_watermark_texts(config: ServerConfig | None) -> list[str]:
    texts = [m.provenance.watermark_text for m in config.models if m.provenance.watermark] if config else []
    return list(dict.fromkeys(texts or [DEFAULT_WATERMARK_TEXT]))


def open_store(config: ServerConfig | None) -> ResultStore | None:
    spec = config.jobs_config().result_store if config is not None else None
    if spec is not None:
        return build_result_store(spec)
    default = Path.cwd() / DEFAULT_RESULT_DIR
    return DirResultStore(default) if default.is_dir() else None


def read_signer_serial(config: ServerConfig | None) -> str | None:
    if config is None or not config.c2pa_cert_file:
        return None
    return read_cert_serial(Path(config.c2pa_cert_file).read_bytes())


async def verify_image(data: bytes, texts: list[str], store: ResultStore | None, signer_serial: str | None = None) -> dict[str, Any]:
    """The report on one image's bytes (see the module's doc). ``signer_serial``: this deployment's
    C2PA certificate; a valid manifest signed with it says the image was made here."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    digest = sha256_hex(data)
    payload = read_payload(image)
    matched = next((t for t in texts if payload is not None and payload == build_payload(t)), None)
    found = await store.get(audit_key(digest)) if store is not None else None
    record = json.loads(found.data) if found is not None else None
    manifest = read_manifest(data, Image.MIME.get(image.format or "", "")) if image.format else None
    signed_here = (manifest is not None and signer_serial is not None and manifest["cert_serial_number"] == signer_serial
                   and manifest["validation_state"] in ("Valid", "Trusted"))
    return {
        "sha256": digest,
        "made_here": matched is not None or record is not None or signed_here,
        "c2pa": {**manifest, "signed_here": signed_here} if manifest is not None else None,
        "watermark": {"checked": payload is not None, "matches": matched is not None},
        "audit_record": record,
        "job_id": record.get("job_id") if record else None,
        "metadata": {"marked_ai_generated": is_marked_generated(image.info), "parameters": read_parameters(image.info)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinyimg audit", description="Provenance of generated images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = sub.add_parser("verify", help="tell whether an image came from this deployment, and which job made it")
    verify.add_argument("--config", type=Path, help="the deployment's config.yaml (watermark texts, result store)")
    verify.add_argument("image", type=Path, help="the image file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else None
        data = args.image.read_bytes()
        report = asyncio.run(verify_image(data, read_watermark_texts(config), open_store(config), read_signer_serial(config)))
    except (ConfigError, OSError, ValueError) as err:
        print(f"tinyimg audit verify: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0 if report["made_here"] else 1
