"""A small real Qdrant REST endpoint for fault tests: `python -m tests.reliability.qdrant_http STORE PORT [KEY]`.

No Qdrant server binary is installed here, so this process speaks the part of Qdrant's REST API that
qdrant-client uses to serve an index (service root, list collections, collection exists, query,
batch query), answering from qdrant-client's local mode over STORE (the engine our local-mode tests
use; the same pydantic models are what a Qdrant server returns). With KEY it refuses every request
without the header `api-key: KEY` (HTTP 401), as Qdrant does. Tests start it, stop it (the server
"lost mid-call") and start it again on the same port (Qdrant "back"). Each query appends one line to
STORE/../queries.log so a test knows a call's queries reached Qdrant.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> int:
    from qdrant_client import QdrantClient, models

    store, port = Path(sys.argv[1]), int(sys.argv[2])
    key = sys.argv[3] if len(sys.argv) > 3 else None
    client = QdrantClient(path=str(store))
    lock = threading.Lock()  # local mode is not thread-safe
    log = store.parent / "queries.log"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            return

        def _send(self, status: int, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            if key is None or self.headers.get("api-key") == key:
                return True
            self._send(401, {"status": {"error": "Must provide an API key or an Authorization bearer token"}})
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorised():
                return
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            with lock:
                if not parts:
                    self._send(200, {"title": "qdrant - vector search engine", "version": "1.15.0"})
                elif parts == ["collections"]:
                    names = [c.name for c in client.get_collections().collections]
                    self._ok({"collections": [{"name": n} for n in names]})
                elif len(parts) == 3 and parts[0] == "collections" and parts[2] == "exists":
                    self._ok({"exists": client.collection_exists(parts[1])})
                else:
                    self._send(404, {"status": {"error": f"Not found: {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            if len(parts) < 4 or parts[0] != "collections" or parts[2:4] != ["points", "query"]:
                self._send(404, {"status": {"error": f"Not found: {self.path}"}})
                return
            name = parts[1]
            with lock:
                if not client.collection_exists(name):
                    self._send(404, {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}})
                    return
                with open(log, "a") as handle:
                    handle.write(name + "\n")
                if parts[4:] == ["batch"]:
                    requests = [models.QueryRequest.model_validate(r) for r in body["searches"]]
                    responses = client.query_batch_points(name, requests)
                    self._ok([r.model_dump(mode="json") for r in responses])
                else:
                    response = client.query_batch_points(name, [models.QueryRequest.model_validate(body)])[0]
                    self._ok(response.model_dump(mode="json"))

        def _ok(self, result: object) -> None:
            self._send(200, {"result": result, "status": "ok", "time": 0.0})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
