"""A Hugging Face Hub on the loopback address, for tests: one folder served as a model repository.

It answers what ``huggingface_hub`` (2.x) asks of a Hub while ``snapshot_download`` runs, and only that:

- ``GET /api/models/{repo}/revision/{revision}``: the commit a branch, tag or commit names (``sha``)
  and the repository's files (``siblings``); ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` on 404;
- ``GET /api/models/{repo}/tree/{commit}``: the file listing (one page);
- ``HEAD`` / ``GET /{repo}/resolve/{commit}/{file}``: a file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` (``X-Error-Code: EntryNotFound`` for a file it does not have).

Every request is logged (``requests``), so a test can tell a download from a cache hit. Clients reach
it through ``HF_ENDPOINT=http://127.0.0.1:<port>``; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class HubServer:
    """Serves ``folder``'s files as model ``repo_id``; ``refs`` maps branch and tag names to commits, and
    every commit in ``commits`` has the same files. :meth:`move` points a ref at another commit."""

    def __init__(self, folder: Path, repo_id: str, refs: dict[str, str]):
        self.folder, self.repo_id, self.refs = Path(folder), repo_id, dict(refs)
        self.commits = set(self.refs.values())
        self.files = sorted(str(path.relative_to(self.folder)) for path in self.folder.rglob("*") if path.is_file())
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def move(self, ref: str, commit: str) -> None:
        self.refs[ref] = commit
        self.commits.add(commit)

    def take_requests(self) -> list[tuple[str, str]]:
        """The requests since the last call, as ``(method, path)``."""
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _commit(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the test reads hub.requests
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests.append((self.command, path))
                prefix = f"/api/models/{hub.repo_id}/"
                if path.startswith("/api/models/"):
                    if not path.startswith(prefix):
                        return self._error(404, "RepoNotFound")
                    kind, _, revision = path[len(prefix):].partition("/")
                    commit = hub._commit(revision)
                    if commit is None:
                        return self._error(404, "RevisionNotFound")
                    if kind == "revision":
                        return self._json({"id": hub.repo_id, "sha": commit,
                                           "siblings": [{"rfilename": name} for name in hub.files]}, body)
                    if kind == "tree":
                        return self._json([{"type": "file", "path": name, "size": (hub.folder / name).stat().st_size,
                                            "oid": hashlib.sha1((hub.folder / name).read_bytes()).hexdigest()}
                                           for name in hub.files], body)
                    return self._error(404, None)
                prefix = f"/{hub.repo_id}/resolve/"
                if not path.startswith(prefix):
                    return self._error(404, "RepoNotFound")
                revision, _, name = path[len(prefix):].partition("/")
                commit = hub._commit(revision)
                if commit is None:
                    return self._error(404, "RevisionNotFound")
                if name not in hub.files:
                    return self._error(404, "EntryNotFound", commit)
                data = (hub.folder / name).read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _json(self, payload, body: bool) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str | None, commit: str | None = None) -> None:
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
