# The front door. `make run` serves the demo config on this machine; `make test` runs every tier
# that can run here. Both set up .venv themselves (Python 3.11+, PyPI only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
CONFIG ?= server/demo/config.yaml
PYTEST_ARGS ?=

.PHONY: run test test-unit lint bench bench-gpu venv demo-models generate clean tools docs

$(VENV)/.installed: server/pyproject.toml operator/pyproject.toml requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt -e 'server[diffusers,provenance,acceleration]' -e operator
	touch $@

venv: $(VENV)/.installed

.demo/tiny-%/model_index.json: $(VENV)/.installed
	$(BIN)/tinyimg make-tiny-model --family $* --out .demo/tiny-$*

.demo/tiny-%-lora/pytorch_lora_weights.safetensors: $(VENV)/.installed
	$(BIN)/tinyimg make-tiny-lora --family $* --out .demo/tiny-$*-lora

demo-models: .demo/tiny-sdxl/model_index.json .demo/tiny-flux/model_index.json \
	.demo/tiny-sdxl-lora/pytorch_lora_weights.safetensors .demo/tiny-flux-lora/pytorch_lora_weights.safetensors

run: venv demo-models
	$(BIN)/tinyimg serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: venv tools lint docs
	$(BIN)/pytest tests $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: venv demo-models
	$(BIN)/python bench/run_cpu.py
	$(BIN)/python bench/vs_litserve.py

# On a machine with one H100/H200 (a CUDA build of torch in .venv): full-size SDXL, FLUX.1-schnell and
# FLUX.1-dev with random weights, the bare pipeline against each acceleration tier of the server; JSON
# and a markdown table into bench/out/. `BENCH_GPU_ARGS="--tiny --device cpu"` checks it on a CPU.
BENCH_GPU_ARGS ?=
bench-gpu: venv
	$(BIN)/python bench/gpu_bench.py $(BENCH_GPU_ARGS)

# helm and kubectl for the chart and cluster tests (tests/chart, tests/cluster), pinned; see .ci/get-helm.
tools: .tools/helm/helm .tools/kubectl/kubectl .tools/moto/bin/moto_server

.tools/helm/helm .tools/kubectl/kubectl &: .ci/get-helm
	.ci/get-helm

# moto's S3 server, the S3 double of the result-store tests (tests/support/stores.py), in a venv of
# its own: its botocore needs python-dateutil<3, the kubernetes client >=3.
.tools/moto/bin/moto_server:
	$(PYTHON) -m venv .tools/moto
	.tools/moto/bin/pip install --quiet 'moto[server]==5.2.6'

# Generated files checked by tests: the ImageModel CRD (from ModelSpec), the chart's values schema
# for `models`, and the operator's golden manifests.
generate: venv
	$(BIN)/tinyimg-operator crd > crds/imagemodels.tinyimg.io.yaml
	cp crds/imagemodels.tinyimg.io.yaml charts/tinyimg/crds/
	$(BIN)/tinyimg-operator values-schema charts/tinyimg/values.schema.json > charts/tinyimg/values.schema.json.new
	mv charts/tinyimg/values.schema.json.new charts/tinyimg/values.schema.json
	for m in sdxl flux; do \
	  env -u TINYIMG_SERVER_IMAGE -u TINYIMG_IMAGE_PULL_POLICY \
	    $(BIN)/tinyimg-operator manifests crds/examples/$$m.yaml > tests/unit/operator/golden/$$m.yaml || exit 1; \
	done
	$(BIN)/python docs/generate.py

# The documentation site into site/ (offline: no web fonts or scripts from elsewhere); --strict
# fails on a broken link or a page missing from the nav. The reference pages come from `make generate`.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) .demo .tools
