-- scale.lua - synchronous publish, round-robin over many subjects.
--
-- The subjects are PREFIX.0 .. PREFIX.(COUNT-1), each with one subscriber
-- created by loadtest/run before the run.  Thread t starts at subject
-- (t-1) * COUNT / T and walks forward, so with many subjects nearly every
-- publish touches a subject (and its queue) that is not in the CPU cache:
-- the cost of looking up a subject among COUNT.  The request is built per
-- call (a few string concatenations in LuaJIT), the same way for every
-- COUNT, so the client's share is equal across sizes.
--
-- Arguments: prefix=NAME (default scale), count=N (default 10),
--            threads=T (wrk's -t, default 1), size=BYTES (default 16).

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
gmq.install()

local head, middle, tail, fixed_length
local subjects
local position

function init(args)
   local options = gmq.args(args)
   local threads = tonumber(options.threads) or 1
   subjects = tonumber(options.count) or 10
   local payload = gmq.payload(tonumber(options.size) or 16)
   head = "POST /api/publish HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
          "\r\nContent-Type: application/json\r\nContent-Length: "
   middle = '\r\n\r\n{"subject":"' .. (options.prefix or "scale") .. "."
   tail = '","data":' .. gmq.json_string(payload) .. "}"
   -- body length without the subject number's digits
   fixed_length = #('{"subject":"' .. (options.prefix or "scale") .. ".") + #tail
   position = math.floor((thread_index - 1) * subjects / threads)
end

function request()
   local number = tostring(position)
   position = position + 1
   if position >= subjects then
      position = 0
   end
   return head .. (fixed_length + #number) .. middle .. number .. tail
end
