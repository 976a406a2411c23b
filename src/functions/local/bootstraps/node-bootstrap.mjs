// orchestrator's Node.js runtime client: loads the handler named by _HANDLER
// from LAMBDA_TASK_ROOT and serves invocations from the Lambda Runtime API
// (2018-06-01) at AWS_LAMBDA_RUNTIME_API, as AWS's own client does.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const api = process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001';
const colon = api.lastIndexOf(':');
const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
const handlerName = process.env._HANDLER || 'index.handler';

// The HTTP/1.1 response at the start of buf, and where it ends; null when
// it is not complete yet. Header names come back in lowercase.
function parseResponse(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buf.toString('latin1', 0, end + 2);
  let eol = head.indexOf('\r\n');
  const status = parseInt(head.slice(head.indexOf(' ') + 1), 10);
  const headers = {};
  for (let at = eol + 2; at < head.length; at = eol + 2) {
    eol = head.indexOf('\r\n', at);
    const colon = head.indexOf(':', at);
    if (colon < 0 || colon > eol) continue;
    headers[head.slice(at, colon).toLowerCase()] = head.slice(colon + 1, eol).trim();
  }
  let at = end + 4;
  let body;
  if (/chunked/i.test(headers['transfer-encoding'] || '')) {
    const parts = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol < 0) return null;
      const size = parseInt(buf.toString('latin1', at, eol), 16);
      if (size === 0) {
        // No trailers: the chunk's line ends the body; else a blank line after them.
        const last = buf.indexOf('\r\n', eol + 2) === eol + 2 ? eol + 4 : buf.indexOf('\r\n\r\n', eol) + 4;
        if (last < 4 || last > buf.length) return null;
        at = last;
        break;
      }
      if (buf.length < eol + 2 + size + 2) return null;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts).toString('utf8');
  } else {
    const length = Number(headers['content-length'] || 0);
    if (buf.length < at + length) return null;
    body = buf.toString('utf8', at, at + length);
    at += length;
  }
  return { response: { status, headers, body }, end: at };
}

// Requests of the Runtime API, as bytes.
function format(method, route, body, headers = {}) {
  let head = `${method} /2018-06-01/runtime${route} HTTP/1.1\r\nHost: ${api}\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  if (body === undefined) return Buffer.from(`${head}\r\n`, 'latin1');
  const payload = Buffer.from(body, 'utf8');
  head += `Content-Type: application/json\r\nContent-Length: ${payload.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), payload]);
}

// Both clients below take requests that may be pipelined, send them in one
// write and give back a promise of each response, in order. Node's http
// client costs several times more per request, and a worker makes two.

// A minimal HTTP/1.1 client for the Runtime API on one keep-alive TCP socket.
class TcpClient {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    this.waiters = [];
  }

  connect() {
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      for (let parsed; this.waiters.length && (parsed = parseResponse(this.buffer)); ) {
        this.buffer = this.buffer.subarray(parsed.end);
        this.waiters.shift().resolve(parsed.response);
      }
    });
    const fail = (err) => {
      this.socket = null;
      this.buffer = Buffer.alloc(0);
      for (const waiter of this.waiters.splice(0)) waiter.reject(err || new Error('runtime API connection closed'));
    };
    socket.on('error', fail);
    socket.on('close', () => fail());
    this.socket = socket;
  }

  send(...requests) {
    if (!this.socket) this.connect();
    const promises = requests.map(() => new Promise((resolve, reject) => this.waiters.push({ resolve, reject })));
    this.socket.write(requests.length === 1 ? requests[0] : Buffer.concat(requests));
    return promises;
  }
}

// orchestrator's own connection to the same API (two pipes: answers come
// in on one, requests go out on the other), read and written with
// blocking calls. Between
// invocations the worker waits in read(2) and nothing else in it runs:
// frozen, as a Lambda execution environment is between invocations. An
// event then costs one read, not a turn of the event loop and its streams.
const CHANNEL_BUFFER = 64 * 1024;
class BlockingChannel {
  constructor(readFd, writeFd) {
    this.readFd = readFd;
    this.writeFd = writeFd;
    this.buffer = Buffer.allocUnsafe(CHANNEL_BUFFER);
    this.length = 0;
  }

  send(...requests) {
    const data = requests.length === 1 ? requests[0] : Buffer.concat(requests);
    try {
      for (let at = 0; at < data.length; ) at += fs.writeSync(this.writeFd, data, at, data.length - at);
    } catch (err) {
      return requests.map(() => Promise.reject(err));
    }
    return requests.map(() => {
      try {
        return Promise.resolve(this.receive());
      } catch (err) {
        return Promise.reject(err);
      }
    });
  }

  // Blocks until one whole response is in.
  receive() {
    for (;;) {
      if (this.length) {
        const parsed = parseResponse(this.buffer.subarray(0, this.length));
        if (parsed) {
          this.length -= parsed.end;
          if (this.length) this.buffer.copy(this.buffer, 0, parsed.end, parsed.end + this.length);
          else if (this.buffer.length > CHANNEL_BUFFER) this.buffer = Buffer.allocUnsafe(CHANNEL_BUFFER);
          return parsed.response;
        }
      }
      if (this.length === this.buffer.length) {
        const bigger = Buffer.allocUnsafe(this.buffer.length * 2);
        this.buffer.copy(bigger, 0, 0, this.length);
        this.buffer = bigger;
      }
      let read;
      try {
        read = fs.readSync(this.readFd, this.buffer, this.length, this.buffer.length - this.length, null);
      } catch (err) {
        if (err.code === 'EINTR') continue;
        throw err;
      }
      if (read === 0) throw new Error('runtime API connection closed');
      this.length += read;
    }
  }
}

