// A first app: answers every request with a greeting and what it was asked.
// Deploy it with `orchestrator deploy examples/apps/hello --name hello`.
export const handler = async (event) => {
  console.log(`${event.httpMethod} ${event.path}`);
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      hello: process.env.GREETING ?? "world",
      path: event.path,
      query: event.queryStringParameters ?? {},
    }),
  };
};
