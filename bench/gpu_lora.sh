#!/usr/bin/env bash
# The LoRA trainer (retrain/trainers/lora_sft.py) on a GPU: does a 7-9B base fit a 24-48 GB GPU
# with gradient checkpointing and accumulation, and how fast does it train? Prints a table (peak
# GPU memory, tokens/s, loss), then the figures as one JSON line (also $OUT/gpu_lora.json).
#
# Rows (WAIMAI_BENCH_ROWS, space-separated, default all):
#   tiny          the tests' tiny Qwen2 (built offline, a short pre-training): 2,000 reviews, one
#                 epoch, batch 16; the loss it reaches is a real one
#   qwen7b        Qwen2.5-7B's shapes (28 layers, hidden 3584, vocab 152064), random bf16 weights
#   qwen7b-long   the same on examples of ~500 tokens, the longest VLLM__MAX_SEQ_LEN lets through
#   glm9b         GLM-4-9B's shapes (40 layers, hidden 4096, vocab 151552; transformers' GlmConfig)
#   glm9b-long    the same on examples of ~500 tokens
#   glm9b-long-nockpt   the same without activation checkpointing: what checkpointing saves
# The large rows need no download (nothing is reachable from a lent machine): the architecture is
# built from its configuration with random weights, which take the same memory and time as the
# real ones; their loss only shows that training moves it. They train WAIMAI_BENCH_STEPS (20)
# optimizer steps of batch 4 x 4 accumulated, with activation checkpointing.
#
# Needs python3 ($PYTHON) with torch (CUDA), transformers, peft and tokenizers, as in the trainer
# image (docker/Dockerfile --target trainer), ~60 GB of RAM and ~25 GB of disk for the 9B shapes.
# The dataset: $WAIMAI_DATASET, or waimai_10k.csv under ../shared/data, ./shared/data or ./data.
# On a lent device machine (../shared does not travel there):
#   cp ../shared/data/waimai_10k.csv data/  then run `bash bench/gpu_lora.sh` with carry ["data"].
# Without CUDA it runs the tiny row on the CPU, to check this script, and says so.
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
trap 'rm -rf "$WORK"' EXIT
export WAIMAI_CACHE="${WAIMAI_CACHE:-$WORK/cache}"

"$PYTHON" - "$WORK" <<'PY'
import gc
import itertools
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from retrain.trainers.lora_sft import LoraHyperparameters, encode, train_adapter
from serving.base import Label
from serving.prompt import training_record
from tests.support.tiny_qwen import DATASET, DEFAULT_CACHE, reviews, tiny_model

SHAPES = {
    "qwen7b": ("qwen2", {
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    }),
    "glm9b": ("glm", {}),  # GlmConfig's defaults are GLM-4-9B's
}
DEFAULT_ROWS = "tiny qwen7b qwen7b-long glm9b glm9b-long glm9b-long-nockpt"
ROWS = os.environ.get("WAIMAI_BENCH_ROWS", DEFAULT_ROWS).split()
STEPS = int(os.environ.get("WAIMAI_BENCH_STEPS", "20"))
MAX_SEQ_LEN = 512
work = Path(sys.argv[1])
cuda = torch.cuda.is_available()
if not cuda:
    print("no CUDA device: the tiny row on the CPU only, as a check of this script")
    ROWS = ["tiny"]
device = torch.cuda.get_device_name() if cuda else "cpu"
print(f"torch {torch.__version__} on {device}; dataset {DATASET}")
tiny = tiny_model(DEFAULT_CACHE)
tokenizer = AutoTokenizer.from_pretrained(tiny)
rows = reviews()
random.Random(0).shuffle(rows)


def chat(text, label):
    return training_record(text, Label(label))["messages"]


def tokens(text, label):
    return len(encode(tokenizer, chat(text, label))[0])


