"""The query/passage encoder: a sentence-transformers model exported once to ONNX (INT8 by default).

Why: onnxruntime runs the INT8 export of all-MiniLM-L6-v2 about 3.5x faster than PyTorch fp32 on
2 cores (86 vs 24 chunks/s here) at cosine 0.995 to the fp32 vectors, and serving then needs
neither torch nor sentence-transformers: the index carries the exact encoder its vectors were made
with (format.py copies it into every version), so a query is always embedded by the same weights.

Contract: ``prepare_encoder(location, precision, cache_dir)`` returns an ``EncoderFiles`` whose
model file is complete and verified. The export (torch + transformers + onnx, loaded only here)
runs once per source weights / precision / recipe and is cached in ``cache_dir`` (atomic rename, so
two builds racing both end with a whole file); without a cache dir it lives in a private temporary
directory for this process. Every export is checked against the PyTorch fp32 model on probe texts;
an INT8 export below ``MIN_INT8_COSINE`` is refused (use precision "fp32"). Nothing is downloaded.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .embed import EMBED_INSTALL_COMMAND, ModelLocation, file_sha256
from .errors import ModelMissingError

__all__ = ["BUNDLED_DIR", "EncoderFiles", "PRECISIONS", "RECIPE", "prepare_encoder", "read_pooling"]

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp32")
# Bumped whenever the export changes its output for the same weights (so caches and vector reuse
# never mix two recipes).
RECIPE = "onnx-opset17-eager-v1"
OPSET = 17
MIN_FP32_COSINE = 0.9999
MIN_INT8_COSINE = 0.97  # per-channel INT8 MiniLM: 0.985-0.996 on the probes; per-tensor: 0.89
MODEL_FILE = "model.onnx"
# Encoders exported at install time (the Docker image bakes one here, then drops torch): read-only,
# consulted after the cache, so serving and building need only onnxruntime. Bake with
# `prepare_encoder(location, precision, BUNDLED_DIR)`.
BUNDLED_DIR = Path(sys.prefix) / "share" / "knowledge-mcp"
META_FILE = "encoder.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("mean", "cls")
SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}
PROBE_TEXTS = (
    "def reciprocal_rank_fusion(rankings, k=60):\n    scores = {}\n    for ranking in rankings:",
    "Mesenchymal stem cells reside in the suture niche of craniofacial bones.",
    "How are rate limits and retries configured for the HTTP client?",
    "class ForkServer:\n    \"\"\"A long-lived process that forks sandbox children.\"\"\"",
    "retry backoff",
    "The quick brown fox jumps over the lazy dog. " * 20,
)


@dataclass(frozen=True, slots=True)
class EncoderFiles:
    """An exported encoder on disk: ``model`` (ONNX) and ``tokenizer`` (tokenizer.json).

    sha256: of the ONNX file (the vector reuse key); source_sha256: of the weights it came from.
    """

    model: Path
    tokenizer: Path
    sha256: str
    source_sha256: str
    precision: str
    pooling: str
    recipe: str
    min_cosine: float

    def manifest_entry(self) -> dict[str, object]:
        """What the index manifest records about its encoder."""
        return {
            "sha256": self.sha256,
            "source_sha256": self.source_sha256,
            "precision": self.precision,
            "pooling": self.pooling,
            "recipe": self.recipe,
            "min_cosine_to_fp32": round(self.min_cosine, 5),
        }


def read_pooling(location: ModelLocation) -> str:
    """"mean" or "cls" from the model's 1_Pooling/config.json (mean when absent); refuses modules
    the ONNX encoder does not reproduce (a Dense layer, max pooling...)."""
    modules_file = location.path / "modules.json"
    try:
        if modules_file.is_file():
            kinds = {str(m.get("type")) for m in json.loads(modules_file.read_text(encoding="utf-8"))}
            unsupported = sorted(kinds - SUPPORTED_MODULES)
            if unsupported:
                raise ModelMissingError(
                    location.model_id, EMBED_INSTALL_COMMAND,
                    f"its modules {', '.join(unsupported)} are not supported (only Transformer, Pooling, Normalize)",
                )
        pooling_file = location.path / "1_Pooling" / "config.json"
        if not pooling_file.is_file():
            return "mean"
        pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ModelMissingError(location.model_id, EMBED_INSTALL_COMMAND, f"cannot read its config: {exc}") from exc
    if pooling.get("pooling_mode_mean_tokens"):
        return "mean"
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    raise ModelMissingError(
        location.model_id, EMBED_INSTALL_COMMAND, f"pooling {pooling} is not supported (mean or cls tokens only)"
    )


def prepare_encoder(location: ModelLocation, precision: str = "int8", cache_dir: Path | None = None) -> EncoderFiles:
    """The encoder for `location` at `precision`: from the cache, else exported now (see module doc)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    pooling = read_pooling(location)
    folder = _entry_dir(location, precision, cache_dir)
    cached = _read_entry(folder, location, precision, pooling)
    if cached is not None:
        return cached
    bundled = _read_entry(BUNDLED_DIR / "encoders" / folder.name, location, precision, pooling)
    if bundled is not None:
        return bundled
    return _export_entry(location, precision, pooling, folder)


