"""The built-in local embedder: deterministic, offline, no model weights.

Feature hashing of word unigrams, word bigrams and character trigrams into
``EMBEDDING_DIM`` signed buckets, with sublinear term weights, L2-normalised.
It captures lexical overlap (shared words, shared word pieces across
inflections and languages with Latin script), which is what retrieval over a
merchant's own short texts mostly needs; a configured provider model replaces
it for semantic similarity. Vectors are cosine-comparable.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from itertools import pairwise

from core.config import EMBEDDING_DIM
from gateway.types import CallContext, EmbeddingRequest, EmbeddingResponse, Usage

LOCAL_EMBEDDING_MODEL = "copilot-local-embed"
_WORD = re.compile(r"\w+", re.UNICODE)


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


def _features(text: str) -> Counter[str]:
    normalized = unicodedata.normalize("NFKC", text).casefold()
    words = _WORD.findall(normalized)
    features: Counter[str] = Counter()
    for word in words:
        features[f"w:{word}"] += 2
        padded = f"<{word}>"
        for i in range(max(1, len(padded) - 2)):
            features[f"c:{padded[i : i + 3]}"] += 1
    for first, second in pairwise(words):
        features[f"b:{first} {second}"] += 1
    return features


def embed_text(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """Embed one text; the empty text maps to the zero vector."""
    vector = [0.0] * dim
    for feature, count in _features(text).items():
        index, sign = _bucket(feature, dim)
        vector[index] += sign * (1.0 + math.log(count))
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        return vector
    return [v / norm for v in vector]


def count_tokens(text: str) -> int:
    """A rough token count (words and punctuation) for usage metering."""
    return len(_WORD.findall(text)) + len(re.findall(r"[^\w\s]", text))


class LocalEmbedder:
    """An :class:`~gateway.types.EmbeddingClient` that runs in process."""

    model = LOCAL_EMBEDDING_MODEL

    def __init__(self, dim: int = EMBEDDING_DIM) -> None:
        self.dim = dim

    async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
        """Embed every input text (the request's model name is recorded, not used)."""
        vectors = [embed_text(text, self.dim) for text in request.input]
        tokens = sum(count_tokens(text) for text in request.input)
        return EmbeddingResponse(model=self.model, data=vectors, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
