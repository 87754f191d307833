"""A tiny Qwen2 chat model built offline, for testing real vLLM and the LoRA trainer on a CPU.

Random weights, a byte-level BPE tokenizer trained on the dataset's reviews, a Qwen-style chat
template, then a short pre-training on the chat format so that LoRA has something to adapt. The
pre-training answers are drawn at random: the base model learns the format and the two answer
words, not which review gets which, so any skill at the task comes from the adapter.

Other ``ChatFormat``s give the same architecture the quirks of other model families: GLM-4's chat
template, or a ``generation_config.json`` with Qwen2.5-Instruct's sampling defaults.

Built once into a content-keyed folder (the builder's source and the dataset) and reused.
``python -m tests.support.tiny_qwen [CACHE_DIR]`` builds it and prints its folder.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from serving.prompt import ANSWER_WORDS, SYSTEM_PROMPT

REPO = Path(__file__).resolve().parents[2]
DATASET = Path(os.environ.get("WAIMAI_DATASET", REPO.parent / "shared" / "data" / "waimai_10k.csv"))
DEFAULT_CACHE = Path(os.environ.get("WAIMAI_CACHE", REPO / ".cache"))

RECIPE = 1
VOCAB_SIZE = 4096
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# GLM-4's: no newline after the generation prompt, so an answer is rendered after a "\n".
GLM_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)
# What Qwen2.5-1.5B-Instruct's generation_config.json sets; vLLM applies it by default.
QWEN_INSTRUCT_SAMPLING = {
    "do_sample": True,
    "repetition_penalty": 1.1,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}
SYSTEM_PROMPT_REPEATS = 20_000
PRETRAIN_EXAMPLES = 3000
PRETRAIN_BATCH = 32
PRETRAIN_LR = 3e-3
SEED = 7


@dataclass(frozen=True)
class ChatFormat:
    """What a model family brings besides its weights: chat template, special tokens, defaults."""

    name: str
    template: str
    special_tokens: tuple[str, ...]
    """The first one pads; ``eos`` is one of them."""
    eos: str
    system_prompt_is_one_token: bool = False
    """Train the tokenizer so that the system prompt is a token of its own: then the answer
    words are among the prompt's tokens only where the review itself contains them."""
    sampling: dict[str, float | bool] = field(default_factory=dict)
    """Sampling defaults written to generation_config.json."""


QWEN = ChatFormat(
    "qwen2", CHAT_TEMPLATE, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "<|im_end|>"
)
GLM = ChatFormat(
    "glm4-style",
    GLM_CHAT_TEMPLATE,
    ("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>"),
    "<|endoftext|>",
)
QWEN_INSTRUCT_DEFAULTS = dataclasses.replace(
    QWEN,
    name="qwen2-sampling-defaults",
    system_prompt_is_one_token=True,
    sampling=QWEN_INSTRUCT_SAMPLING,
)


def reviews(dataset: Path = DATASET) -> list[tuple[str, int]]:
    with dataset.open(encoding="utf-8") as file:
        return [(row["review"].strip(), int(row["label"])) for row in csv.DictReader(file)]


def cache_key(dataset: Path = DATASET, chat: ChatFormat = QWEN) -> str:
    """Changes with the dataset or the recipe (bump RECIPE when the build changes otherwise)."""
    recipe: list[object] = [RECIPE, VOCAB_SIZE, chat.template, PRETRAIN_EXAMPLES, PRETRAIN_LR, SEED]
    if chat != QWEN:
        recipe += [dataclasses.asdict(chat), SYSTEM_PROMPT_REPEATS]
    digest = hashlib.sha256(json.dumps(recipe).encode())
    digest.update(dataset.read_bytes())
    return digest.hexdigest()[:12]


def tiny_model(
    cache: Path = DEFAULT_CACHE, dataset: Path = DATASET, chat: ChatFormat = QWEN
) -> Path:
    """The folder of the tiny model (config, weights, tokenizer, chat template), built if new."""
    target = cache / f"tiny-{chat.name}-{cache_key(dataset, chat)}"
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".tiny-{chat.name}."))
    try:
        _build(staging, reviews(dataset), chat)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _build(directory: Path, rows: list[tuple[str, int]], chat: ChatFormat) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(SEED)
    tokenizer = _train_tokenizer([text for text, _ in rows], chat)
    eos = tokenizer.convert_tokens_to_ids(chat.eos)
    pad = tokenizer.convert_tokens_to_ids(chat.special_tokens[0])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    _pretrain(model, tokenizer, rows)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, **chat.sampling
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _train_tokenizer(texts: list[str], chat: ChatFormat):  # a transformers tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(chat.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    system_prompts = [SYSTEM_PROMPT] * (
        SYSTEM_PROMPT_REPEATS if chat.system_prompt_is_one_token else 1
    )
    corpus = [*texts, *system_prompts, *ANSWER_WORDS, "system user assistant"]
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        eos_token=chat.eos,
        pad_token=chat.special_tokens[0],
        additional_special_tokens=list(chat.special_tokens[1:]),
    )
    tokenizer.chat_template = chat.template
    return tokenizer


def _pretrain(model, tokenizer, rows: list[tuple[str, int]]) -> None:
    """Language modelling on chat-format reviews whose answers are drawn at random."""
    import torch

    chooser = random.Random(SEED)
    sample = chooser.sample(rows, min(PRETRAIN_EXAMPLES, len(rows)))
    chats = [
        tokenizer.apply_chat_template(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
                {"role": "assistant", "content": chooser.choice(ANSWER_WORDS)},
            ],
            tokenize=False,
        )
        for text, _ in sample
    ]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR)
    model.train()
    started = time.perf_counter()
    for start in range(0, len(chats), PRETRAIN_BATCH):
        batch = tokenizer(
            chats[start : start + PRETRAIN_BATCH],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=256,
            add_special_tokens=False,
        )
        batch = batch.to(device)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.to("cpu").eval()
    print(
        f"tiny model: pre-trained on {len(chats)} chats in {time.perf_counter() - started:.1f}s, "
        f"last loss {loss.item():.2f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    print(tiny_model(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CACHE))
