"""The web process: answers every GET with the dyno's name on $PORT."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DYNO = os.environ.get("DYNO") or os.environ.get("PS", "web")
GREETING = os.environ.get("GREETING", "hi")


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"Hello from {DYNO} ({GREETING})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        # One line per request on stdout (the default is stderr).
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main():
    port = int(os.environ.get("PORT", "5000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Hello)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on http://0.0.0.0:{port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        print("web shutting down", flush=True)


if __name__ == "__main__":
    main()
