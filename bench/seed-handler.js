// The example Lambda from the app-orchestrator seed, unchanged.
            exports.handler = async (event) => {
              const path = (event && (event.rawPath || event.path)) || '/';
              const method = ((event && (event.requestContext && event.requestContext.http && event.requestContext.http.method)) || event.httpMethod || 'GET').toUpperCase();

              const ok = (body) => ({ statusCode: 200, headers: { 'Content-Type': 'text/plain' }, body: String(body ?? '') });
              const badRequest = (body) => ({ statusCode: 400, headers: { 'Content-Type': 'text/plain' }, body: String(body ?? '') });
              const notFound = () => ({ statusCode: 404, headers: { 'Content-Type': 'text/plain' }, body: 'Not Found' });
              const getQuery = (name) => {
                const qp = event && (event.queryStringParameters || event.multiValueQueryStringParameters);
                if (!qp) return undefined;
                return (qp[name] && (Array.isArray(qp[name]) ? qp[name][0] : qp[name])) || undefined;
              };
              const getJsonBody = () => {
                if (!event || event.body == null) return {};
                try {
                  return typeof event.body === 'string' ? JSON.parse(event.body) : event.body;
                } catch (e) {
                  return {};
                }
              };
              
              if (path === '/' && method === 'GET') {
                return ok('success');
              }
              
              if (path === '/notFound' && method === 'GET') {
                return badRequest('bad request text');
              }
              
              if (path === '/testProxyingWithQueryParams' && method === 'GET') {
                const text = getQuery('text') || '';
                return ok(`${text}`);
              }
              
              if (path === '/testProxyingWithBody' && method === 'POST') {
                const body = getJsonBody();
                const text = (body && body.text) || '';
                return ok(`${text}`);
              }
              
              return notFound();
            };
