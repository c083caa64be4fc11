#!/usr/bin/env bash
# End-to-end check on a kind cluster: build the images (CPU variant of the server), create a
# cluster, load the images, `helm install` the chart, apply an ImageModel with a tiny model, wait
# for Ready and generate a PNG through the router.
#
# Needs docker, kind, kubectl, helm and curl; runs in CI (.github/workflows/e2e.yaml) and on any
# machine with Docker. It cannot run on the project's development machines (no Docker there).
#
# Settings (environment): CLUSTER (kind cluster name, default tinyimg-e2e), NAMESPACE (tinyimg),
# TAG (image tag, e2e), KEEP_CLUSTER=1 (leave the cluster up afterwards), OUT (where the image
# and the diagnostics go, default .e2e/), HELM (helm binary, default helm).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER="${CLUSTER:-tinyimg-e2e}"
NAMESPACE="${NAMESPACE:-tinyimg}"
TAG="${TAG:-e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
OUT="${OUT:-$PWD/.e2e}"
HELM="${HELM:-helm}"
SERVER_IMAGE="tinyimg-server:$TAG"
OPERATOR_IMAGE="tinyimg-operator:$TAG"
RELEASE=tinyimg
MODEL=tiny-sdxl
LOCAL_PORT=18000
PNG_MAGIC=89504e470d0a1a0a

log() { printf '==> %s\n' "$*"; }

diagnose() {
    log "diagnostics in $OUT"
    kubectl -n "$NAMESPACE" get all,imagemodels,events -o wide >"$OUT/resources.txt" 2>&1 || true
    kubectl -n "$NAMESPACE" describe pods,imagemodels >"$OUT/describe.txt" 2>&1 || true
    kubectl -n "$NAMESPACE" logs --all-containers --prefix --tail=-1 \
        -l app.kubernetes.io/name=tinyimg >"$OUT/logs.txt" 2>&1 || true
}

finish() {
    local status=$?
    if [[ -n "${forward_pid:-}" ]]; then
        kill "$forward_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 ]]; then
        diagnose
    fi
    if [[ "$KEEP_CLUSTER" != 1 ]]; then
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
    exit "$status"
}

mkdir -p "$OUT"
trap finish EXIT

log "building $SERVER_IMAGE (CPU torch, tiny SDXL baked in) and $OPERATOR_IMAGE"
docker build -f Dockerfile.server -t "$SERVER_IMAGE" \
    --build-arg BASE_IMAGE=ubuntu:24.04 \
    --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
    --build-arg TINY_MODELS=sdxl .
docker build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .

log "creating kind cluster $CLUSTER"
clusters="$(kind get clusters)"  # not piped into grep -q: under pipefail, SIGPIPE fails it at random
if ! grep -qx "$CLUSTER" <<< "$clusters"; then
    kind create cluster --name "$CLUSTER" --wait 180s
fi
kubectl config use-context "kind-$CLUSTER"
kind load docker-image --name "$CLUSTER" "$SERVER_IMAGE" "$OPERATOR_IMAGE"

log "installing the chart"
# The router runs from the slim operator image (it carries tinyimg-server[http]; see the README).
"$HELM" upgrade --install "$RELEASE" charts/tinyimg --namespace "$NAMESPACE" --create-namespace \
    --set serverImage.repository=tinyimg-server --set serverImage.tag="$TAG" \
    --set operator.image.repository=tinyimg-operator --set operator.image.tag="$TAG" \
    --set router.image.repository=tinyimg-operator --set router.image.tag="$TAG" \
    --set router.replicas=1 \
    --wait --timeout 5m

log "declaring ImageModel $MODEL"
kubectl -n "$NAMESPACE" apply -f tests/e2e/imagemodel.yaml
kubectl -n "$NAMESPACE" wait --for=condition=Ready "imagemodel/$MODEL" --timeout=10m
kubectl -n "$NAMESPACE" get imagemodels

log "generating an image through the router"
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-router" "$LOCAL_PORT:8000" >"$OUT/port-forward.log" 2>&1 &
forward_pid=$!
request='{"model": "'"$MODEL"'", "prompt": "a red cube on a table", "width": 64, "height": 64, "steps": 2, "seed": 7}'
# The router may need a poll or two to see the pod the ImageModel just reported ready.
rm -f "$OUT/image.png"
for attempt in $(seq 1 30); do
    if curl -sf -X POST "http://127.0.0.1:$LOCAL_PORT/generate" \
        -H 'Content-Type: application/json' -H 'Accept: image/png' \
        -d "$request" -o "$OUT/image.png"; then
        break
    fi
    log "not yet (attempt $attempt), retrying"
    sleep 2
done

if [[ ! -s "$OUT/image.png" ]]; then
    echo "/generate did not answer with an image after 30 attempts" >&2
    exit 1
fi
magic="$(head -c 8 "$OUT/image.png" | od -An -tx1 | tr -d ' \n')"
if [[ "$magic" != "$PNG_MAGIC" ]]; then
    echo "expected a PNG from /generate, got bytes $magic" >&2
    exit 1
fi
log "ok: $OUT/image.png ($(wc -c <"$OUT/image.png") bytes)"
