#!/usr/bin/env bash
set -euo pipefail

TARGET=${1:-staging}

# Prints a message to stderr.
log() {
  echo "[deploy] $*" >&2
}

function build_image {
  docker build -t "app:$TARGET" .
}

log "deploying to $TARGET"
build_image