# ---------------------------------------------------------------- cache entries


def _entry_dir(location: ModelLocation, precision: str, cache_dir: Path | None) -> Path:
    name = f"{location.sha256[:16]}-{precision}-{RECIPE}"
    if cache_dir is not None:
        try:
            root = Path(cache_dir).expanduser() / "encoders"
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK):
                return root / name
            log.info("model cache %s is not writable: exporting the encoder for this process only", root)
        except OSError as exc:
            log.info("model cache %s unusable (%s): exporting the encoder for this process only", cache_dir, exc)
    return _process_temp_dir() / name


@lru_cache(maxsize=1)
def _process_temp_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="knowledge-mcp-encoders-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _read_entry(folder: Path, location: ModelLocation, precision: str, pooling: str) -> EncoderFiles | None:
    """A cached entry, if whole and matching; a damaged one is ignored (and replaced by the caller)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        model, tokenizer = folder / MODEL_FILE, folder / "tokenizer.json"
        if (
            meta.get("source_sha256") != location.sha256
            or meta.get("recipe") != RECIPE
            or meta.get("precision") != precision
            or file_sha256(model) != meta.get("sha256")
            or not tokenizer.is_file()
        ):
            log.info("encoder cache entry %s does not match; exporting again", folder)
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return EncoderFiles(
        model=model, tokenizer=tokenizer, sha256=meta["sha256"], source_sha256=location.sha256,
        precision=precision, pooling=pooling, recipe=RECIPE, min_cosine=float(meta.get("min_cosine", 0.0)),
    )


def _export_entry(location: ModelLocation, precision: str, pooling: str, folder: Path) -> EncoderFiles:
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        log.info("exporting %s to ONNX (%s) once; cached in %s", location.model_id, precision, folder)
        min_cosine = _export(location, precision, pooling, staging)
        shutil.copyfile(location.path / "tokenizer.json", staging / "tokenizer.json")
        sha = file_sha256(staging / MODEL_FILE)
        meta = {"source_sha256": location.sha256, "model_id": location.model_id, "precision": precision,
                "pooling": pooling, "recipe": RECIPE, "sha256": sha, "min_cosine": min_cosine}
        (staging / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        for _ in range(2):
            finished = _read_entry(folder, location, precision, pooling)
            if finished is not None:  # another build finished its export first: use that, drop ours
                return finished
            if folder.exists():  # a damaged entry: replace it whole
                shutil.rmtree(folder, ignore_errors=True)
            try:
                os.rename(staging, folder)
                break
            except OSError:  # another build renamed its export in between: read it on the next turn
                continue
        else:
            raise ModelMissingError(location.model_id, EMBED_INSTALL_COMMAND, f"cannot store the encoder in {folder}")
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return EncoderFiles(
        model=folder / MODEL_FILE, tokenizer=folder / "tokenizer.json", sha256=sha, source_sha256=location.sha256,
        precision=precision, pooling=pooling, recipe=RECIPE, min_cosine=min_cosine,
    )


# ---------------------------------------------------------------- the export itself


def _export(location: ModelLocation, precision: str, pooling: str, out: Path) -> float:
    """Write out/model.onnx; returns its minimum cosine to PyTorch fp32 over PROBE_TEXTS."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: the folder is local (local_files_only)
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelMissingError(
            location.model_id, EMBED_INSTALL_COMMAND, f"exporting the encoder needs torch and transformers: {exc}"
        ) from exc
    if not (location.path / location.weights_file).is_file():
        raise ModelMissingError(
            location.model_id, EMBED_INSTALL_COMMAND,
            "its weights were removed after the bundled encoder was exported (a slim install); only the "
            "bundled precision is available here",
        )
    try:
        import onnx  # noqa: F401  (torch's exporter and the quantizer need it)
    except ImportError as exc:
        raise ModelMissingError(
            location.model_id, ".venv/bin/pip install 'onnx>=1.17,<2'  (or run scripts/install.sh)",
            "exporting the encoder needs the onnx package",
        ) from exc
    from tokenizers import Tokenizer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    try:
        # Eager attention: the SDPA path traces a mask shortcut for unpadded inputs that would
        # ignore padding in the exported graph.
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Loading weights" bar is noise in a build log
        model = AutoModel.from_pretrained(str(location.path), local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ModelMissingError(location.model_id, EMBED_INSTALL_COMMAND, f"cannot load the model: {exc}") from exc
    model.eval()

    class LastHiddenState(torch.nn.Module):  # positional (ids, mask, token types) for the tracer
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    wrapper = LastHiddenState().eval()
    example = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, so the traced graph keeps the attention mask
    fp32_file = out / ("fp32.onnx" if precision == "int8" else MODEL_FILE)
    dynamic = {name: {0: "batch", 1: "tokens"} for name in (*INPUT_NAMES, "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            wrapper, (example, mask, torch.zeros_like(example)), str(fp32_file), input_names=list(INPUT_NAMES),
            output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel weights: per-tensor INT8 drops the mean cosine to fp32 to 0.94 on MiniLM, per
        # channel keeps it at 0.995 (measured on SciFact chunks) at the same speed.
        # The quantizer logs a line per tensor, and a "consider pre-processing" warning, on the root logger.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(
                str(fp32_file), str(out / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True,
                extra_options={"DefaultTensorType": 1},  # FLOAT, where shape inference cannot tell
            )
        finally:
            logging.disable(logging.NOTSET)
        fp32_file.unlink()
    tokenizer = Tokenizer.from_file(str(location.path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(location.max_tokens)
    reference = _torch_vectors(model, tokenizer, pooling, torch)
    from .embed import Embedder

    encoder = Embedder((out / MODEL_FILE).read_bytes(), tokenizer, pooling, location.dim, threads=1)
    cosine = float(np.min(np.sum(encoder.encode(list(PROBE_TEXTS)) * reference, axis=1)))
    floor = MIN_INT8_COSINE if precision == "int8" else MIN_FP32_COSINE
    if not cosine >= floor:
        raise ModelMissingError(
            location.model_id, EMBED_INSTALL_COMMAND,
            f"its {precision} ONNX export differs from the PyTorch model (cosine {cosine:.4f} < {floor}); "
            "build with --embed-precision fp32" if precision == "int8" else "the model cannot be exported faithfully",
        )
    log.info("encoder export (%s): minimum cosine to PyTorch fp32 %.4f", precision, cosine)
    return cosine


def _torch_vectors(model: object, tokenizer: object, pooling: str, torch: object) -> np.ndarray:
    """Unit fp32 vectors of PROBE_TEXTS from the PyTorch model (the reference for the export)."""
    rows = []
    with torch.inference_mode():
        for text in PROBE_TEXTS:
            ids = torch.tensor([tokenizer.encode(text).ids], dtype=torch.long)
            mask = torch.ones_like(ids)
            hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            vector = hidden[0, 0] if pooling == "cls" else hidden[0].mean(dim=0)
            rows.append(vector.numpy() / np.linalg.norm(vector.numpy()))
    return np.stack(rows).astype(np.float32)
