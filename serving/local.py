"""The embedded CPU backend: character n-grams, TF-IDF and a calibrated linear model.

scikit-learn's own text vectorizers tokenize in Python at ~9k reviews/s; here the n-grams of a
whole batch are hashed with a few numpy array operations instead (~50k reviews/s on one core).
An artifact is a folder holding ``weights.npz`` (plain arrays, loaded without pickle) and
``manifest.json`` (format, settings and the sha256 of the weights).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from serving.base import BackendError, Label, Verdict

ARTIFACT_FORMAT = "waimai-char-ngram-linear/1"
_MIX = np.uint64(0x100000001B3)
_START, _END, _GAP = "\x02", "\x03", "\x00"

Floats = npt.NDArray[np.float64]
Hashes = npt.NDArray[np.uint64]


def char_ngrams(texts: Sequence[str], ngram_max: int) -> tuple[npt.NDArray[np.int64], Hashes]:
    """(document index, 64-bit hash) of every character 1..ngram_max-gram of every text.

    Each text is framed by start/end marks so that n-grams at the edges are features too.
    """
    framed = [_START + t.replace(_GAP, " ") + _END for t in texts]
    lengths = np.fromiter((len(t) + 1 for t in framed), dtype=np.int64, count=len(framed))
    joined = _GAP.join(framed) + _GAP
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    doc = np.repeat(np.arange(len(framed), dtype=np.int64), lengths)
    docs, hashes = [], []
    h = codes.copy()
    for n in range(1, ngram_max + 1):
        m = len(codes) - n + 1
        if n > 1:
            h = h[:m] * _MIX + codes[n - 1 : n - 1 + m] + np.uint64(n)
        inside = (doc[:m] == doc[n - 1 : n - 1 + m]) & (codes[n - 1 : n - 1 + m] != 0)
        docs.append(doc[:m][inside])
        hashes.append(h[inside])
    return np.concatenate(docs), np.concatenate(hashes)


class HashIndex:
    """Maps known 64-bit hashes to their position in a vocabulary: an open-addressing table.

    Lookups are a few vectorized probes into a table 4× the vocabulary, several times faster
    than a binary search over it for a batch of random hashes.
    """

    _GOLDEN = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, vocabulary: Hashes) -> None:
        bits = max(4, int(np.ceil(np.log2(max(len(vocabulary), 1) * 4))))
        self._shift = np.uint64(64 - bits)
        self._keys = np.zeros(1 << bits, dtype=np.uint64)
        self._positions = np.full(1 << bits, -1, dtype=np.int64)
        self._mask = (1 << bits) - 1
        pending = np.arange(len(vocabulary))
        slots = self._slots(vocabulary)
        self._max_probes = 0
        while len(pending):
            self._max_probes += 1
            free = self._positions[slots] < 0
            claim_slots, first = np.unique(slots[free], return_index=True)
            claimed = pending[free][first]
            self._keys[claim_slots] = vocabulary[claimed]
            self._positions[claim_slots] = claimed
            waiting = np.ones(len(pending), dtype=bool)
            waiting[np.flatnonzero(free)[first]] = False
            pending = pending[waiting]
            slots = (slots[waiting] + 1) & self._mask

    def _slots(self, hashes: Hashes) -> npt.NDArray[np.int64]:
        return ((hashes * self._GOLDEN) >> self._shift).astype(np.int64)

    def lookup(self, hashes: Hashes) -> npt.NDArray[np.int64]:
        """The vocabulary position of each hash, or -1 where it is unknown."""
        found = np.full(len(hashes), -1, dtype=np.int64)
        todo = np.arange(len(hashes))
        slots = self._slots(hashes)
        for _ in range(self._max_probes):
            positions = self._positions[slots]
            hit = (positions >= 0) & (self._keys[slots] == hashes[todo])
            found[todo[hit]] = positions[hit]
            go_on = (positions >= 0) & ~hit
            todo, slots = todo[go_on], (slots[go_on] + 1) & self._mask
            if not len(todo):
                break
        return found


@dataclass(frozen=True)
class CharNgramTfidf:
    """A sublinear TF-IDF over a fixed vocabulary of n-gram hashes, rows L2-normalized."""

    vocabulary: Hashes
    idf: Floats
    ngram_max: int
    index: HashIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", HashIndex(self.vocabulary))

    @classmethod
    def fit(cls, texts: Sequence[str], ngram_max: int) -> CharNgramTfidf:
        docs, hashes = char_ngrams(texts, ngram_max)
        order = np.lexsort((docs, hashes))
        hashes, docs = hashes[order], docs[order]
        first_in_doc = np.ones(len(hashes), dtype=bool)
        first_in_doc[1:] = (hashes[1:] != hashes[:-1]) | (docs[1:] != docs[:-1])
        vocabulary, doc_freq = np.unique(hashes[first_in_doc], return_counts=True)
        idf = np.log((1 + len(texts)) / (1 + doc_freq)) + 1.0
        return cls(vocabulary=vocabulary, idf=idf, ngram_max=ngram_max)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        docs, features, values = self.entries(texts)
        row_starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(docs, minlength=len(texts)), out=row_starts[1:])
        return sp.csr_matrix(
            (values, features, row_starts), shape=(len(texts), len(self.vocabulary))
        )

    def entries(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Floats]:
        """The nonzero entries of ``transform(texts)`` as (row, column, value) arrays, in CSR
        order."""
        docs, features = self._known_ngrams(texts)
        # Sorting (document, feature) keys yields the matrix in CSR order with repeats adjacent.
        keys, counts = np.unique(docs * len(self.vocabulary) + features, return_counts=True)
        docs, features = np.divmod(keys, len(self.vocabulary))
        values = (1.0 + np.log(counts)) * self.idf[features]
        norms = np.sqrt(np.bincount(docs, weights=values * values, minlength=len(texts)))
        values /= norms[docs]
        return docs, features, values

    def _known_ngrams(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        docs, hashes = char_ngrams(texts, self.ngram_max)
        features = self.index.lookup(hashes)
        known = features >= 0
        return docs[known], features[known]


@dataclass(frozen=True)
class LinearModel:
    """``p(positive) = sigmoid(a * (x·w + b) + c)``: a linear score with Platt calibration."""

    features: CharNgramTfidf
    weights: Floats
    bias: float
    platt_a: float
    platt_c: float

    def positive_probability(self, texts: Sequence[str]) -> Floats:
        # x·w summed per row straight from the entries: building the sparse matrix would cost
        # more than the product for the few reviews of a request.
        docs, features, values = self.features.entries(texts)
        products = values * self.weights[features]
        scores = np.bincount(docs, weights=products, minlength=len(texts)) + self.bias
        result: Floats = 1.0 / (1.0 + np.exp(-(self.platt_a * scores + self.platt_c)))
        return result

    def save(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Write the artifact into a new, empty ``directory``."""
        directory.mkdir(parents=True, exist_ok=False)
        weights_path = directory / "weights.npz"
        np.savez(
            weights_path,
            vocabulary=self.features.vocabulary,
            idf=self.features.idf,
            weights=self.weights,
            scalars=np.array([self.bias, self.platt_a, self.platt_c]),
        )
        full = {
            **manifest,
            "format": ARTIFACT_FORMAT,
            "ngram_max": self.features.ngram_max,
            "weights_sha256": _sha256(weights_path),
        }
        (directory / "manifest.json").write_text(json.dumps(full, ensure_ascii=False, indent=2))

    @classmethod
    def load(cls, directory: Path) -> tuple[LinearModel, dict[str, Any]]:
        manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
        if manifest.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{directory}: unknown artifact format {manifest.get('format')!r}")
        weights_path = directory / "weights.npz"
        if _sha256(weights_path) != manifest["weights_sha256"]:
            raise ValueError(f"{directory}: weights.npz does not match its manifest's sha256")
        with np.load(weights_path, allow_pickle=False) as arrays:
            bias, platt_a, platt_c = (float(v) for v in arrays["scalars"])
            features = CharNgramTfidf(
                arrays["vocabulary"], arrays["idf"], int(manifest["ngram_max"])
            )
            model = cls(features, arrays["weights"], bias, platt_a, platt_c)
        return model, manifest


