"""embed_index: fill the vectors an index lacks (`index build --vectors later`), resumably.

Contract: runs under OUT/.lock like a build. The chunks whose vector-mask bit is off are embedded
(each distinct indexed text once, rebuilt from the stored header and text and checked against its
chunk key) in batches of `config.embed_checkpoint_chunks`; each batch is written durably to
`OUT/.embed/<encoder sha>/<n>.npy` (temp file, fsync, rename) as (chunk key, vector) rows. A run
killed at any point resumes from those files and never embeds a checkpointed text again (keys, not
row numbers: a rebuild between two runs keeps what was done). When every chunk has a vector, a new
version is written beside the current one (unchanged artefacts hard-linked, new vectors.npy,
vector_mask.npy and the encoder) and CURRENT switches to it in one os.replace: a reader sees the old
version or the complete new one, never a mix. The checkpoint folder is removed afterwards.
The vectors equal those a full build makes: same encoder, one run per text (embed.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .build import KEY_BYTES, _approximate_index, _current_encoder, _embed_entry, _embedder
from .config import IndexConfig
from .embed import resolve_embed_model
from .errors import IndexCorruptError, SourceError
from .export import EncoderFiles, prepare_encoder
from .format import (
    ANN_FILE,
    CHECKPOINT_DIR,
    CHUNK_HEADER_FILE,
    CHUNK_HEADER_OFFSETS_FILE,
    ENCODER_FILE,
    ENCODER_TOKENIZER_FILE,
    VECTOR_MASK_FILE,
    VECTORS_FILE,
    PreviousVersion,
    build_lock,
    current_version_dir,
    derive_version,
    new_version_name,
    open_index,
    prune_versions,
    switch_current,
)

__all__ = ["CHECKPOINT_DIR", "EmbedReport", "embed_index"]

log = logging.getLogger(__name__)

_COPY_ROWS = 65_536  # rows of old vectors copied into the new file at a time (bounded memory)


@dataclass(frozen=True, slots=True)
class EmbedReport:
    """What one `index embed` did: chunks that lacked a vector, texts embedded now, texts taken from
    the checkpoint of an earlier (killed) run, and the resulting coverage."""

    out: Path
    version: str
    chunks: int
    chunks_missing: int
    chunks_embedded: int
    chunks_resumed: int
    vector_coverage: float
    seconds: float
    embed_seconds: float

    def summary(self) -> str:
        """A few human lines for the CLI."""
        if not self.chunks_missing:
            return f"every chunk of {self.out} already has a vector (version {self.version}); nothing to do"
        return "\n".join([
            f"vectors filled at {self.out} (version {self.version}) in {self.seconds:.1f}s",
            f"chunks: {self.chunks}; {self.chunks_missing} lacked a vector: {self.chunks_embedded} texts embedded "
            f"now, {self.chunks_resumed} taken from an earlier run's checkpoint",
            f"vector coverage: {self.vector_coverage:.0%}",
        ])


def embed_index(
    out: Path | str, config: IndexConfig | None = None, on_progress: Callable[[str, float], None] | None = None
) -> EmbedReport:
    """Embed every chunk of the index at `out` that has no vector yet, then switch to the complete
    version (see module contract). The model is `config.embed_model`, else the one the build
    recorded; an index that already holds some vectors must be completed by their encoder (same
    model and `config.embed_precision`), so all its vectors stay comparable.

    Raises IndexNotFoundError/IndexFormatError/IndexCorruptError (exit 3), IndexLockedError (exit 2),
    SourceError (exit 2: an index written before chunk headers were stored), ModelMissingError (4).
    """
    started = time.perf_counter()
    config = IndexConfig() if config is None else config
    out = Path(out).expanduser().absolute()
    current_version_dir(out)  # not an index: exit 3 before a .lock file is created there
    with build_lock(out, config.lock_wait_seconds):
        data = open_index(out)
        mask = np.asarray(data.vector_mask, dtype=bool)
        missing = np.flatnonzero(~mask)
        if not missing.size:
            return EmbedReport(out, data.version_dir.name, data.n_chunks, 0, 0, 0, 1.0,
                               round(time.perf_counter() - started, 3), 0.0)
        headers = _chunk_headers(data)
        location, encoder = _encoder_for(data, config)
        keys = np.asarray(data.chunk_keys)
        rows_by_key: dict[bytes, list[int]] = {}
        for row in missing.tolist():
            rows_by_key.setdefault(keys[row].tobytes(), []).append(row)
        checkpoint = out / CHECKPOINT_DIR / encoder.sha256[:16]
        _drop_other_checkpoints(out / CHECKPOINT_DIR, checkpoint)
        done = _checkpointed_keys(checkpoint, location.dim)
        todo = [key for key in rows_by_key if key not in done]
        resumed = len(rows_by_key) - len(todo)
        if resumed:
            log.info("resuming: %d of %d texts were embedded by an earlier run", resumed, len(rows_by_key))
        embed_seconds = _embed_missing(data, headers, todo, rows_by_key, checkpoint, location, encoder, config,
                                       resumed, len(rows_by_key), on_progress)
        version = _write_complete(out, data, mask, rows_by_key, checkpoint, location, encoder, config)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return EmbedReport(
        out=out, version=version, chunks=data.n_chunks, chunks_missing=int(missing.size),
        chunks_embedded=len(todo), chunks_resumed=resumed, vector_coverage=1.0,
        seconds=round(time.perf_counter() - started, 3), embed_seconds=round(embed_seconds, 3),
    )


# ---------------------------------------------------------------- stages


def _chunk_headers(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """The stored header lines (blob, offsets) of every chunk."""
    blob_path, offsets_path = data.version_dir / CHUNK_HEADER_FILE, data.version_dir / CHUNK_HEADER_OFFSETS_FILE
    if CHUNK_HEADER_FILE not in data.manifest["artefacts"] or not blob_path.is_file():
        raise SourceError(
            f"the index at {data.path} was written before chunk headers were stored, so its chunks cannot be "
            "embedded on their own; run `index build` over its sources again (with --vectors later to "
            "defer the embedding), then `index embed`"
        )
    offsets = np.load(offsets_path, mmap_mode="r", allow_pickle=False)
    blob = np.memmap(blob_path, dtype=np.uint8, mode="r") if blob_path.stat().st_size else np.zeros(0, np.uint8)
    if len(offsets) != data.n_chunks + 1:
        raise IndexCorruptError(data.path, CHUNK_HEADER_OFFSETS_FILE, "does not match the number of chunks")
    return blob, offsets


def _indexed_text(data: Any, headers: tuple[np.ndarray, np.ndarray], row: int) -> str:
    """What a build embedded for chunk `row`: its header line, then its text (chunk.indexed_text)."""
    blob, offsets = headers
    header = blob[int(offsets[row]):int(offsets[row + 1])].tobytes().decode("utf-8")
    text = data.chunk_text(row)
    return f"{header}\n{text}" if header else text


def _encoder_for(data: Any, config: IndexConfig) -> tuple[Any, EncoderFiles]:
    """(model location, encoder): the index's own encoder when it already holds vectors (they must
    stay comparable), else the model the build recorded (or `config`'s) exported as usual."""
    pending = data.manifest.get("vectors_later") or {}
    spec = config.embed_model or pending.get("embed_model")
    precision = config.embed_precision
    location = resolve_embed_model(spec)
    if (data.manifest.get("models") or {}).get("embed"):
        own = PreviousVersion(data.path, data.version_dir, data.manifest, data.chunk_keys, data.vectors,
                              data.vector_mask)
        encoder = _current_encoder(own, location, _with_precision(config, precision))
        if encoder is None:
            raise SourceError(
                f"the index at {data.path} holds vectors of another embedding model or precision than "
                f"{location.model_id} ({precision}); embed with the model it was built with, or rebuild with "
                "`index build --force`"
            )
        return location, encoder
    return location, prepare_encoder(location, precision, config.model_cache_dir)


def _with_precision(config: IndexConfig, precision: str) -> IndexConfig:
    import dataclasses

    return dataclasses.replace(config, embed_precision=precision)


def _drop_other_checkpoints(parent: Path, keep: Path) -> None:
    """Checkpoints of another encoder can never be used again."""
    if parent.is_dir():
        for folder in parent.iterdir():
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)


