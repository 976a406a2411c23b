#!/usr/bin/env python3
"""Our Node.js runtime client alone: its CPU per invocation, without the service.

Serves the Runtime API to one worker over two inherited pipes (as the local
runtime does: fds 3 and 4, ORCHESTRATOR_RUNTIME_API_FDS), or over loopback TCP
with --tcp, answering each posted result with the 202 and the next event in
one write. The seed's Lambda handles a v1 event for `GET /`. Prints the
worker's user and system CPU per invocation (from /proc/<pid>/stat) and its
memory. The server here is Python, so the rate is Python's; the worker's CPU
per invocation is the figure to compare.

Usage: bench/node-client.py [--tcp] [--invocations N] [--bootstrap FILE] [-- NODE_FLAGS...]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCEPTED = (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 15\r\n"
            b"date: Tue, 01 Dec 2026 09:00:00 GMT\r\n\r\n{\"status\":\"OK\"}")


def v1_event():
    """A v1 event like the proxy's for `GET /` (about 1 KB)."""
    now = int(time.time() * 1000)
    return json.dumps({
        "resource": "/{proxy+}", "path": "/", "httpMethod": "GET",
        "headers": {"host": "seed.localhost", "accept": "*/*", "user-agent": "wrk"},
        "multiValueHeaders": {"host": ["seed.localhost"], "accept": ["*/*"], "user-agent": ["wrk"]},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": ""}, "stageVariables": None,
        "requestContext": {
            "accountId": "000000000000", "apiId": "local", "domainName": "seed.localhost",
            "domainPrefix": "seed", "extendedRequestId": str(uuid.uuid4()), "httpMethod": "GET",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "wrk"}, "path": "/",
            "protocol": "HTTP/1.1", "requestId": str(uuid.uuid4()), "requestTime": "01/Dec/2026:09:00:00 +0000",
            "requestTimeEpoch": now, "resourceId": "local", "resourcePath": "/{proxy+}", "stage": "$default",
        },
        "body": None, "isBase64Encoded": False,
    }, separators=(",", ":")).encode()


class Pipes:
    """Our ends of the worker's pipes, as the socket calls Api makes."""

    def __init__(self, read_fd, write_fd):
        self.read_fd, self.write_fd = read_fd, write_fd

    def recv(self, size):
        return os.read(self.read_fd, size)

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view):]


class Api:
    """The server end of one runtime's connection."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def request(self):
        """Reads one request; returns its path."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buffer[:end].decode("latin1")
                declared = re.search(r"(?im)^content-length:\s*(\d+)", head)
                length = int(declared.group(1)) if declared else 0
                if len(self.buffer) >= end + 4 + length:
                    self.buffer = self.buffer[end + 4 + length:]
                    return head.split(" ")[1]
            chunk = self.sock.recv(65536)
            if not chunk:
                sys.exit("the runtime closed its connection")
            self.buffer += chunk

    @staticmethod
    def event(body):
        head = ("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"lambda-runtime-aws-request-id: {uuid.uuid4()}\r\n"
                f"lambda-runtime-deadline-ms: {int(time.time() * 1000) + 30000}\r\n"
                "lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:seed\r\n"
                "lambda-runtime-trace-id: Root=1-5e1b4151-5ac6c58f5e8e4b2c8d1a6b7c;Parent=5ac6c58f5e8e4b2c;Sampled=0\r\n"
                f"content-length: {len(body)}\r\ndate: Tue, 01 Dec 2026 09:00:00 GMT\r\n\r\n")
        return head.encode() + body


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tcp", action="store_true", help="loopback TCP instead of the socket pair")
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--bootstrap", default=os.path.join(ROOT, "src/functions/local/bootstraps/node-bootstrap.mjs"))
    parser.add_argument("node_flags", nargs="*")
    args = parser.parse_args()

    code = tempfile.mkdtemp()
    shutil.copy(os.path.join(ROOT, "tests/fixtures/seed-app.js"), os.path.join(code, "index.js"))
    env = {"_HANDLER": "index.handler", "LAMBDA_TASK_ROOT": code, "PATH": os.environ["PATH"],
           "AWS_LAMBDA_FUNCTION_NAME": "seed", "AWS_LAMBDA_FUNCTION_VERSION": "1",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}
    command = ["node", "--max-semi-space-size=1", *args.node_flags, args.bootstrap]
    if args.tcp:
        listener = socket.create_server(("127.0.0.1", 0))
        env["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:%d" % listener.getsockname()[1]
        worker = subprocess.Popen(command, env=env, cwd=code)
        ours, _ = listener.accept()
        ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        their_read, our_write = os.pipe()
        our_read, their_write = os.pipe()

        def inherit():
            moved = [os.dup(their_read), os.dup(their_write)]
            os.dup2(moved[0], 3)
            os.dup2(moved[1], 4)

        env["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:9"
        env["ORCHESTRATOR_RUNTIME_API_FDS"] = "3,4"
        worker = subprocess.Popen(command, env=env, cwd=code, pass_fds=(3, 4), preexec_fn=inherit)
        os.close(their_read)
        os.close(their_write)
        ours = Pipes(our_read, our_write)
    try:
        api = Api(ours)
        event = v1_event()
        assert api.request().endswith("/invocation/next")
        ours.sendall(api.event(event))
        warm_up = min(20_000, args.invocations)
        for i in range(warm_up + args.invocations):
            if i == warm_up:
                before, started = cpu_seconds(worker.pid), time.time()
            assert "/response" in api.request()
            assert api.request().endswith("/invocation/next")
            ours.sendall(ACCEPTED + api.event(event))
        after, elapsed = cpu_seconds(worker.pid), time.time() - started
        status = open(f"/proc/{worker.pid}/status").read()
        rss, hwm = (int(re.search(k + r":\s+(\d+)", status).group(1)) // 1024 for k in ("VmRSS", "VmHWM"))
    finally:
        worker.kill()
        shutil.rmtree(code, ignore_errors=True)
    per = lambda k: 1e6 * (after[k] - before[k]) / args.invocations
    print(f"{'tcp' if args.tcp else 'pipes'}: user {per(0):.1f} µs + system {per(1):.1f} µs of worker CPU "
          f"per invocation ({args.invocations / elapsed:.0f} invocations/s); RSS {rss} MiB, peak {hwm} MiB")


if __name__ == "__main__":
    main()
