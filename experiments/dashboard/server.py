"""Live dashboard server: stdlib ThreadingHTTPServer, no web framework.

Why no framework: four read-only GET routes over local files need no routing, templating or
ASGI stack, and every extra dependency is one more thing the toolkit's users must install.

Routes (all GET):
    /                 the page, with every run's current metrics embedded
    /plotly.min.js    the bundled plotting library (cached by the browser, gzip when accepted)
    /api/data         metric rows appended since the caller's cursor, per run
    /api/samples      one iteration's rollouts for the rollout browser

Bound to 127.0.0.1 unless `--host` says otherwise. While bound to loopback, requests whose
Host header is not a loopback name are refused: that stops a web page the user visits from
reading model outputs through DNS rebinding. Clients name runs, never paths, so no request
can read outside the run directories.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import socket
import sys
import time
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from experiments.dashboard.data import RunSource
from experiments.dashboard.page import PLOTLY_ROUTE, plotly_js, render_page

MAX_SAMPLES_PER_REQUEST = 256


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow browser tab must not keep the process alive on Ctrl-C

    def __init__(self, host: str, port: int, runs: "OrderedDict[str, RunSource]", *,
                 refresh_s: float = 5.0, max_chars: int = 20000, verbose: bool = False):
        self.runs = runs
        self.refresh_s = refresh_s
        self.max_chars = max_chars
        self.verbose = verbose
        self.loopback_only = is_loopback(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        js = plotly_js().encode("utf-8")
        self.plotly = js
        self.plotly_gz = gzip.compress(js, compresslevel=6)
        self.plotly_etag = '"' + hashlib.sha256(js).hexdigest()[:20] + '"'

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def boot(self) -> dict:
        return {
            "mode": "live",
            "refresh_s": self.refresh_s,
            "data": {"runs": [run.snapshot() for run in self.runs.values()]},
        }


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        if self.server.verbose:
            super().log_message(format, *args)

    def _host_allowed(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        body = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self._host_allowed():
            self._error(HTTPStatus.FORBIDDEN, "Host header is not a loopback name")
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        route = url.path.lstrip("/")
        try:
            if route in ("", "index.html"):
                page, policy = render_page(self.server.boot(), static=False)
                self._send(200, page.encode("utf-8"), "text/html; charset=utf-8",
                           {"Cache-Control": "no-store", "Content-Security-Policy": policy,
                            "Referrer-Policy": "no-referrer"})
            elif route == PLOTLY_ROUTE:
                self._plotly()
            elif route == "api/data":
                self._data(query)
            elif route == "api/samples":
                self._samples(query)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such route: /{route}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the tab went away mid-response

    def _plotly(self) -> None:
        srv = self.server
        headers = {"Cache-Control": "public, max-age=86400", "ETag": srv.plotly_etag}
        if self.headers.get("If-None-Match") == srv.plotly_etag:
            self.send_response(HTTPStatus.NOT_MODIFIED)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.plotly
        if "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body, headers["Content-Encoding"] = srv.plotly_gz, "gzip"
        self._send(200, body, "text/javascript; charset=utf-8", headers)

    def _data(self, query: dict) -> None:
        try:
            cursor = json.loads(query.get("cursor", ["{}"])[0])
            if not isinstance(cursor, dict):
                raise ValueError
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "cursor must be a JSON object {run: [gen, rows]}")
            return
        runs = []
        for name, run in self.server.runs.items():
            gen, have = None, 0
            got = cursor.get(name)
            if isinstance(got, list) and len(got) == 2 and isinstance(got[1], int):
                gen, have = got
            runs.append(run.snapshot(gen, have))
        self._json({"runs": runs})

    def _samples(self, query: dict) -> None:
        name = query.get("run", [""])[0]
        run = self.server.runs.get(name)
        if run is None:
            self._error(HTTPStatus.NOT_FOUND, f"unknown run: {name!r}")
            return
        try:
            iteration = int(query.get("iteration", [""])[0])
            limit = min(int(query.get("limit", [MAX_SAMPLES_PER_REQUEST])[0]), MAX_SAMPLES_PER_REQUEST)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "iteration and limit must be integers")
            return
        samples, total = run.read_samples(iteration, max(1, limit), self.server.max_chars)
        self._json({"run": name, "iteration": iteration, "total": total, "samples": samples})


def serve(server: DashboardServer) -> None:
    """Serve until Ctrl-C, printing the URL first (tests and scripts read it from stdout)."""
    print(f"thinkrl dashboard: serving {len(server.runs)} run(s) at {server.url}", flush=True)
    if not server.loopback_only:
        print(f"warning: bound to {server.server_address[0]}: anyone who can reach this address "
              "can read the runs' prompts and model outputs", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def static_boot(runs: "OrderedDict[str, RunSource]", samples_per_iteration: int, max_chars: int) -> dict:
    """Boot state for `--static`: everything embedded, including a capped set of samples."""
    snaps = []
    for run in runs.values():
        snap = run.snapshot()
        snap["samples"] = {
            it: run.read_samples(int(it), samples_per_iteration, max_chars)[0]
            for it in snap["sample_counts"]
        }
        snaps.append(snap)
    return {"mode": "static", "refresh_s": 0, "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "data": {"runs": snaps}}
