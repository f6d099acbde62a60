-- wrk script for bench/run.
-- BENCH_BODY=FILE turns every request into `POST /` with that file as an
-- application/json body; without it wrk sends its plain `GET /`.
-- BENCH_DELAY_MS=N makes each connection wait before its next request (wrk's delay()): a
-- moderate rate of about connections x 1000 / (N + latency) requests/s instead of the most the
-- server can take. The wait is drawn at random, exponentially distributed with mean N ms, as
-- independent users' think times are; the requests then arrive spread out in time, as at a
-- real route. With BENCH_DELAY_KIND=fixed every wait is exactly N ms: connections that were
-- answered in the same millisecond then wake in the same millisecond, so the connections fall
-- into step and the requests arrive in bursts (a worst case, not a moderate load).
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
local delay_kind = os.getenv("BENCH_DELAY_KIND") or "random"
if delay_ms and delay_ms > 0 then
  if delay_kind == "fixed" then
    function delay()
      return delay_ms
    end
  elseif delay_kind == "random" then
    -- Unseeded, so every run draws the same sequence of waits.
    function delay()
      return math.floor(-math.log(1 - math.random()) * delay_ms + 0.5)
    end
  else
    error("BENCH_DELAY_KIND is random or fixed, not " .. delay_kind)
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
