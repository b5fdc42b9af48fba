"""A loopback fake of the Roboflow REST API: enough for the real `roboflow` SDK to download.

It answers the requests the SDK (1.7.3) makes for
`Roboflow(key).workspace(W).project(P).version(N).download(fmt, location=L)`:

    POST /?api_key=K                        -> {"workspace": W}   (keys with a lowercase letter)
    GET  /W?api_key=K                       -> {"workspace": {...}}
    GET  /W/P?api_key=K                     -> {"project": {...}, "versions": [...]}
    GET  /W/P/N?api_key=K&nocache=true      -> {"version": {"generating": false, "images": n}}
    GET  /W/P/N/FMT?api_key=K&nocache=true  -> {"export": {"link": URL}}  (202 while exporting)
    GET  URL                                -> the zip, with Content-Length

Knobs make it misbehave the ways a real server can (unknown names, a hang, a truncated
or broken zip, a version that never finishes generating). Use it as a context manager:
it points the SDK at itself (env API_URL + roboflow.config.refresh_region_urls()) and
restores everything on exit. No pytest needed: import it from a test.
"""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_STAMP = 1_700_000_000


def zip_folder(folder: Path) -> bytes:
    """The folder's files as zip bytes, paths relative to it (as Roboflow's exports are)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def zip_files(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@dataclass
class FakeRoboflow:
    """The fake API. `hang` names a route that never answers: auth, workspace, project,
    version, export, download (no headers) or download-body (half the body, then silence)."""

    zip_bytes: bytes = b""
    key: str = "testkey123"
    workspace: str = "acme"
    project: str = "weeds"
    version: int = 3
    fmt: str = "yolov11"
    exported: bool = True  # the version lists fmt among its exports: the SDK skips export()
    generating: bool = False  # the version endpoint always says "generating"
    export_pending: bool = False  # the export endpoint always answers 202
    hang: str | None = None
    truncate: bool = False  # full Content-Length, half the body, then close
    content_length: bool = True  # False: omit the header the SDK needs (it then crashes)
    auth_status: int = 200  # e.g. 500: the SDK retries the key check 5 times, 1 s apart
    log: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._saved_api_url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeRoboflow:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        self._saved_api_url = os.environ.get("API_URL")
        os.environ["API_URL"] = self.url
        _refresh_sdk_urls()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved_api_url is None:
            os.environ.pop("API_URL", None)
        else:
            os.environ["API_URL"] = self._saved_api_url
        _refresh_sdk_urls()
        self._stop.set()  # release hanging handlers
        self.close_port()

    def close_port(self) -> None:
        """Stop listening while the SDK still points here: a server that is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ payloads
    def _version_dict(self) -> dict[str, Any]:
        return {
            "id": f"{self.workspace}/{self.project}/{self.version}",
            "name": "fake",
            "created": _STAMP,
            "images": 6,
            "splits": {"train": 4, "valid": 2, "test": 0},
            "augmentation": {},
            "preprocessing": {},
            "exports": [self.fmt] if self.exported else [],
            "generating": self.generating,
            "progress": 0.5 if self.generating else 1.0,
        }

    def _project_dict(self) -> dict[str, Any]:
        return {
            "id": f"{self.workspace}/{self.project}",
            "name": self.project,
            "annotation": "plants",
            "classes": {"crop": 5, "weed": 5},
            "colors": {},
            "created": _STAMP,
            "updated": _STAMP,
            "images": 6,
            "public": True,
            "splits": {"train": 4, "valid": 2},
            "type": "object-detection",
            "unannotated": 0,
        }

    def respond(self, handler: _Handler) -> None:
        """Answer one request; the routes are those of the module docstring."""
        parts = [p for p in urlsplit(handler.path).path.split("/") if p]
        query = parse_qs(urlsplit(handler.path).query)
        route = _route(handler.command, parts)
        self.log.append(f"{handler.command} {'/'.join(parts)} -> {route}")
        if route == self.hang:
            self._stop.wait(30)
            return
        if route == "download":
            return self._send_zip(handler)
        if query.get("api_key", [""])[0] != self.key:
            message = "This API key does not exist (or has been revoked)."
            return handler.send_json(401, {"error": {"message": message, "type": "OAuthException"}})
        not_found = {
            "error": {
                "message": f"Unsupported request. `GET /{'/'.join(parts)}` does not exist or "
                "cannot be loaded due to missing permissions.",
                "type": "GraphMethodException",
            }
        }
        if route == "auth":
            if self.auth_status != 200:
                return handler.send_json(self.auth_status, {"error": {"message": "internal error"}})
            return handler.send_json(200, {"workspace": self.workspace})
        if parts[0] != self.workspace:
            return handler.send_json(404, not_found)
        if route == "workspace":
            info = {
                "name": "Acme",
                "url": self.workspace,
                "projects": [self._project_dict()],
                "members": [],
            }
            return handler.send_json(200, {"workspace": info})
        if parts[1] != self.project:
            return handler.send_json(404, not_found)
        if route == "project":
            return handler.send_json(
                200, {"project": self._project_dict(), "versions": [self._version_dict()]}
            )
        if parts[2] != str(self.version):
            return handler.send_json(404, not_found)
        if route == "version":
            return handler.send_json(200, {"version": self._version_dict()})
        if route == "export":
            if parts[3] != self.fmt:
                return handler.send_json(400, {"error": {"message": f"unknown format {parts[3]}"}})
            if self.export_pending:
                return handler.send_json(202, {"progress": 0.25})
            link = f"{self.url}/download/{self.workspace}-{self.project}-{self.version}.zip"
            return handler.send_json(200, {"export": {"link": link, "format": self.fmt}})
        return handler.send_json(404, not_found)

    def _send_zip(self, handler: _Handler) -> None:
        body = self.zip_bytes
        handler.send_response(200)
        handler.send_header("Content-Type", "application/zip")
        if self.content_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if self.truncate or self.hang == "download-body":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if self.hang == "download-body":
                self._stop.wait(30)
            handler.close_connection = True
            return
        handler.wfile.write(body)


def _route(method: str, parts: list[str]) -> str:
    if method == "POST" and not parts:
        return "auth"
    if parts and parts[0] == "download":
        return "download"
    return {1: "workspace", 2: "project", 3: "version", 4: "export"}.get(len(parts), "unknown")


def _refresh_sdk_urls() -> None:
    """Re-read API_URL into the SDK's modules (they bind it at import)."""
    import roboflow  # noqa: F401  (imports every module that binds API_URL)
    import roboflow.config

    roboflow.config.refresh_region_urls()


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeRoboflow

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server_fake.respond(self)

    def do_POST(self) -> None:  # noqa: N802
        self.server_fake.respond(self)

    def send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the fake keeps its own log
        pass
