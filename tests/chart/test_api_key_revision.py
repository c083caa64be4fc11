"""The router's key revision against a live Secret: helm's `lookup` through `--dry-run=server`,
with the real helm binary talking to the emulated API server (tests/support/kube.py)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import yaml

from tests.chart.helm import CHART, NAMESPACE, RELEASE, find_helm, one
from tests.support.kube import kube  # noqa: F401  (a fixture)

SECRET = f"{RELEASE}-tinyimg-router-api-keys"
REVISION = "tinyimg.io/api-keys-revision"


async def render_against(kube, tmp_path, keys: list[str]) -> list[dict[str, Any]]:
    config = kube.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    proc = await asyncio.create_subprocess_exec(
        find_helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=server",
        "--kubeconfig", str(config), "--set", "router.apiKeys.enabled=true",
        "--set", f"router.apiKeys.keys={{{','.join(keys)}}}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return [d for d in yaml.safe_load_all(out) if d]


async def live_secret(kube, content: str, revision: str) -> None:
    await kube.create({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE, "annotations": {REVISION: revision}},
        "data": {"api-keys": base64.b64encode(content.encode()).decode()},
    })


def revisions(objects: list[dict[str, Any]]) -> tuple[str, str]:
    secret = one(objects, "Secret", "-api-keys")["metadata"]["annotations"][REVISION]
    pod = one(objects, "Deployment", "-router")["spec"]["template"]["metadata"]["annotations"][REVISION]
    return secret, pod


async def test_unchanged_keys_keep_the_live_revision_so_the_router_does_not_roll(kube, tmp_path):
    await live_secret(kube, "key-one\nkey-two\n", "rev-from-the-last-upgrade")
    assert revisions(await render_against(kube, tmp_path, ["key-one", "key-two"])) == (
        "rev-from-the-last-upgrade", "rev-from-the-last-upgrade")


async def test_changed_keys_draw_a_new_revision_so_the_router_rolls(kube, tmp_path):
    await live_secret(kube, "key-one\nkey-two\n", "rev-from-the-last-upgrade")
    secret, pod = revisions(await render_against(kube, tmp_path, ["key-one", "key-three"]))
    assert secret == pod != "rev-from-the-last-upgrade"
    assert len(secret) == 32 and secret.isalnum()
