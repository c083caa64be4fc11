"""Durable jobs from the chart: `redis.enabled` deploys a Redis (StatefulSet, volume, password
Secret, NetworkPolicy), `redis.url` + `redis.existingSecret` point at one you run; `storage.s3.*`
or `storage.pvc.*` say where results go. The operator, run with the chart's env, passes all of it
to every model pod; the router gets the same Redis and store."""

from __future__ import annotations

import pytest

from tests.chart.helm import find, one, render, template
from tests.chart.test_server_settings import pod_config
from tinyimg.durable.results import DirResultStore, S3ResultStore, parse_result_store_url


def router_container(objects):
    return one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]


def test_the_charts_own_redis_and_a_shared_results_volume(tmp_path):
    objects = render(sets=("redis.enabled=true", "storage.pvc.create=true"))
    redis = one(objects, "StatefulSet", "-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["redis-server"]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)" and args[args.index("--appendonly") + 1] == "yes"
    secret = one(objects, "Secret", "-redis")
    assert len(secret["data"]["password"]) > 20
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "password"}
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert one(objects, "Service", "-redis")["spec"]["ports"][0]["port"] == 6379
    policy = one(objects, "NetworkPolicy", "-redis")
    allowed = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in policy["spec"]["ingress"][0]["from"]]
    assert sorted(allowed) == ["model-server", "router"] and policy["spec"]["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    claim = one(objects, "PersistentVolumeClaim", "-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    config, pod = pod_config(objects, {})
    jobs = config.jobs_config()
    assert jobs.redis_url == f"redis://{redis['metadata']['name']}:6379/0"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "results")
    assert jobs.result_store is not None and jobs.result_store.dir == mount["mountPath"]
    volume = next(v for v in pod["volumes"] if v["name"] == "results")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "password"}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    router = router_container(objects)
    assert f"--redis-url={jobs.redis_url}" in router["args"]
    assert f"--result-store={mount['mountPath']}" in router["args"]
    assert any(m["name"] == "results" and m["mountPath"] == mount["mountPath"] for m in router["volumeMounts"])
    assert {e["name"] for e in router["env"]} >= {"REDIS_PASSWORD"}


def test_your_own_redis_and_an_s3_bucket():
    sets = ("redis.url=redis://redis.infra:6379/2", "redis.existingSecret=infra-redis", "storage.s3.bucket=images",
            "storage.s3.endpoint=http://minio.infra:9000", "storage.s3.region=eu-west-1", "storage.s3.prefix=tinyimg",
            "storage.s3.credentialsSecret=minio-creds")
    objects = render(sets=sets)
    assert not find(objects, "StatefulSet") and not find(objects, "PersistentVolumeClaim", "-results")
    config, pod = pod_config(objects, {})
    jobs = config.jobs_config()
    assert jobs.redis_url == "redis://redis.infra:6379/2"
    assert jobs.result_store is not None and jobs.result_store.s3 is not None
    s3 = jobs.result_store.s3
    assert (s3.bucket, s3.endpoint, s3.region, s3.prefix) == ("images", "http://minio.infra:9000", "eu-west-1", "tinyimg")
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "minio-creds"}}]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "infra-redis"
    router = router_container(objects)
    store_arg = next(a for a in router["args"] if a.startswith("--result-store="))
    store = parse_result_store_url(store_arg.split("=", 1)[1])
    assert isinstance(store, S3ResultStore) and store.description == "s3 images/tinyimg at http://minio.infra:9000"
    assert router["envFrom"] == [{"secretRef": {"name": "minio-creds"}}]


def test_a_redis_without_a_result_store_is_refused():
    result = template(sets=("redis.enabled=true",))
    assert result.returncode != 0
    assert "set storage.s3.bucket or storage.pvc" in result.stderr


def test_without_redis_nothing_changes():
    objects = render()
    assert not find(objects, "StatefulSet") and not find(objects, "Secret", "-redis")
    router = router_container(objects)
    assert not [a for a in router["args"] if a.startswith(("--redis-url", "--result-store"))]
    config, pod = pod_config(objects, {})
    assert config.jobs is None or config.jobs.redis_url is None
    assert "REDIS_PASSWORD" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_router_result_store_flag_takes_a_directory_or_an_s3_url(tmp_path):
    assert isinstance(parse_result_store_url(str(tmp_path)), DirResultStore)
    with pytest.raises(ValueError, match="expected s3://BUCKET"):
        parse_result_store_url("s3://bucket/p?colour=blue")


def test_keda_scales_on_the_shared_queue_and_wakes_a_model_at_zero():
    from tinyimg.durable.redisjobs import GROUP, queue_key

    sets = ("redis.enabled=true", "storage.pvc.create=true", "autoscaling.controller=keda", "models[0].name=m1",
            "models[0].family=flux", "models[0].source=/m", "models[0].autoscaling.enabled=true",
            "models[0].autoscaling.minReplicas=0")
    objects = render(sets=sets)
    scaled = one(objects, "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 0
    trigger = next(t for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams")
    meta = trigger["metadata"]
    # The stream and group the pods read (tinyimg.durable.redisjobs), on the chart's Redis Service.
    assert (meta["stream"], meta["consumerGroup"]) == (queue_key("m1"), GROUP)
    assert meta["address"] == f"{one(objects, 'Service', '-redis')['metadata']['name']}:6379"
    assert meta["activationLagCount"] == "0"  # one queued job wakes a model at zero
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": one(objects, "Secret", "-redis")["metadata"]["name"],
                                                "key": "password"}]
