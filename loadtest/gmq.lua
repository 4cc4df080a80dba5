-- gmq.lua - helpers shared by the wrk scenario scripts (wrk 4.x, LuaJIT).
--
-- A scenario script loads this module with
--     local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
-- so that it works from any current directory.  It then calls
-- gmq.install() to get the standard setup(), response() and done()
-- globals: every response whose status is not 2xx counts as an error,
-- and done() prints one machine-readable line that loadtest/run parses:
--
--   GMQ-RESULT requests=N duration_us=N rps=X p50_us=X p90_us=X p99_us=X
--     p999_us=X max_us=X mean_us=X non2xx=N connect=N read=N write=N
--     timeout=N statuses=200:N,404:N
--
-- Script arguments come after "--" on wrk's command line as key=value
-- words; gmq.args(args) turns them into a table.

local gmq = {}

-- Every thread object, in creation order (main Lua state only).
gmq.threads = {}

-- key=value words from the command line -> table.
function gmq.args(args)
   local parsed = {}
   for _, word in ipairs(args or {}) do
      local key, value = word:match("^([%w_]+)=(.*)$")
      if key then
         parsed[key] = value
      end
   end
   return parsed
end

-- Escapes a string for a JSON string literal (ASCII control characters,
-- quotes and backslashes; everything else passes through).
function gmq.json_string(text)
   return '"' .. text:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"' end
      if c == '\\' then return '\\\\' end
      return string.format("\\u%04x", c:byte())
   end) .. '"'
end

-- A payload of exactly n printable ASCII bytes (no JSON escaping needed).
function gmq.payload(n)
   local pattern = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
   local parts = {}
   local left = n
   while left > 0 do
      local piece = pattern:sub(1, math.min(left, #pattern))
      parts[#parts + 1] = piece
      left = left - #piece
   end
   return table.concat(parts)
end

-- JSON bodies of the API's requests.
function gmq.publish_body(subject, data)
   return '{"subject":' .. gmq.json_string(subject) .. ',"data":' .. gmq.json_string(data) .. '}'
end

-- Makes every request of the run the same publish: POST path (default
-- default_path) with one payload of size=BYTES (default 16) to
-- subject=NAME (default default_subject).  For wrk's init().
function gmq.fixed_publish(args, default_subject, default_path)
   local options = gmq.args(args)
   wrk.method = "POST"
   wrk.path = options.path or default_path
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = gmq.publish_body(options.subject or default_subject,
                               gmq.payload(tonumber(options.size) or 16))
end

function gmq.fetch_body(subject, id)
   return '{"subject":' .. gmq.json_string(subject) .. ',"id":' .. gmq.json_string(id) .. '}'
end

-- A complete POST request for the current thread's target.  Cheaper than
-- wrk.format() for requests built on the fly (no tables, no formatting).
function gmq.post(path, body)
   local host = wrk.headers["Host"]
   return "POST " .. path .. " HTTP/1.1\r\nHost: " .. host ..
          "\r\nContent-Type: application/json\r\nContent-Length: " .. #body ..
          "\r\n\r\n" .. body
end

-- Reads a file of one value per line (subscriber ids written by the runner).
function gmq.read_lines(path)
   local lines = {}
   local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
   for line in file:lines() do
      if line ~= "" then
         lines[#lines + 1] = line
      end
   end
   file:close()
   return lines
end

-- setup(): numbers the threads (global thread_index, 1-based, in each
-- thread's state) and keeps them for done().
local function gmq_setup(thread)
   gmq.threads[#gmq.threads + 1] = thread
   thread:set("thread_index", #gmq.threads)
   if gmq.user_setup then
      gmq.user_setup(thread)
   end
end

-- response(): per-thread status counts (globals read back by done()).
gmq_statuses = {}
gmq_non2xx = 0
local function gmq_response(status, headers, body)
   gmq_statuses[status] = (gmq_statuses[status] or 0) + 1
   if status < 200 or status > 299 then
      gmq_non2xx = gmq_non2xx + 1
   end
   if gmq.user_response then
      gmq.user_response(status, headers, body)
   end
end

local function gmq_done(summary, latency, requests)
   local non2xx = 0
   local statuses = {}
   for _, thread in ipairs(gmq.threads) do
      non2xx = non2xx + (thread:get("gmq_non2xx") or 0)
      for status, count in pairs(thread:get("gmq_statuses") or {}) do
         statuses[status] = (statuses[status] or 0) + count
      end
   end
   local codes = {}
   for status in pairs(statuses) do
      codes[#codes + 1] = status
   end
   table.sort(codes)
   local parts = {}
   for _, status in ipairs(codes) do
      parts[#parts + 1] = status .. ":" .. statuses[status]
   end
   local errors = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "GMQ-RESULT requests=%d duration_us=%d rps=%.1f p50_us=%.1f p90_us=%.1f " ..
      "p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f non2xx=%d connect=%d " ..
      "read=%d write=%d timeout=%d statuses=%s\n",
      summary.requests, summary.duration, summary.requests / seconds,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean, non2xx,
      errors.connect, errors.read, errors.write, errors.timeout,
      #parts > 0 and table.concat(parts, ",") or "-"))
end

-- Installs setup/response/done as globals.  Optional hooks:
--   hooks.setup(thread)                    extra per-thread setup
--   hooks.response(status, headers, body)  extra per-response work
function gmq.install(hooks)
   hooks = hooks or {}
   gmq.user_setup = hooks.setup
   gmq.user_response = hooks.response
   setup = gmq_setup
   response = gmq_response
   done = gmq_done
end

return gmq
