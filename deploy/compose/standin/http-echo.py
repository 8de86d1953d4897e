#!/usr/bin/python3
"""The stand-in for hashicorp/http-echo: http-echo -listen=[HOST]:PORT -text=TEXT

Answers every request (any method, any path) with 200 and TEXT plus a newline, as text/plain,
and logs one line per request to stdout. Flags are parsed as Go's flag package does for these
two: `-name=value`, `--name=value`, `-name value`."""
import http.server
import sys


def parse(argv):
    flags = {"listen": ":5678", "text": None}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-") or arg in ("-", "--"):
            sys.exit(f"http-echo: unexpected argument {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        if name not in flags:
            sys.exit(f"http-echo: flag provided but not defined: -{name}")
        if not eq:
            if not args:
                sys.exit(f"http-echo: flag needs an argument: -{name}")
            value = args.pop(0)
        flags[name] = value
    if flags["text"] is None:
        sys.exit("http-echo: missing -text")
    host, colon, port = flags["listen"].rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"http-echo: -listen must be [HOST]:PORT, got {flags['listen']!r}")
    return (host.strip("[]") or "0.0.0.0", int(port)), flags["text"]


def main():
    address, text = parse(sys.argv[1:])
    body = (text + "\n").encode()

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, with_body=True):
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(min(length, 1 << 20))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self):
            self.answer(with_body=False)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer

        def log_message(self, fmt, *args):
            print(f"{self.address_string()} {fmt % args}", flush=True)

    server = http.server.ThreadingHTTPServer(address, Echo)
    print(f"http-echo: listening on {address[0]}:{address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
