-- wrk script for the inbound phases: POSTs Segment track messages (about 1 KB each), one per
-- request or a JSON array of `batch` of them, every one with a unique messageId built from a
-- prefix, a random part, the thread id and a counter. Counts 2xx / non-2xx per thread and
-- sums them in done(), which prints one `BENCH {...}` JSON line for bench/run.py.
--
-- Arguments after `--`: template=PATH (from bench/payloads.py) prefix=P batch=N pace_ms=MS
-- (pace_ms > 0 defines delay(): each connection waits a random time, pace_ms on average and
-- exponentially distributed, before its next request. A fixed wait would keep the 64
-- connections in step, so that requests arrive in bursts of 64 at once; random waits make the
-- arrivals the Poisson stream that many independent senders produce.)

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- Per-thread state (each wrk thread has its own Lua state).
ok = 0
non2xx = 0
statuses = {}

local parts = {}      -- odd indices: literal text; even indices: placeholder names
local values = {}
local batch = 1
local prefix = "m"
local rnd = ""
local counter = 0
local users, companies = 10000, 200
local user_ids, company_ids = {}, {}  -- formatted once in init()
local last_second, last_ts = -1, ""

local function parse_args(args)
  local out = {}
  for _, a in ipairs(args) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k then out[k] = v end
  end
  return out
end

local function split(template)
  local out = {}
  local pos = 1
  while true do
    local s, e, name = template:find("@@(%u+)@@", pos)
    if not s then
      table.insert(out, template:sub(pos))
      return out
    end
    table.insert(out, template:sub(pos, s - 1))
    table.insert(out, name)
    pos = e + 1
  end
end

local function timestamp()
  local now = os.time()
  if now ~= last_second then
    last_second = now
    last_ts = os.date("!%Y-%m-%dT%H:%M:%S.000Z", now)
  end
  return last_ts
end

local function message(mid, ts)
  values.MID = mid
  values.UID = user_ids[math.random(1, users)]
  values.CID = company_ids[math.random(1, companies)]
  values.TS = ts
  local buf = {}
  for i = 1, #parts do
    if i % 2 == 1 then buf[i] = parts[i] else buf[i] = values[parts[i]] end
  end
  return table.concat(buf)
end

function init(args)
  local opts = parse_args(args)
  local f = assert(io.open(assert(opts.template, "template=PATH is required"), "r"))
  parts = split(f:read("*a"))
  f:close()
  for i = 1, users do user_ids[i] = string.format("user_%05d", i - 1) end
  for i = 1, companies do company_ids[i] = string.format("company_%03d", i - 1) end
  batch = tonumber(opts.batch or "1")
  prefix = opts.prefix or "m"
  math.randomseed(os.time() * 100 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  rnd = string.format("%06x", math.random(0, 0xffffff))
  local pace = tonumber(opts.pace_ms or "0")
  if pace > 0 then
    function delay() return -pace * math.log(1 - math.random()) end
  end
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local ts = timestamp()
  local base = prefix .. "-" .. rnd .. "-" .. tid .. "-" .. counter
  local body
  if batch <= 1 then
    body = message(base, ts)
  else
    local items = {}
    for i = 1, batch do items[i] = message(base .. "-" .. i, ts) end
    body = "[" .. table.concat(items, ",") .. "]"
  end
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, by_status = 0, 0, {}
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    bad_total = bad_total + (t:get("non2xx") or 0)
    for k, v in pairs(t:get("statuses") or {}) do
      by_status[k] = (by_status[k] or 0) + v
    end
  end
  local items = {}
  for k, v in pairs(by_status) do table.insert(items, string.format('"%s":%d', k, v)) end
  io.write(string.format(
    'BENCH {"ok":%d,"non2xx":%d,"statuses":{%s},"completed":%d,"p50_us":%.1f,"p99_us":%.1f}\n',
    ok_total, bad_total, table.concat(items, ","), summary.requests,
    latency:percentile(50), latency:percentile(99)))
end