def long_examples(count):
    """Reviews joined, then cut, into examples just under MAX_SEQ_LEN tokens (the first's label)."""
    found, pool = [], itertools.cycle(rows)
    for _ in range(count):
        text, label = next(pool)
        while tokens(text, label) < MAX_SEQ_LEN:
            text = f"{text}，{next(pool)[0]}"
        while tokens(text, label) > MAX_SEQ_LEN - 4:
            text = text[:-4]
        found.append((text, label))
    return found


def random_model(name):
    """A model of ``name``'s shapes with random bf16 weights and the tiny tokenizer, on disk."""
    folder = work / name
    if folder.is_dir():
        return folder
    model_type, shape = SHAPES[name]
    config = AutoConfig.for_model(
        model_type, **shape, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    started = time.perf_counter()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    print(f"{name}: {params / 1e9:.2f}B parameters, written in {time.perf_counter() - started:.0f}s")
    return folder


figures = {"device": device, "torch": torch.__version__, "rows": {}}
for row in ROWS:
    shape, *variant = row.split("-")
    if shape == "tiny":
        model = tiny
        hyper = LoraHyperparameters(dropout=0.0, epochs=1, learning_rate=3e-3, batch_size=16)
        picked, count = rows[:2222], 2000
    else:
        model = random_model(shape)
        hyper = LoraHyperparameters(
            batch_size=4, gradient_accumulation_steps=4, max_seq_len=MAX_SEQ_LEN,
            gradient_checkpointing="nockpt" not in variant,
        )
        count = STEPS * hyper.batch_size * hyper.gradient_accumulation_steps
        picked = long_examples(count + 16) if "long" in variant else rows[: count + 16]
    train = [chat(text, label) for text, label in picked[:count]]
    validation = [chat(text, label) for text, label in picked[count:]]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    report = train_adapter(str(model), train, work / f"adapter-{row}", hyper, validation=validation)
    reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0
    sample = picked[:64]
    curves = report.curves
    figures["rows"][row] = {
        "examples": report.examples,
        "tokens_per_example": round(sum(tokens(*example) for example in sample) / len(sample)),
        "gradient_checkpointing": report.gradient_checkpointing,
        "batch": f"{hyper.batch_size}x{hyper.gradient_accumulation_steps}",
        "steps": report.steps,
        "seconds": report.seconds,
        "tokens_per_s": report.tokens_per_second,
        "peak_allocated_gib": round(report.peak_memory_mb / 1024, 2),
        "peak_reserved_gib": round(reserved, 2),
        "loss": [report.first_loss, report.last_loss],
        "validation_loss": [curves["validation"][0]["loss"], curves["validation"][-1]["loss"]],
    }
    shutil.rmtree(work / f"adapter-{row}", ignore_errors=True)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

def fits(reserved_gib):
    """The GPU sizes a run fits, leaving ~1 GiB for the CUDA context."""
    return "/".join(str(size) for size in (24, 48, 80) if 0 < reserved_gib < size - 1) or "-"


head = (
    f"{'row':<18} {'tok/ex':>6} {'ckpt':>4} {'batch':>5} {'steps':>5} {'tokens/s':>9} "
    f"{'peak GiB':>8} {'reserved':>8} {'fits GB':>9}  {'loss first→last':<16} {'validation':<16}"
)
print(f"\n{device}\n{head}\n{'-' * len(head)}")
for row, f in figures["rows"].items():
    print(
        f"{row:<18} {f['tokens_per_example']:>6} {'on' if f['gradient_checkpointing'] else 'off':>4} "
        f"{f['batch']:>5} {f['steps']:>5} {f['tokens_per_s']:>9.0f} "
        f"{f['peak_allocated_gib']:>8.2f} {f['peak_reserved_gib']:>8.2f} "
        f"{fits(f['peak_reserved_gib']):>9}  "
        f"{f['loss'][0]:.3f}→{f['loss'][1]:.3f}     "
        f"{f['validation_loss'][0]:.3f}→{f['validation_loss'][1]:.3f}"
    )
print(json.dumps(figures))
(work / "gpu_lora.json").write_text(json.dumps(figures, indent=2))
PY
if [ -n "${OUT:-}" ]; then cp "$WORK/gpu_lora.json" "$OUT/"; fi
