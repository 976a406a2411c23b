-- Posts ~1 KB EventBridge envelopes, each with a unique id, so every request
-- is a new event the service must record durably.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid or 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json; charset=utf-8"
  local pad = string.rep("x", 560)
  template = '{"version":"0","id":"bench-%d-%d-%d","detail-type":"TENANT_PROVISIONING",' ..
    '"source":"TenantManagementService","account":"123456789012","time":"2026-11-23T00:00:00Z",' ..
    '"region":"us-east-1","resources":[],"detail":{"tenant":{"id":"t-%d-%d","name":"Acme Corp",' ..
    '"key":"acme","domains":["acme.example.com"],"contacts":[{"firstName":"Ada","lastName":"Lovelace",' ..
    '"email":"ada@example.com","isPrimary":true}]},"planConfig":{"tier":"basic","size":"SMALL"},' ..
    '"builderConfig":{"type":"CODE_BUILD","config":{"environmentOverride":{"PAD":"' .. pad .. '"}}}}}'
  -- A run id from the command line keeps ids unique across wrk runs.
  run_id = tonumber(args[1]) or os.time()
end

function request()
  counter = counter + 1
  local body = string.format(template, run_id, thread_id, counter, thread_id, counter)
  return wrk.format(nil, nil, nil, body)
end
