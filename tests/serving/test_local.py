import asyncio
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer

from serving.base import BackendError, Classifier, Label
from serving.local import CharNgramTfidf, LinearModel, LocalClassifier, char_ngrams

TEXTS = ["好吃", "送餐太慢了", "好吃不贵，好吃！", "a"]


def test_ngrams_are_the_character_ngrams_of_the_framed_text():
    docs, hashes = char_ngrams(TEXTS, 3)
    reference = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False)
    counts = reference.fit_transform([f"\x02{t}\x03" for t in TEXTS])
    for i in range(len(TEXTS)):
        ours = sorted(Counter(hashes[docs == i].tolist()).values())
        theirs = sorted(counts[i].data.tolist())
        assert ours == theirs


def test_features_are_l2_normalized_and_ignore_unknown_ngrams():
    features = CharNgramTfidf.fit(TEXTS, 4)
    matrix = features.transform(["好吃", "完全陌生的字"])
    norms = np.sqrt(matrix.multiply(matrix).sum(axis=1)).A.ravel()
    assert norms[0] == pytest.approx(1.0)
    assert matrix[1].nnz < len("完全陌生的字") + 2


def model_on(texts: list[str], labels: list[int]) -> LinearModel:
    features = CharNgramTfidf.fit(texts, 3)
    x = features.transform(texts).toarray()
    y = np.where(np.array(labels) == 1, 1.0, -1.0)
    weights, *_ = np.linalg.lstsq(x, y, rcond=None)
    return LinearModel(features, weights, 0.0, 4.0, 0.0)


def test_probabilities_match_the_matrix_product_of_the_features():
    model = model_on(["好吃", "很好吃", "难吃", "太难吃了"], [1, 1, 0, 0])
    texts = ["好吃好吃", "太难吃", "完全陌生的字", "很好吃，就是有点难吃"]
    scores = model.features.transform(texts) @ model.weights + model.bias
    expected = 1.0 / (1.0 + np.exp(-(model.platt_a * scores + model.platt_c)))
    assert model.positive_probability(texts) == pytest.approx(expected)


@pytest.fixture
def artifact_root(tmp_path: Path) -> Path:
    model = model_on(["好吃", "很好吃", "难吃", "太难吃了"], [1, 1, 0, 0])
    model.save(tmp_path / "v1", {"snapshot": "test"})
    return tmp_path


def test_an_artifact_round_trips_and_classifies(artifact_root: Path):
    classifier = LocalClassifier(artifact_root, "v1")
    assert isinstance(classifier, Classifier)
    verdicts = asyncio.run(classifier.classify(["好吃", "难吃"]))
    assert [v.label for v in verdicts] == [Label.POSITIVE, Label.NEGATIVE]
    for verdict in verdicts:
        assert verdict.confidence is not None
        assert 0.5 <= verdict.confidence <= 1.0
        assert verdict.model_id == "local:v1"
    assert asyncio.run(classifier.classify([])) == []


def test_tampered_weights_are_refused(artifact_root: Path):
    weights = artifact_root / "v1" / "weights.npz"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    weights.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="sha256"):
        LocalClassifier(artifact_root, "v1")


@pytest.mark.parametrize("name", ["../v1", "/etc", "v1/../../x", "."])
def test_artifacts_load_only_from_inside_the_model_root(
    artifact_root: Path, tmp_path: Path, name: str
):
    inner = artifact_root / "inner"
    inner.mkdir()
    shutil.copytree(artifact_root / "v1", tmp_path / "outside")
    with pytest.raises((ValueError, FileNotFoundError)):
        LocalClassifier(inner, name)


def test_a_new_version_never_overwrites_an_old_one(artifact_root: Path):
    model = model_on(["好", "坏"], [1, 0])
    with pytest.raises(FileExistsError):
        model.save(artifact_root / "v1", {})


def test_a_failing_model_raises_backend_error(artifact_root: Path, monkeypatch: pytest.MonkeyPatch):
    classifier = LocalClassifier(artifact_root, "v1")

    def broken(self, texts):
        raise MemoryError("out of memory")

    monkeypatch.setattr(LinearModel, "positive_probability", broken)
    with pytest.raises(BackendError, match="out of memory"):
        asyncio.run(classifier.classify(["好吃"]))
