#!/usr/bin/env python3
"""A webhook receiver for the tests: an independent check of Entrepot's deliveries.

Usage: receiver.py PORT SECRET [FAIL_FIRST]

Listens on 127.0.0.1:PORT (0 picks one), prints "listening on PORT", then one JSON line per POST:
{"valid": <X-Entrepot-Signature == sha256=HMAC-SHA256(SECRET, body), checked with Python's hmac>,
 "attempt": <X-Entrepot-Attempt>, "content_type": ..., "event": <the parsed body>}.
Answers 500 to the first FAIL_FIRST requests, 204 afterwards.
"""
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, secret = int(sys.argv[1]), sys.argv[2].encode()
fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        given = self.headers.get("X-Entrepot-Signature", "")
        seen += 1
        failing = seen <= fail_first
        record = {
            "valid": hmac.compare_digest(expected, given),
            "attempt": self.headers.get("X-Entrepot-Attempt"),
            "content_type": self.headers.get("Content-Type"),
            "answered": 500 if failing else 204,
            "event": json.loads(body),
        }
        print(json.dumps(record), flush=True)
        self.send_response(500 if failing else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", port), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