def _batch_dtype(dim: int) -> np.dtype:
    return np.dtype([("key", np.uint8, (KEY_BYTES,)), ("vector", np.float32, (dim,))])


def _checkpoint_files(checkpoint: Path) -> list[Path]:
    return sorted(p for p in checkpoint.glob("*.npy")) if checkpoint.is_dir() else []


def _checkpointed_keys(checkpoint: Path, dim: int) -> set[bytes]:
    """Keys of the texts an earlier run embedded; temp files of a batch cut short are removed, and a
    batch file that cannot be read is dropped (its texts are embedded again)."""
    done: set[bytes] = set()
    if not checkpoint.is_dir():
        return done
    for leftover in checkpoint.glob("*.tmp"):
        leftover.unlink(missing_ok=True)
    for path in _checkpoint_files(checkpoint):
        try:
            batch = np.load(path, mmap_mode="r", allow_pickle=False)
            if batch.dtype != _batch_dtype(dim) or batch.ndim != 1:
                raise ValueError(f"dtype {batch.dtype}")
        except (OSError, ValueError) as exc:
            log.warning("dropping the unreadable checkpoint %s (%s); its chunks are embedded again", path.name, exc)
            path.unlink(missing_ok=True)
            continue
        done.update(bytes(key) for key in np.asarray(batch["key"]))
    return done


