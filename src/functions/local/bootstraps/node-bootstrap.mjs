// orchestrator's Node.js runtime client: loads the handler named by _HANDLER
// from LAMBDA_TASK_ROOT and serves invocations from the Lambda Runtime API
// (2018-06-01) at AWS_LAMBDA_RUNTIME_API, as AWS's own client does.
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const api = process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001';
const colon = api.lastIndexOf(':');
const host = api.slice(0, colon);
const port = Number(api.slice(colon + 1));
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
const handlerName = process.env._HANDLER || 'index.handler';

function call(method, route, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const all = { ...headers };
    if (body !== undefined) {
      all['content-type'] = all['content-type'] || 'application/json';
      all['content-length'] = Buffer.byteLength(body);
    }
    const req = http.request(
      { host, port, agent, method, path: `/2018-06-01/runtime${route}`, headers: all },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

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
  await call('POST', '/init/error', errorBody(err), { 'lambda-runtime-function-error-type': (err && err.name) || 'Runtime.Unknown' });
  process.exit(1);
}

for (;;) {
  const next = await call('GET', '/invocation/next');
  if (next.status === 204) continue;
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
  try {
    const event = next.body ? JSON.parse(next.body) : null;
    const result = await run(handler, event, context);
    const payload = JSON.stringify(result === undefined ? null : result);
    await call('POST', `/invocation/${requestId}/response`, payload === undefined ? 'null' : payload);
  } catch (err) {
    console.error(`ERROR Invoke Error ${err && err.stack ? err.stack : err}`);
    await call('POST', `/invocation/${requestId}/error`, errorBody(err), {
      'lambda-runtime-function-error-type': (err && err.name) || 'Error',
    });
  }
}
