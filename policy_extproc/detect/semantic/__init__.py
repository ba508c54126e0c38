"""Semantic guards: prompt injection and topics by meaning, on static embedding models (and, for
topic rules that opt in, a multilingual sentence encoder).

Pure: nothing here imports grpc, redis, opentelemetry or asyncio, and nothing does I/O: the
models and the exemplar library are read by ``sources.models`` and handed in at compile time
(the topics' background sentences and library are the generated module ``topic_data``).
Callers pass canonical text (the same text the other content filters scan).
"""

from .embedder import DEFAULT_MODEL, Embedder, EmbedderError, HashEmbedder
from .encoder import MULTILINGUAL_MODEL, SentenceEncoder
from .injection import SENSITIVITY, InjectionDetector, InjectionFinding
from .topics import DEFAULT_THRESHOLD, MODELS, TopicClassifier, TopicSpec

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_THRESHOLD",
    "MODELS",
    "MULTILINGUAL_MODEL",
    "SENSITIVITY",
    "Embedder",
    "EmbedderError",
    "HashEmbedder",
    "InjectionDetector",
    "InjectionFinding",
    "SentenceEncoder",
    "TopicClassifier",
    "TopicSpec",
]