INLINE_MAX_REVIEWS = 64
"""Batches up to this size are classified on the event loop's thread."""


class LocalClassifier:
    """Serves one artifact from the model root; large batches are classified in a worker thread."""

    backend = "local"

    def __init__(self, model_root: Path, name: str) -> None:
        root = model_root.resolve()
        directory = (root / name).resolve()
        if directory.parent != root:
            raise ValueError(f"artifact {name!r} is not a folder directly inside {root}")
        self._model, self.manifest = LinearModel.load(directory)
        self._model_id = f"local:{name}"

    @property
    def model_id(self) -> str:
        return self._model_id

    def classify_now(self, texts: Sequence[str]) -> list[Verdict]:
        """Classify on the calling thread (for scripts and benchmarks)."""
        if not texts:
            return []
        try:
            positive = self._model.positive_probability(texts)
        except (ValueError, MemoryError) as error:
            raise BackendError(f"local model failed: {error}") from error
        return [
            Verdict(Label.POSITIVE, float(p), self._model_id)
            if p >= 0.5
            else Verdict(Label.NEGATIVE, float(1.0 - p), self._model_id)
            for p in positive
        ]

    async def classify(self, texts: Sequence[str]) -> list[Verdict]:
        """A few reviews are classified at once: a hop to a worker thread would take longer
        than the work (~20 µs a review), and the event loop would then wait for the GIL."""
        if len(texts) <= INLINE_MAX_REVIEWS:
            return self.classify_now(texts)
        return await asyncio.to_thread(self.classify_now, list(texts))

    async def probe(self) -> None:
        """Loaded is able: the model lives in this process."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
