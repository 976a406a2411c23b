// The ceiling for the proxy benchmark: one Node.js process that builds an API
// Gateway v1 event for each request and calls the seed's handler in-process.
const http = require('node:http');
const { handler } = require('../tests/fixtures/seed-app.js');

const port = Number(process.env.PORT || 0);
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const url = new URL(req.url, 'http://localhost');
    const query = {};
    const multiQuery = {};
    for (const [k, v] of url.searchParams) {
      query[k] = v;
      (multiQuery[k] = multiQuery[k] || []).push(v);
    }
    const headers = {};
    const multiHeaders = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i].toLowerCase();
      headers[k] = req.rawHeaders[i + 1];
      (multiHeaders[k] = multiHeaders[k] || []).push(req.rawHeaders[i + 1]);
    }
    const body = Buffer.concat(chunks).toString('utf8');
    const event = {
      resource: '/{proxy+}', path: url.pathname, httpMethod: req.method, headers, multiValueHeaders: multiHeaders,
      queryStringParameters: url.search ? query : null, multiValueQueryStringParameters: url.search ? multiQuery : null,
      pathParameters: null, stageVariables: null,
      requestContext: { httpMethod: req.method, path: url.pathname, requestId: String(Date.now()), stage: '$default',
        identity: { sourceIp: req.socket.remoteAddress, userAgent: headers['user-agent'] || null } },
      body: body.length ? body : null, isBase64Encoded: false,
    };
    const result = await handler(event, { awsRequestId: 'r', getRemainingTimeInMillis: () => 30000 });
    const out = Buffer.from(result.body || '');
    res.writeHead(result.statusCode, { ...(result.headers || {}), 'content-length': out.length });
    res.end(out);
  });
});
server.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
