-- wrk script for bench/pixel.py: rotate through many pixel URLs and count every answer exactly.
--
--   wrk -t1 -c64 -d60s -s bench/wrk_pixels.lua http://127.0.0.1:PORT -- \
--       PATHS_FILE CONNECTIONS WARM_UNTIL MEASURE_UNTIL DRAINED_FILE
--
-- WARM_UNTIL and MEASURE_UNTIL are CLOCK_MONOTONIC seconds, the clock Python's time.monotonic() reads, so
-- the benchmark can read the server's CPU counters at the very instants the measuring window opens and
-- closes. Responses that arrive before WARM_UNTIL are warm-up; no request is sent after MEASURE_UNTIL.
--
-- wrk has no graceful stop: when its duration ends it abandons the requests in flight, which the server
-- may still record, and then "rows == 200 responses" cannot be exact. So after MEASURE_UNTIL every
-- connection gets an empty request (wrk writes nothing and the connection goes idle) once its last real
-- request is answered. When all connections are idle the thread stops and creates DRAINED_FILE; the
-- benchmark then ends wrk with SIGINT, which still runs done().

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function monotonic()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread state. Globals, not locals, so that done() can read them with thread:get().
requests = {}
next_request = 1
connections = 0
warm_until = 0
measure_until = 0
drained_file = nil
idle = 0
drained = false
ok_total = 0 -- every 200 answer: what the server must have recorded
other_total = 0 -- answers with any other status
ok_window = 0 -- 200 answers inside the measuring window: the throughput
answers_window = 0 -- all answers inside the window: the divisor for CPU per request

-- A line of PATHS_FILE is a URL path, or "PATH<tab>CLIENT_IP<tab>USER_AGENT" (bench/pixel.py --mix realistic):
-- then the request carries "X-Forwarded-For: CLIENT_IP" and "User-Agent: USER_AGENT".
local function format_request(line)
  local path, client_ip, user_agent = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  if path == nil then
    return wrk.format("GET", line)
  end
  return wrk.format("GET", path, { ["X-Forwarded-For"] = client_ip, ["User-Agent"] = user_agent })
end

function init(args)
  for line in io.lines(args[1]) do
    table.insert(requests, format_request(line))
  end
  connections = tonumber(args[2])
  warm_until = tonumber(args[3])
  measure_until = tonumber(args[4])
  drained_file = args[5]
end

local function mark_drained()
  drained = true
  local marker = io.open(drained_file, "w")
  marker:write("drained\n")
  marker:close()
  wrk.thread:stop()
end

function request()
  if monotonic() >= measure_until then
    -- This connection's previous request (if any) has been answered: it now goes quiet for good.
    idle = idle + 1
    if idle >= connections and not drained then
      mark_drained()
    end
    return ""
  end
  local req = requests[next_request]
  next_request = next_request % #requests + 1
  return req
end

function response(status, headers, body)
  local now = monotonic()
  local in_window = now >= warm_until and now < measure_until
  if status == 200 then
    ok_total = ok_total + 1
    if in_window then
      ok_window = ok_window + 1
    end
  else
    other_total = other_total + 1
  end
  if in_window then
    answers_window = answers_window + 1
  end
end

function done(summary, latency, requests_stats)
  local totals = { ok_total = 0, other_total = 0, ok_window = 0, answers_window = 0, idle = 0 }
  local all_drained = true
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
    all_drained = all_drained and thread:get("drained")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"ok_total": %d, "other_total": %d, "ok_window": %d, "answers_window": %d, '
      .. '"idle_connections": %d, "drained": %s, "wrk_requests": %d, "errors_connect": %d, '
      .. '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    totals.ok_total, totals.other_total, totals.ok_window, totals.answers_window, totals.idle,
    tostring(all_drained), summary.requests, e.connect, e.read, e.write, e.status, e.timeout
  ))
end
