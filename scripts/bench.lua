-- wrk script for scripts/bench.py. Arguments (after `--`):
--   mode      new | resend | wrong | right
--   nthreads  wrk's -t (each thread takes its own share of keys)
--   expect    the HTTP status every answer must have; 0 accepts any (the ceiling)
--   marker    a string every expected answer's body must contain ("-" for none)
--   arg5      new: a two-digit run number, so that every run makes keys no other run made
--             resend | wrong | right: a file of "key code" lines (one prepared key each)
--
-- new:    generate, a new key on every request (9RRTNNNNNN: run, thread, counter; all valid Indian mobiles)
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
   if mode == "new" then
      run = tonumber(args[5])
   else
      read_pool(args[5], nthreads)
      if #keys == 0 then error("no keys for thread " .. id .. " in " .. args[5]) end
   end
end

local function post(path, key, body)
   return wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["Authorization"] = wrk.headers["Authorization"],
      ["X-Request-ID"] = "k" .. key,
   }, body)
end

function request()
   index = index + 1
   if mode == "new" then
      local key = string.format("9%02d%d%06d", run, id, index)
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
