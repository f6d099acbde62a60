-- wrk script for bench/run.
-- BENCH_BODY=FILE turns every request into `POST /` with that file as an
-- application/json body; without it wrk sends its plain `GET /`.
-- BENCH_DELAY_MS=N makes each connection wait N ms before its next request (wrk's delay()):
-- a moderate, roughly fixed rate of connections x 1000 / (N + latency) requests/s instead of
-- the most the server can take.
-- done() prints one line, `BENCH_JSON {...}`, that bench/summarize.py reads:
-- counts, wrk's error classes and latency percentiles in microseconds.

local body_file = os.getenv("BENCH_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, p in ipairs({50, 75, 90, 95, 99, 99.9}) do
    parts[#parts + 1] = string.format('"p%s":%d', tostring(p):gsub("%.", "_"), latency:percentile(p))
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max, table.concat(parts, ",")))
end
