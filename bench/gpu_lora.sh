#!/usr/bin/env bash
# The LoRA trainer's CUDA path, as a smoke check of a few minutes on a GPU machine.
#
# Builds the tiny Qwen2 model of the tests offline (random weights, a tokenizer trained on the
# dataset, a short pre-training), trains LoRA adapters on it with retrain/trainers/lora_sft.py
# on CUDA (2,000 reviews, 3 epochs, batch 16 and batch 64), and prints steps/s and the peak GPU
# memory of each run, then one JSON line with all figures.
#
# Needs python3 with torch (CUDA), transformers, peft and tokenizers: the GPU image has them; the
# rest of the project is not imported. The dataset: $WAIMAI_DATASET, or waimai_10k.csv under
# ../shared/data, ./shared/data or ./data. The figures also go to $OUT/gpu_lora.json if $OUT is set.
# On a lent device machine (../shared does not travel there):
#   cp ../shared/data/waimai_10k.csv data/  then run `bash bench/gpu_lora.sh` with carry ["data"].
# The CPU run of the same (tests) does ~2 steps/s at batch 16 on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -z "${WAIMAI_DATASET:-}" ]; then
    for candidate in ../shared/data shared/data data; do
        if [ -f "$candidate/waimai_10k.csv" ]; then
            WAIMAI_DATASET="$(cd "$candidate" && pwd)/waimai_10k.csv"
            export WAIMAI_DATASET
            break
        fi
    done
fi
[ -n "${WAIMAI_DATASET:-}" ] || { echo "no dataset: set WAIMAI_DATASET" >&2; exit 1; }
WORK=$(mktemp -d)
export WAIMAI_CACHE="$WORK/cache"

"$PYTHON" - "$WORK" <<'PY'
import json
import random
import sys
import time
from pathlib import Path

import torch

from retrain.trainers.lora_sft import LoraHyperparameters, train_adapter
from serving.base import Label
from serving.prompt import training_record
from tests.support.tiny_qwen import DATASET, DEFAULT_CACHE, reviews, tiny_model

assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine"
work = Path(sys.argv[1])
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; dataset {DATASET}")
started = time.perf_counter()
model = tiny_model(DEFAULT_CACHE)
print(f"tiny model built in {time.perf_counter() - started:.1f}s")

rows = reviews()
random.Random(0).shuffle(rows)
chats = [training_record(text, Label(label))["messages"] for text, label in rows[:2000]]
figures = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
for batch in (16, 64):
    hyper = LoraHyperparameters(
        rank=8, alpha=16, dropout=0.0, epochs=3, learning_rate=3e-3, batch_size=batch
    )
    report = train_adapter(str(model), chats, work / f"adapter-b{batch}", hyper)
    assert report.device == "cuda", report
    print(
        f"batch {batch}: {report.steps} steps in {report.seconds:.1f}s = "
        f"{report.steps_per_second:.1f} steps/s, peak {report.peak_memory_mb:.0f} MiB, "
        f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}"
    )
    figures[f"batch{batch}"] = {
        "steps": report.steps,
        "steps_per_s": report.steps_per_second,
        "peak_mib": report.peak_memory_mb,
        "last_loss": report.last_loss,
    }
print(json.dumps(figures))
(work / "gpu_lora.json").write_text(json.dumps(figures, indent=2))
PY
if [ -n "${OUT:-}" ]; then cp "$WORK/gpu_lora.json" "$OUT/"; fi