// orchestrator hands its runtimes that connection as well (cheaper than
// loopback TCP): `read,write` descriptors.
const offeredFds = (process.env.ORCHESTRATOR_RUNTIME_API_FDS || '').split(',').map(Number);
delete process.env.ORCHESTRATOR_RUNTIME_API_FDS;
// Assigning to Node's process.env calls setenv(3), and glibc keeps every
// value ever set (and searches them all on the next call): setting the trace
// id per invocation grew a warm worker by ~60 bytes an invocation and slowed
// it down. Handlers and child processes see the same variables in a plain
// copy; values are still coerced to strings, as process.env does.
process.env = new Proxy(
  { ...process.env },
  {
    set(target, key, value) {
      target[key] = String(value);
      return true;
    },
    defineProperty(target, key, descriptor) {
      target[key] = String(descriptor.value);
      return true;
    },
  },
);

const client = offeredFds.length === 2 && offeredFds.every(Number.isInteger)
  ? new BlockingChannel(offeredFds[0], offeredFds[1])
  : new TcpClient(api.slice(0, colon), Number(api.slice(colon + 1)));
const NEXT = format('GET', '/invocation/next');
const call = (method, route, body, headers) => client.send(format(method, route, body, headers))[0];

function errorBody(err) {
  const e = err instanceof Error ? err : new Error(typeof err === 'string' ? err : JSON.stringify(err));
  return JSON.stringify({ errorType: e.name || 'Error', errorMessage: e.message, trace: String(e.stack || '').split('\n') });
}

async function loadHandler() {
  const dot = handlerName.lastIndexOf('.');
  const modulePath = handlerName.slice(0, dot);
  const exportName = handlerName.slice(dot + 1);
  const base = path.resolve(root, modulePath);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((f) => fs.existsSync(f));
  if (!file) {
    throw Object.assign(new Error(`Cannot find module '${modulePath}'`), { name: 'Runtime.ImportModuleError' });
  }
  let mod;
  if (file.endsWith('.mjs')) {
    mod = await import(pathToFileURL(file).href);
  } else {
    try {
      mod = createRequire(file)(file);
    } catch (err) {
      if (!err || err.code !== 'ERR_REQUIRE_ESM') throw err;
      mod = await import(pathToFileURL(file).href);
    }
  }
  const fn = mod[exportName] ?? (mod.default && mod.default[exportName]);
  if (typeof fn !== 'function') {
    throw Object.assign(new Error(`${modulePath}.${exportName} is undefined or not exported`), { name: 'Runtime.HandlerNotFound' });
  }
  return fn;
}

// Async handlers resolve a promise; callback handlers (three parameters) call back.
function run(fn, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(result);
    };
    context.done = done;
    context.succeed = (result) => done(null, result);
    context.fail = (err) => done(err ?? new Error('handler failed'));
    try {
      const out = fn(event, context, done);
      if (out && typeof out.then === 'function') out.then((r) => done(null, r), (e) => done(e ?? new Error('rejected')));
      else if (fn.length < 3) done(null, out);
    } catch (err) {
      done(err);
    }
  });
}

let handler;
try {
  handler = await loadHandler();
} catch (err) {
  console.error(`INIT ERROR ${err && err.stack ? err.stack : err}`);
  await call('POST', '/init/error', errorBody(err), { 'Lambda-Runtime-Function-Error-Type': (err && err.name) || 'Runtime.Unknown' });
  process.exit(1);
}

// The result of one invocation and the poll for the next go out together.
let pending = client.send(NEXT)[0];
for (;;) {
  let next;
  try {
    next = await pending;
  } catch (err) {
    process.exit(1);
  }
  if (next.status === 204) {
    pending = client.send(NEXT)[0];
    continue;
  }
  if (next.status !== 200) process.exit(1);
  const requestId = next.headers['lambda-runtime-aws-request-id'];
  const deadline = Number(next.headers['lambda-runtime-deadline-ms']);
  if (next.headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'];
  const context = {
    awsRequestId: requestId,
    invokedFunctionArn: next.headers['lambda-runtime-invoked-function-arn'],
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  let outcome;
  try {
    const event = next.body ? JSON.parse(next.body) : null;
    const result = await run(handler, event, context);
    const payload = JSON.stringify(result === undefined ? null : result);
    outcome = format('POST', `/invocation/${requestId}/response`, payload === undefined ? 'null' : payload);
  } catch (err) {
    console.error(`ERROR Invoke Error ${err && err.stack ? err.stack : err}`);
    outcome = format('POST', `/invocation/${requestId}/error`, errorBody(err), {
      'Lambda-Runtime-Function-Error-Type': (err && err.name) || 'Error',
    });
  }
  const [posted, following] = client.send(outcome, NEXT);
  posted.catch(() => {});
  pending = following;
}
