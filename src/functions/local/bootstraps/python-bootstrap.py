# orchestrator's Python runtime client: loads the handler named by _HANDLER
# from LAMBDA_TASK_ROOT and serves invocations from the Lambda Runtime API
# (2018-06-01) at AWS_LAMBDA_RUNTIME_API, as AWS's own client does.
import http.client
import importlib
import json
import os
import sys
import time
import traceback

sys.stdout.reconfigure(line_buffering=True)
sys.stderr.reconfigure(line_buffering=True)

API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
HOST, PORT = API.rsplit(":", 1)
# orchestrator also hands its runtimes their own connection to the same API
# (cheaper than loopback TCP): two pipes, "read,write"; it can be used once.
_OFFERED_FDS = os.environ.pop("ORCHESTRATOR_RUNTIME_API_FDS", None)


class _Pipes:
    """The socket calls http.client makes, on the offered pipes."""

    def __init__(self, read_fd, write_fd):
        self._read_fd, self._write_fd = read_fd, write_fd

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view):]

    def makefile(self, mode):
        # One response per request: nothing is read ahead past its end.
        return open(self._read_fd, mode, closefd=False)

    def close(self):
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class _OfferedConnection(http.client.HTTPConnection):
    def connect(self):
        global _OFFERED_FDS
        if _OFFERED_FDS is None:
            raise ConnectionError("runtime API connection closed")
        read_fd, write_fd = (int(fd) for fd in _OFFERED_FDS.split(","))
        _OFFERED_FDS = None
        for fd in (read_fd, write_fd):
            os.set_inheritable(fd, False)
        self.sock = _Pipes(read_fd, write_fd)


def _connection():
    if _OFFERED_FDS is not None:
        return _OfferedConnection(HOST, int(PORT))
    return http.client.HTTPConnection(HOST, int(PORT))


_conn = _connection()


def call(method, route, body=None, headers=None):
    global _conn
    for attempt in range(2):
        try:
            _conn.request(method, "/2018-06-01/runtime" + route, body=body, headers=headers or {})
            response = _conn.getresponse()
            return response.status, response.headers, response.read()
        except (http.client.HTTPException, OSError):
            _conn.close()
            _conn = _connection()
            if attempt:
                raise


def set_trace_id(value):
    # Assigning to os.environ calls setenv(3), and glibc keeps every value
    # ever set: once per invocation, a warm worker would grow without end.
    # The trace id goes in os.environ's mapping only (where the X-Ray SDK
    # reads it), not in the C environment.
    env = os.environ
    try:
        env._data[env.encodekey("_X_AMZN_TRACE_ID")] = env.encodevalue(value)
    except AttributeError:
        env["_X_AMZN_TRACE_ID"] = value


def error_body(error):
    return json.dumps({
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    })


class Context:
    def __init__(self, request_id, deadline_ms, arn):
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def load_handler():
    root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    sys.path.insert(0, root)
    module_name, function_name = os.environ.get("_HANDLER", "lambda_function.lambda_handler").rsplit(".", 1)
    module = importlib.import_module(module_name.replace("/", "."))
    return getattr(module, function_name)


def main():
    try:
        handler = load_handler()
    except Exception as error:  # noqa: BLE001 - every init failure is reported
        traceback.print_exc()
        call("POST", "/init/error", error_body(error),
             {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)
    while True:
        status, headers, body = call("GET", "/invocation/next")
        if status == 204:
            continue
        if status != 200:
            sys.exit(1)
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        if headers.get("Lambda-Runtime-Trace-Id"):
            set_trace_id(headers["Lambda-Runtime-Trace-Id"])
        context = Context(request_id, int(headers["Lambda-Runtime-Deadline-Ms"]),
                          headers.get("Lambda-Runtime-Invoked-Function-Arn"))
        try:
            result = handler(json.loads(body) if body else None, context)
            call("POST", f"/invocation/{request_id}/response", json.dumps(result),
                 {"Content-Type": "application/json"})
        except Exception as error:  # noqa: BLE001 - reported to the caller
            traceback.print_exc()
            call("POST", f"/invocation/{request_id}/error", error_body(error),
                 {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": type(error).__name__})


main()
