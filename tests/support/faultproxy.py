"""A fault-injecting HTTP proxy on loopback, in front of a real S3-compatible server.

Clients point their endpoint at the proxy; it forwards every request to the
server unchanged, except where a rule matches:

    proxy.fail("GET", r"/trials/t1/", times=1)          # 500 InternalError, not forwarded
    proxy.corrupt("GET", r"checkpoints/.*epoch", times=1)  # forwarded, body bytes flipped
    proxy.drop_header("If-None-Match")                  # a server that ignores the condition

Rules count down `times` (None: forever). `requests` logs (method, path) of every
request it saw. Used by the fault tests; no project code is mocked.
"""
from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str):
        """upstream: 'host:port' of the real server."""
        self.upstream = upstream
        self.rules: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.dropped: set[str] = set()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return "127.0.0.1:%d" % self.server.server_address[1]

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, times: int | None = 1) -> None:
        self._add(method, path, times, "fail")

    def corrupt(self, method: str, path: str, times: int | None = 1) -> None:
        self._add(method, path, times, "corrupt")

    def drop_header(self, name: str) -> None:
        self.dropped.add(name.lower())

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.dropped.clear()

    def _add(self, method, path, times, action) -> None:
        with self.lock:
            self.rules.append({"method": method, "path": re.compile(path), "times": times,
                               "action": action, "hits": 0})

    def match(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests.append((method, path))
            for r in self.rules:
                if r["method"] == method and r["path"].search(path) and r["times"] != 0:
                    r["hits"] += 1
                    if r["times"] is not None:
                        r["times"] -= 1
                    return r["action"]
        return None


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):            # quiet
            pass

        def _any(self):
            body = self._body()
            action = proxy.match(self.command, self.path)
            if action == "fail":
                return self._reply(500, {"Content-Type": "application/xml"},
                                   b"<Error><Code>InternalError</Code><Message>injected"
                                   b"</Message></Error>")
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP and k.lower() not in proxy.dropped}
            conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if action == "corrupt" and data:
                data = bytes(b ^ 0x5A for b in data)
            length = resp.getheader("Content-Length")         # a HEAD's: the object's size
            out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP | {"content-length"}}
            conn.close()
            self._reply(resp.status, out, data, length if self.command == "HEAD" else None)

        def _body(self) -> bytes:
            """The request body, whole (boto3 streams uploads with chunked encoding)."""
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out = b""
                while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline().strip():     # trailers
                    pass
                return out
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _reply(self, status: int, headers: dict, data: bytes, length: str | None = None):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    return Handler
