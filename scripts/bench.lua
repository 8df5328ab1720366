-- wrk script for scripts/bench.py. Arguments (after `--`):
--   mode      new | resend | wrong | right
--   nthreads  wrk's -t (each thread takes its own share of keys)
--   expect    the HTTP status every answer must have; 0 accepts any (the warm-up runs)
--   marker    a string every expected answer's body must contain ("-" for none)
--   arg5      new: a two-digit run number, so that every run makes keys no other run made
--             resend | wrong | right: a file of "key code" lines (one prepared key each)
--   clients   how many client addresses the requests come from (default 1). 1: no X-Forwarded-For, every
--             request is the socket peer's (127.0.0.1); N > 1: every request carries X-Forwarded-For with one of
--             N addresses 10.0.0.1, 10.0.0.2, ... (header values only, never contacted), the next one for each
--             request of a thread, the threads starting apart; bench.py names 127.0.0.1 in OTP_TRUSTED_PROXIES
--   rdigits   0..4 (default 0): new keys cycle over 10^rdigits number ranges per thread (see below)
--
-- new:    generate, a new key on every request. Keys are Indian mobiles 9DDDDDDDDD (every 9 followed by nine
--         digits is valid), counted by the service in ranges of their first 7 E.164 digits (OTP_PREFIX_DIGITS=7):
--         +91 9 and the next four digits. For the thread's i-th request (i < 1 000 000), with k = rdigits and
--         N = 10^k: the nine digits are s (k digits), run (2), thread (1), q (6 - k), where s = (i + thread's
--         start) mod N and q = i div N. So consecutive keys of a thread are in N different ranges, and run,
--         thread and i are all in the key: no two runs or threads make the same key. k = 0 is 9 run thread i:
--         one range per thread for 100 000 keys (the layout before --ranges).
-- resend: generate, cycling over prepared keys with a live code (so each request is a resend)
-- wrong:  verify with a wrong code, cycling over prepared keys
-- right:  verify with the right code, each prepared key once; when a thread runs out it counts `exhausted`
--         and repeats its last key (answered ERROR_INVALID_OTP: the run is then reported as invalid)
-- Every request carries X-Request-ID k<key>: the console channel prints it beside the code, which is how
-- bench.py learns the codes of the keys a run generated.

local threads = {}
local counter = 1

function setup(thread)
   thread:set("id", counter - 1)
   counter = counter + 1
   table.insert(threads, thread)
end

local mode, expect, marker
local keys, codes = {}, {}
local index, run = 0, 0
local clients, client_start = 1, 0
local rdigits, ranges, range_start = 0, 1, 0
-- Globals, not locals: done() reads them from each thread with thread:get().
ok, unexpected, exhausted = 0, 0, 0
first_bad = nil

local function read_pool(path, nthreads)
   local n = 0
   for line in io.lines(path) do
      local key, code = line:match("^(%S+)%s+(%S+)$")
      if key then
         if n % nthreads == id then
            table.insert(keys, key)
            table.insert(codes, code)
         end
         n = n + 1
      end
   end
end

local function wrong(code)
   local n = (tonumber(code) + 1) % (10 ^ #code)
   return string.format("%0" .. #code .. "d", n)
end

function init(args)
   mode = args[1]
   local nthreads = tonumber(args[2])
   expect = tonumber(args[3])
   marker = args[4]
   if marker == "-" then marker = nil end
   clients = tonumber(args[6] or "1")
   rdigits = tonumber(args[7] or "0")
   ranges = 10 ^ rdigits
   -- Each thread starts its addresses and ranges at its own share, so that threads do not move in step.
   client_start = math.floor(clients / nthreads) * id
   range_start = math.floor(ranges / nthreads) * id
   if mode == "new" then
      run = tonumber(args[5])
   else
      read_pool(args[5], nthreads)
      if #keys == 0 then error("no keys for thread " .. id .. " in " .. args[5]) end
   end
end

local function client()
   local n = (index + client_start) % clients + 1  -- 1 .. clients: 10.0.0.1 onwards
   return string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

local function post(path, key, body)
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = wrk.headers["Authorization"],
      ["X-Request-ID"] = "k" .. key,
   }
   if clients > 1 then headers["X-Forwarded-For"] = client() end
   return wrk.format("POST", path, headers, body)
end

local function new_key(i)
   local s = ""
   if rdigits > 0 then s = string.format("%0" .. rdigits .. "d", (i + range_start) % ranges) end
   return string.format("9%s%02d%d%0" .. (6 - rdigits) .. "d", s, run, id, math.floor(i / ranges))
end

function request()
   index = index + 1
   if mode == "new" then
      local key = new_key(index)
      return post("/v1/otp/generate", key, '{"request": {"key": "' .. key .. '", "type": "phone"}}')
   end
   local i = index
   if mode == "right" then
      if i > #keys then
         exhausted = exhausted + 1
         i = #keys
      end
   else
      i = (i - 1) % #keys + 1
   end
   local key, code = keys[i], codes[i]
   if mode == "resend" then
      return post("/v1/otp/generate", key, '{"request": {"key": "' .. key .. '", "type": "phone"}}')
   end
   if mode == "wrong" then code = wrong(code) end
   return post("/v1/otp/verify", key,
      '{"request": {"key": "' .. key .. '", "type": "phone", "otp": "' .. code .. '"}}')
end

function response(status, headers, body)
   if expect == 0 or (status == expect and (marker == nil or body:find(marker, 1, true))) then
      ok = ok + 1
   else
      unexpected = unexpected + 1
      if first_bad == nil then first_bad = status .. " " .. body:sub(1, 300) end
   end
end

function done(summary, latency, requests)
   local total_ok, total_bad, total_exhausted, bad = 0, 0, 0, ""
   for _, thread in ipairs(threads) do
      total_ok = total_ok + (thread:get("ok") or 0)
      total_bad = total_bad + (thread:get("unexpected") or 0)
      total_exhausted = total_exhausted + (thread:get("exhausted") or 0)
      local first = thread:get("first_bad")
      if first and bad == "" then bad = first end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "ok": %d, "unexpected": %d, "exhausted": %d, "socket_errors": %d, "timeouts": %d, ' ..
      '"first_bad": "%s"}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, total_ok, total_bad, total_exhausted,
      e.connect + e.read + e.write + e.timeout, e.timeout,
      (bad:gsub('[%c"\\]', " "))))
end
