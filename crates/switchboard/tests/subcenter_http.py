#!/usr/bin/env python3
"""A sub-center's work-order endpoint for the tests: records every POST and answers it.

    subcenter_http.py HOST PORT LOG [--fail-flag FILE]

Each POST appends one JSON line to LOG: {"path", "key" (the Idempotency-Key header), "status"
(what was answered), "body" (the parsed JSON body)}. While FILE exists, every POST is answered 503
(the sub-center is up but failing); otherwise 201, or 200 for a key already accepted (a receiver
that dedups by key, as the outbox expects). Being "down" is simply not running this script.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
FAIL_FLAG = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--fail-flag" else None
accepted = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        key = self.headers.get("Idempotency-Key")
        if FAIL_FLAG and os.path.exists(FAIL_FLAG):
            status = 503
        elif key in accepted:
            status = 200
        else:
            status = 201
            accepted.add(key)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with open(LOG, "a") as f:
            f.write(json.dumps({"path": self.path, "key": key, "status": status, "body": body,
                                "content_type": self.headers.get("Content-Type")}) + "\n")
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer((HOST, PORT), Handler)
print("ready", flush=True)
server.serve_forever()
