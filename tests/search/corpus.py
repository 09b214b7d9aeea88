"""A tiny source tree and a tiny jsonl corpus for end-to-end search tests."""

from __future__ import annotations

import json
from pathlib import Path

SOURCE_FILES = {
    "src/app/server.py": '''"""HTTP server entry points."""

import socket


def start_server(host, port):
    """Open a listening TCP socket and serve requests forever."""
    sock = socket.socket()
    sock.bind((host, port))
    sock.listen()
    while True:
        handle_request(sock.accept()[0])


def handle_request(connection):
    """Read one HTTP request from the connection and send a response."""
    data = connection.recv(65536)
    connection.sendall(b"HTTP/1.1 200 OK\\r\\n\\r\\n" + data)


class RequestRouter:
    """Maps URL paths to handler functions."""

    def __init__(self):
        self.routes = {}

    def add_route(self, path, handler):
        """Register handler for path."""
        self.routes[path] = handler
''',
    "src/app/util.py": '''"""Small helpers."""


def parse_config(text):
    """Parse key=value lines into a dict, ignoring comments."""
    result = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


def slugify(title):
    """Lowercase a title and join its words with hyphens for use in URLs."""
    return "-".join(title.lower().split())
''',
    "http/client.py": '''"""A tiny HTTP client with retries."""


def get_url(url, retries=3):
    """Download a URL, retrying with exponential backoff on connection errors."""
    for attempt in range(retries):
        try:
            return _download(url)
        except ConnectionError:
            sleep_seconds = 2 ** attempt
    raise ConnectionError(url)
''',
    "http/sub/proxy.py": '''def forward(request, upstream):
    """Forward a request to the upstream server and relay its answer."""
    return upstream.send(request)
''',
    "docs/guide.md": """# User guide

## Installation

Install the package with pip, then run the setup script once.

## Configuration

Settings live in a config file of key=value lines; comments start with a hash sign.

## Troubleshooting

If the server does not start, check that the port is free and that you have permission to bind it.
""",
    "web/client.js": """// Browser helpers
export async function fetchJson(url) {
  // Fetch a URL and decode the JSON body, throwing on HTTP errors.
  const response = await fetch(url);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}
""",
    "README.md": "# Demo project\n\nA demo HTTP server with a router, a client and config parsing.\n",
}

LONG_RECORD_TEXT = " ".join(
    f"Sentence {i} discusses mitochondria, cellular respiration and the production of ATP in eukaryotic cells."
    for i in range(60)
)
RECORDS = [
    {"id": "d1", "title": "Mitochondria and energy", "text": LONG_RECORD_TEXT},
    {"id": "d2", "title": "Photosynthesis", "text": "Chloroplasts convert light into chemical energy in plants."},
    {"id": "d3", "title": "Cell division", "text": "Mitosis splits one cell into two identical daughter cells."},
    {"id": "d4", "title": "ATP synthase", "text": "ATP synthase in mitochondria makes ATP from ADP using a proton gradient."},
]


def write_source_tree(root: Path) -> Path:
    for relative, text in SOURCE_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def write_records(path: Path) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS), encoding="utf-8")
    return path
