"""A tiny, fixed source tree for the server and CLI tests (a few files in several languages)."""

from pathlib import Path

FILES = {
    "src/ratelimit.py": '''"""Rate limiting for the public HTTP API."""

import time


class TokenBucket:
    """A token bucket: `capacity` tokens, refilled at `rate` tokens per second."""

    def __init__(self, capacity, rate):
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = time.monotonic()

    def allow(self, cost=1):
        """Take `cost` tokens if available; False means the caller must back off (HTTP 429)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False
''',
    "src/auth.py": '''"""User authentication: password hashing and session tokens."""

import hashlib
import hmac
import os


def hash_password(password, salt=None):
    """Derive a PBKDF2-SHA256 hash of the password with 200000 iterations."""
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 200_000)
    return salt, digest


def verify_password(password, salt, expected):
    """Constant-time comparison of a password against its stored hash."""
    _, digest = hash_password(password, salt)
    return hmac.compare_digest(digest, expected)
''',
    "src/cache.py": '''"""An LRU cache with time-to-live expiry for database query results."""

from collections import OrderedDict


class TTLCache:
    """Least-recently-used cache whose entries expire after ttl_seconds."""

    def __init__(self, max_entries=1024, ttl_seconds=60.0):
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.entries = OrderedDict()

    def get(self, key, now):
        """Return the cached value, or None when missing or expired."""
        item = self.entries.get(key)
        if item is None or now - item[1] > self.ttl_seconds:
            return None
        self.entries.move_to_end(key)
        return item[0]
''',
    "web/server.js": '''// Express HTTP server with a health check and graceful shutdown.
const express = require("express");

function createServer(port) {
  const app = express();
  app.get("/healthz", (req, res) => res.json({ status: "ok" }));
  const server = app.listen(port);
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
  return server;
}

module.exports = { createServer };
''',
    "docs/guide.md": '''# Operator guide

## Installation

Run the install script, then start the service with `make run`.

## Configuration

Settings live in `config/settings.yaml`. The `retry_limit` key sets how many times a failed
upstream request is retried before the circuit breaker opens.

## Troubleshooting

If requests fail with HTTP 429, the rate limiter is rejecting them: raise the bucket capacity.
''',
    "config/settings.yaml": '''service:
  name: orders
  retry_limit: 5
  timeout_seconds: 30
database:
  host: db.internal
  pool_size: 10
''',
}


def write_corpus(root: Path) -> Path:
    """Write FILES under root and return root."""
    for rel_path, text in FILES.items():
        path = root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