def _embed_missing(
    data: Any, headers: tuple[np.ndarray, np.ndarray], todo: list[bytes], rows_by_key: dict[bytes, list[int]],
    checkpoint: Path, location: Any, encoder: EncoderFiles, config: IndexConfig, resumed: int, total: int,
    on_progress: Callable[[str, float], None] | None,
) -> float:
    """Embed the texts of `todo` (keys), one durable checkpoint file per batch; returns seconds."""
    if not todo:
        return 0.0
    checkpoint.mkdir(parents=True, exist_ok=True)
    embedder = _embedder(encoder.model, encoder.sha256, encoder.tokenizer, encoder.pooling, location, config.threads)
    dtype = _batch_dtype(location.dim)
    number = len(_checkpoint_files(checkpoint))
    bar = _bar(total, resumed, config.show_progress)
    seconds = 0.0
    try:
        for start in range(0, len(todo), config.embed_checkpoint_chunks):
            batch_keys = todo[start:start + config.embed_checkpoint_chunks]
            texts = []
            for key in batch_keys:
                row = rows_by_key[key][0]
                text = _indexed_text(data, headers, row)
                if hashlib.sha256(text.encode("utf-8")).digest()[:KEY_BYTES] != key:
                    raise IndexCorruptError(data.path, "chunk_text.bin",
                                            f"chunk {row}'s header and text do not match its key")
                texts.append(text)
            began = time.perf_counter()
            vectors = embedder.encode(texts)
            seconds += time.perf_counter() - began
            records = np.zeros(len(batch_keys), dtype=dtype)
            records["key"] = np.frombuffer(b"".join(batch_keys), np.uint8).reshape(-1, KEY_BYTES)
            records["vector"] = vectors
            _save_durably(checkpoint / f"{number:07d}.npy", records)
            number += 1
            bar.update(len(batch_keys))
            if on_progress is not None:
                on_progress("embedding", min((resumed + start + len(batch_keys)) / total, 1.0))
    finally:
        bar.close()
    log.info("embedded %d chunks in %.1fs (%.1f chunks/s)", len(todo), seconds, len(todo) / max(seconds, 1e-9))
    return seconds


def _save_durably(path: Path, array: np.ndarray) -> None:
    """Write `array` as path (temp file, fsync, rename, fsync the folder): whole or absent after a crash."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_complete(
    out: Path, data: Any, mask: np.ndarray, rows_by_key: dict[bytes, list[int]], checkpoint: Path,
    location: Any, encoder: EncoderFiles, config: IndexConfig,
) -> str:
    """The new version (every chunk with a vector) written beside the current one, then switched to."""
    n, dim = data.n_chunks, location.dim

    def write_new(folder: Path) -> dict[str, Any]:
        vectors = np.lib.format.open_memmap(folder / VECTORS_FILE, mode="w+", dtype=np.float32, shape=(n, dim))
        filled = mask.copy()
        if data.vectors is not None:  # rows that had a vector keep it, copied block by block
            for start in range(0, n, _COPY_ROWS):
                stop = min(n, start + _COPY_ROWS)
                vectors[start:stop] = np.where(mask[start:stop, None], data.vectors[start:stop], 0.0)
        for path in _checkpoint_files(checkpoint):
            batch = np.load(path, mmap_mode="r", allow_pickle=False)
            for key, vector in zip(np.asarray(batch["key"]), batch["vector"]):
                rows = rows_by_key.get(bytes(key))
                if rows is not None:
                    vectors[rows] = vector
                    filled[rows] = True
        if not filled.all():
            raise IndexCorruptError(out, CHECKPOINT_DIR, f"{int((~filled).sum())} chunks got no vector; run index embed again")
        vectors.flush()
        ann, ann_info = _approximate_index(vectors, config)
        del vectors
        _fsync(folder / VECTORS_FILE)
        with open(folder / VECTOR_MASK_FILE, "wb") as handle:
            np.save(handle, np.ones(n, dtype=bool), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        for name, source in ((ENCODER_FILE, encoder.model), (ENCODER_TOKENIZER_FILE, encoder.tokenizer)):
            try:
                os.link(source, folder / name)
            except OSError:
                shutil.copyfile(source, folder / name)
        if ann is not None:
            import faiss

            faiss.write_index(ann, str(folder / ANN_FILE))
            _fsync(folder / ANN_FILE)
        return {"ann": ann_info}

    manifest = {key: value for key, value in data.manifest.items() if key not in ("artefacts", "vectors_later")}
    manifest["models"] = {**(manifest.get("models") or {}), "embed": _embed_entry(location, encoder)}
    manifest["vectors_embedded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    name = new_version_name()
    replaced = (VECTORS_FILE, VECTOR_MASK_FILE, ENCODER_FILE, ENCODER_TOKENIZER_FILE, ANN_FILE)
    derive_version(out, name, data.version_dir, manifest, replaced, write_new)
    switch_current(out, name)
    prune_versions(out, config.keep_versions)
    return name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _bar(total: int, initial: int, show: bool) -> Any:
    if not show:
        class _Silent:
            def update(self, n: int) -> None:
                return None

            def close(self) -> None:
                return None

        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="embedding", unit="chunk", file=sys.stderr)
