"""IndexConfig: every setting of a build (walk rules, chunking, embedding, approximate search)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["IndexConfig"]

DEFAULT_MAX_FILE_BYTES = 1_000_000
DEFAULT_CHUNK_MAX_TOKENS = 256  # all-MiniLM-L6-v2's window, special tokens included
DEFAULT_WINDOW_LINES = 40
DEFAULT_CHUNK_OVERLAP_LINES = 5
DEFAULT_CHUNK_OVERLAP_TOKENS = 32  # for one line longer than the window (prose records, minified code)
DEFAULT_APPROX_THRESHOLD = 50_000
DEFAULT_BUILD_THREADS = 2
DEFAULT_KEEP_VERSIONS = 2
DEFAULT_LOCK_WAIT_SECONDS = 2.0
MIN_CHUNK_MAX_TOKENS = 32
EMBED_PRECISIONS = ("int8", "fp32")  # the ONNX encoder's weights (export.py)


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Settings of one index build.

    excludes: git-style globs on repo-relative paths (`tests/**`, `*.min.js`), on top of .gitignore.
    use_gitignore: honour .gitignore files (False: only `excludes` and the built-in skip rules apply).
    embed_model: a model folder or an installed package name; None = the packaged default.
    embed_precision: "int8" (default: 2.3x faster, cosine >= 0.99 to fp32) or "fp32" weights of the
    ONNX encoder. model_cache_dir: where exported encoders are kept between builds (None: this
    process only).
    vectors_later: with with_vectors, embed nothing now: reuse the current version's vectors by chunk
    key and leave the other chunks without one (the vector mask says which) for `index embed`.
    embed_checkpoint_chunks: `index embed` writes its vectors durably every this many chunks (a
    killed run resumes from the last checkpoint).
    force: ignore the current version (re-embed everything) and write into a directory that holds an
    index of another format version or other files.
    """

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    chunk_max_tokens: int = DEFAULT_CHUNK_MAX_TOKENS
    chunk_overlap_lines: int = DEFAULT_CHUNK_OVERLAP_LINES
    chunk_overlap_tokens: int = DEFAULT_CHUNK_OVERLAP_TOKENS
    window_lines: int = DEFAULT_WINDOW_LINES
    excludes: tuple[str, ...] = ()
    use_gitignore: bool = True
    embed_model: str | None = None
    embed_precision: str = "int8"
    model_cache_dir: Path | None = None
    with_vectors: bool = True
    vectors_later: bool = False
    embed_checkpoint_chunks: int = 256
    force: bool = False
    approx_threshold: int = DEFAULT_APPROX_THRESHOLD
    show_progress: bool = False
    threads: int = DEFAULT_BUILD_THREADS
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS

    def __post_init__(self) -> None:
        if isinstance(self.excludes, str) or not all(isinstance(g, str) and g for g in self.excludes):
            raise ValueError(f"excludes must be a tuple of non-empty glob strings, got {self.excludes!r}")
        object.__setattr__(self, "excludes", tuple(self.excludes))
        if self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be >= 1, got {self.max_file_bytes}")
        if self.chunk_max_tokens < MIN_CHUNK_MAX_TOKENS:
            raise ValueError(f"chunk_max_tokens must be >= {MIN_CHUNK_MAX_TOKENS}, got {self.chunk_max_tokens}")
        if self.window_lines < 1:
            raise ValueError(f"window_lines must be >= 1, got {self.window_lines}")
        if not 0 <= self.chunk_overlap_lines < self.window_lines:
            raise ValueError(
                f"chunk_overlap_lines must be in [0, window_lines={self.window_lines}), got {self.chunk_overlap_lines}"
            )
        if not 0 <= self.chunk_overlap_tokens <= self.chunk_max_tokens // 2:
            raise ValueError(
                f"chunk_overlap_tokens must be in [0, chunk_max_tokens/2={self.chunk_max_tokens // 2}], "
                f"got {self.chunk_overlap_tokens}"
            )
        if self.embed_model is not None and not self.embed_model.strip():
            raise ValueError("embed_model must be a folder or package name, or None for the default")
        if self.embed_precision not in EMBED_PRECISIONS:
            raise ValueError(f"embed_precision must be one of {', '.join(EMBED_PRECISIONS)}, got {self.embed_precision!r}")
        if self.approx_threshold < 1:
            raise ValueError(f"approx_threshold must be >= 1, got {self.approx_threshold}")
        if self.embed_checkpoint_chunks < 1:
            raise ValueError(f"embed_checkpoint_chunks must be >= 1, got {self.embed_checkpoint_chunks}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.keep_versions < 2:
            raise ValueError(f"keep_versions must be >= 2 (a reader may hold the previous one), got {self.keep_versions}")
        if self.lock_wait_seconds < 0:
            raise ValueError(f"lock_wait_seconds must be >= 0, got {self.lock_wait_seconds}")
