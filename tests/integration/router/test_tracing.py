"""Traces end to end: a real router and two real `tinyimg serve` processes (tiny Flux, CPU), all
exporting OTLP/HTTP (only OTEL_* variables set) to a receiver in this test that decodes the
``opentelemetry-proto`` messages. One request is one trace, under the client's ``traceparent``:
router server span -> admission and forward -> the pod's server span -> queue, pipeline (encode
prompt, denoise with a step event each, VAE decode) and image encoding. Two batched requests link
to the same pipeline span. The latency histograms carry the trace as an exemplar in OpenMetrics,
the classic format is unchanged, log lines carry the trace and span ids, and a job's webhook
carries its trace's ``traceparent``."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.jobs_client import build_jobs_config
from tests.support.otlp import ReceivedSpan, otlp_env, otlp_receiver
from tests.support.processes import TINYIMG, running_router, spawn, wait_until_ready
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tests.support.webhooks import running_receiver

MODEL = "tiny-flux"
PROMPT = "a secret-looking kite over the sea"
SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture(scope="module")
def stack(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracing")
    with otlp_receiver() as receiver, running_receiver() as (hooks, hook_url):
        pods = {}
        for name in ("pod-a", "pod-b"):
            (tmp / name).mkdir()
            config = build_jobs_config(tiny_model_dirs, tmp / name)
            config.api_keys_file = None  # the router in front holds no keys here
            config.models[0].runtime.max_batch_wait_ms = 400  # two requests sent together share a batch
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config.to_wire()))
            pods[name] = spawn(name, ["serve", "--config", str(tmp / f"{name}.yaml")], tmp, env=otlp_env(receiver))
        try:
            for pod in pods.values():
                wait_until_ready(pod)
            args = [f"--backend={MODEL}={p.url}" for p in pods.values()]
            with running_router(args, tmp, env=otlp_env(receiver)) as router:
                yield {"receiver": receiver, "router": router, "pods": pods, "hooks": hooks, "hook_url": hook_url}
        finally:
            for pod in pods.values():
                pod.stop()


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def one(spans: list[ReceivedSpan], name: str, service: str | None = None) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and (service is None or s.service == service)]
    assert len(found) == 1, f"{len(found)} spans named {name!r} ({service}): {[(s.service, s.name) for s in spans]}"
    return found[0]


def wait_for_in_flight(url: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/status").json()["models"][MODEL]["in_flight"] == 0:
        assert time.monotonic() < deadline, "the blocking request never started"
        time.sleep(0.02)


def generate(url: str, headers: dict[str, str] | None = None, seed: int = 1) -> httpx.Response:
    body = {"model": MODEL, "prompt": PROMPT, "seed": seed, "steps": 3}
    response = httpx.post(f"{url}/generate", json=body, headers=headers or {}, timeout=120)
    assert response.status_code == 200, response.text
    return response


def test_one_request_is_one_trace_from_the_clients_traceparent_to_the_denoising_steps(stack):
    receiver = stack["receiver"]
    parent, trace_id, client_span = new_traceparent()
    answer = generate(stack["router"].url, {"traceparent": parent})

    wanted = {"POST /generate", "router.admission", "router.forward", "queue", "pipeline", "encode_prompt", "denoise",
              "vae_decode", "encode_image"}
    spans = receiver.wait_for(lambda _: (found := receiver.trace(trace_id))
                              and wanted <= {s.name for s in found} and len([s for s in found if s.kind == SERVER]) == 2
                              and found)
    router_span = one(spans, "POST /generate", "tinyimg-router")
    pod_span = one(spans, "POST /generate", "tinyimg-server")
    admission, forward = one(spans, "router.admission"), one(spans, "router.forward")
    queue, pipeline, encode = one(spans, "queue"), one(spans, "pipeline"), one(spans, "encode_image")
    # parent -> child, as the request went: client -> router -> pod -> queue/pipeline/encode -> phases
    assert router_span.parent_id == client_span and router_span.kind == SERVER
    assert admission.parent_id == router_span.span_id and forward.parent_id == router_span.span_id
    assert forward.kind == CLIENT and forward.attributes["http.response.status_code"] == 200
    assert pod_span.parent_id == forward.span_id and pod_span.kind == SERVER
    assert forward.attributes["server.address"] in {p.url for p in stack["pods"].values()}
    for child in (queue, pipeline, encode):
        assert child.parent_id == pod_span.span_id, child.name
    for phase in ("encode_prompt", "denoise", "vae_decode"):
        assert one(spans, phase).parent_id == pipeline.span_id
    # in time order: the queue wait, then the call's phases, then the encoding
    prompt_phase, denoise, decode = one(spans, "encode_prompt"), one(spans, "denoise"), one(spans, "vae_decode")
    assert queue.end_ns <= pipeline.start_ns + 1_000 and pipeline.end_ns <= encode.start_ns
    assert prompt_phase.end_ns <= denoise.start_ns + 1_000 and denoise.end_ns <= decode.start_ns + 1_000
    assert [e[1]["tinyimg.step"] for e in denoise.events] == [1, 2, 3]
    assert pipeline.attributes["tinyimg.model"] == MODEL and pipeline.attributes["tinyimg.steps"] == 3
    assert pipeline.attributes["tinyimg.batch.requests"] == 1 and pipeline.attributes["tinyimg.device"] == "cpu"
    assert pod_span.attributes["tinyimg.request_id"] == answer.json()["request_id"]
    # never the prompt, anywhere
    assert all(PROMPT not in json.dumps(s.attributes) + json.dumps(s.events) for s in spans)


def test_two_batched_requests_link_to_the_same_pipeline_span(stack):
    receiver, pod = stack["receiver"], stack["pods"]["pod-a"]
    parents = [new_traceparent() for _ in range(2)]
    with ThreadPoolExecutor(3) as pool:
        # A longer request holds the device while the two others queue: they then share one batch.
        blocker = pool.submit(lambda: httpx.post(f"{pod.url}/generate", json={"model": MODEL, "prompt": "x", "steps": 30},
                                                 timeout=120))
        wait_for_in_flight(pod.url)
        answers = list(pool.map(lambda p: generate(pod.url, {"traceparent": p[0]}, seed=5), parents))
        assert blocker.result().status_code == 200
    assert [a.json()["batch_size"] for a in answers] == [2, 2]
    traces = [p[1] for p in parents]

    def pipeline_ids(spans: list[ReceivedSpan]) -> list[set[str]] | None:
        """Per trace: the pipeline span it holds, or the one its batch span links to."""
        found = []
        for trace_id in traces:
            mine = [s for s in spans if s.trace_id == trace_id]
            ids = {s.span_id for s in mine if s.name == "pipeline"}
            ids |= {link[1] for s in mine if s.name == "batch" for link in s.links}
            found.append(ids)
        return found if all(found) else None

    ids = receiver.wait_for(pipeline_ids)
    assert len(ids[0]) == 1 and ids[0] == ids[1]
    [pipeline] = [s for s in receiver.snapshot() if s.span_id in ids[0] and s.name == "pipeline"]
    assert pipeline.attributes["tinyimg.batch.requests"] == 2
    other = traces[1] if pipeline.trace_id == traces[0] else traces[0]
    assert (other, next(s.span_id for s in receiver.trace(other) if s.name == "POST /generate")) in pipeline.links


def test_openmetrics_carries_trace_ids_as_exemplars_and_the_classic_format_is_unchanged(stack):
    _, trace_id, _ = new_traceparent()
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    generate(stack["router"].url, {"traceparent": parent}, seed=9)
    # The router's latest upstream sample is this request's; it was served by one of the pods.
    for procs, histogram in (([stack["router"]], "tinyimg_router_upstream_duration_seconds_bucket"),
                             (list(stack["pods"].values()), "tinyimg_request_duration_seconds_bucket")):
        exemplars = []
        for proc in procs:
            open_metrics = httpx.get(f"{proc.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
            assert open_metrics.text.endswith("# EOF\n")
            exemplars += [line for line in open_metrics.text.splitlines() if line.startswith(histogram) and " # {" in line]
            classic = httpx.get(f"{proc.url}/metrics")
            assert classic.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert " # {" not in classic.text and histogram in classic.text
        assert any(f'trace_id="{trace_id}"' in line for line in exemplars), (histogram, exemplars)


def test_log_lines_carry_the_trace_and_span_ids_beside_the_request_id(stack):
    parent, trace_id, _ = new_traceparent()
    request_id = generate(stack["router"].url, {"traceparent": parent}, seed=11).json()["request_id"]

    def access_lines() -> list[dict]:  # written once the answer is sent: wait for both
        lines = []
        for proc in (stack["router"], *stack["pods"].values()):
            for raw in proc.log.read_text().splitlines():
                entry = json.loads(raw) if raw.startswith("{") else {}
                if entry.get("request_id") == request_id and entry.get("logger") == "tinyimg.access":
                    lines.append(entry)
        return lines

    deadline = time.monotonic() + 10
    while len(lines := access_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(lines) == 2, lines  # the router's access line and the pod's
    assert all(line["trace_id"] == trace_id and len(line["span_id"]) == 16 for line in lines)


def test_a_jobs_webhook_carries_its_traces_traceparent(stack):
    pod, hooks, receiver = stack["pods"]["pod-b"], stack["hooks"], stack["receiver"]
    parent, trace_id, _ = new_traceparent()
    before = len(hooks.calls)
    created = httpx.post(f"{pod.url}/v1/jobs", json={"model": MODEL, "prompt": PROMPT, "steps": 2, "webhook": stack["hook_url"]},
                         headers={"traceparent": parent}, timeout=30)
    assert created.status_code == 202, created.text
    hooks.wait_for_calls(before + 1)
    _, headers, _ = hooks.calls[before]
    assert headers["traceparent"].split("-")[1] == trace_id
    spans = receiver.wait_for(lambda _: (found := receiver.trace(trace_id)) and {"webhook", "pipeline"} <= {s.name for s in found}
                              and found)
    webhook = one(spans, "webhook")
    assert webhook.kind == CLIENT and webhook.attributes["tinyimg.attempt"] == 1
    assert headers["traceparent"].split("-")[2] == webhook.span_id  # the receiver's parent is the attempt


def test_an_otel_setting_it_cannot_honour_stops_the_process_with_the_variable_named(tmp_path):
    result = subprocess.run([TINYIMG, "router", "--backend", f"{MODEL}=http://127.0.0.1:9"], capture_output=True, text=True,
                            env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                 "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2 and "OTEL_EXPORTER_OTLP_PROTOCOL" in result.stderr and "http/protobuf" in result.stderr


def test_the_tracing_benchmark_runs_and_reports_its_ratios(tmp_path):
    """bench/tracing.py on a tiny budget (no baseline checkout): it cannot rot unnoticed."""
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, str(root / "bench" / "tracing.py"), "--requests", "2", "--hops", "5"],
                            capture_output=True, text=True, timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| unset |" in result.stdout and "| set |" in result.stdout and "set / unset server p50" in result.stdout
    assert int(re.search(r"exported: (\d+) bytes", result.stdout).group(1)) > 0
