-- wrk script shared by every cell of bench/http_bench.py.
--
-- Arguments (after `--` on the wrk command line):
--   1: HTTP method (GET or POST)
--   2: a file with one request path per line; requests rotate through them
--   3: optional request body (JSON), sent with Content-Type: application/json
--
-- Every request is formatted once in init(), so the load generator spends its time on sockets,
-- not on Lua. done() prints one machine-readable line that http_bench.py parses.

local requests = {}
local count = 0
local index = 0

function init(args)
  local method = args[1]
  local body = args[3]
  local headers = { ["Authorization"] = "Bearer sk-bench" }
  if body ~= nil and body ~= "" then
    headers["Content-Type"] = "application/json"
  else
    body = nil
  end
  for path in io.lines(args[2]) do
    if path ~= "" then
      count = count + 1
      requests[count] = wrk.format(method, path, headers, body)
    end
  end
  -- Each wrk thread starts at a different offset so threads do not march in step.
  index = math.random(count) - 1
end

function request()
  index = (index % count) + 1
  return requests[index]
end

function done(summary, latency, reqs)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
