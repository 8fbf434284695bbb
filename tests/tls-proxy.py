"""A TLS-terminating reverse proxy for the agent's HTTPS test: what a
deployment puts in front of `infragraph serve`.

    python3 tests/tls-proxy.py CERT KEY UPSTREAM_PORT

Listens on 127.0.0.1 (a free port, printed as `PORT N` on stdout), accepts
TLS with CERT/KEY, and forwards each POST to http://127.0.0.1:UPSTREAM_PORT
with the same path, headers and body; answers with the upstream's answer.
"""

import http.server
import ssl
import sys
import urllib.error
import urllib.request

cert, key, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Proxy(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        req = urllib.request.Request(
            f"http://127.0.0.1:{upstream}{self.path}", data=body, method="POST"
        )
        for h in ("authorization", "content-type"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, answer = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
