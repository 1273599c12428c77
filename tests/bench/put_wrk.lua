-- put_wrk.lua — like ../shared/bench/put_raftfs.lua (same requests, same WRKJSON line) but the
-- run id comes from RUNID when set, so a warm-up run can create the paths a measured `ow` run
-- then overwrites (compare.sh's own ow:64 run starts with 2,048 inode creations).
--   VALUE_SIZE (1024)  PATHS (0: a new path per request; N: each thread cycles over N paths)
--   RUNID (random when unset)
local value_size = tonumber(os.getenv("VALUE_SIZE") or "1024")
local paths = tonumber(os.getenv("PATHS") or "0")
local threads, counter, my_tid, body = {}, 0, 0, nil
math.randomseed(os.time())
local runid = os.getenv("RUNID") or string.format("%x%04x", os.time(), math.random(0, 65535))

function setup(thread)
  thread:set("wrk_tid", #threads + 1)
  thread:set("wrk_runid", runid)
  table.insert(threads, thread)
end

function init(args)
  my_tid = wrk_tid or 0
  runid = wrk_runid or runid
  local pat = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
  body = string.rep(pat, math.floor(value_size / #pat) + 1):sub(1, value_size)
end

function request()
  counter = counter + 1
  local n = counter
  if paths > 0 then n = counter % paths end
  return wrk.format("PUT", string.format("/v1/files/bench/%s/%d/%d", runid, my_tid, n), nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"rps":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,' ..
    '"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"value_size":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    value_size))
end
