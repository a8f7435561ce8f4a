-- wrk script: POST the JSON body in $BENCH_BODY to the URL's path with Content-Type application/json.
-- The body holds the placeholder hookInstance below; every request gets its own (CDS Hooks 2.0: a UUID per
-- hook invocation), so the audit log sees distinct calls, as it would from an EHR.
-- With $BENCH_TOKENS set, thread N sends the bearer tokens of the file "$BENCH_TOKENS.N", one per line and each
-- once (each carries its own jti; benchmarks/run.py signs them before the run, since Lua cannot sign).
local placeholder = "00000000-0000-4000-8000-000000000000"
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = file:read("*a")
file:close()
local first, last = string.find(body, placeholder, 1, true)
local head, tail = body, ""
if first then
  head = string.sub(body, 1, first - 1)
  tail = string.sub(body, last + 1)
end

local threads = {}
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
  table.insert(threads, thread)
end

local tokens = nil
function init(args)
  local prefix = os.getenv("BENCH_TOKENS")
  if prefix and prefix ~= "" then
    tokens = {}
    for line in io.lines(prefix .. "." .. thread_number) do
      table.insert(tokens, line)
    end
  end
end

local counter = 0
function request()
  counter = counter + 1
  local id = string.format("%08x-0000-4000-8000-%012x", thread_number or 0, counter)
  local headers = {["Content-Type"] = "application/json"}
  if tokens then
    -- Past the end a token is sent again: the service must answer 401 (replay), which shows as errors.
    headers["Authorization"] = "Bearer " .. tokens[(counter - 1) % #tokens + 1]
  end
  return wrk.format("POST", nil, headers, head .. id .. tail)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
