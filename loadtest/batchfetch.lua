-- batchfetch.lua - fetches that each return a batch of pending messages.
--
-- The subject has S subscribers (loadtest/run: 100 by default, --batch S)
-- whose ids are in the file ids=PATH, one a line.  Each thread alternates
-- one publish to the subject (one copy for each of the S subscribers) with
-- one fetch of the next subscriber in its share (thread t of T takes ids
-- t, t+T, t+2T, ...).  Every subscriber is thus fetched once every S
-- publishes and each fetch returns about S messages, in a steady state that
-- holds about S*S/2 copies.  Half the requests are fan-out publishes to S
-- subscribers, half are fetches of ~S messages: the fetch's own cost is
-- about 2 x (this row's CPU per request) - (the fan-out row's), with the
-- same S.
--
-- Arguments: subject=NAME (default bench.batch), ids=PATH (required),
--            threads=T (wrk's -t, default 1), size=BYTES (default 16).

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
gmq.install()

local publish_request
local fetch_requests = {}
local count = 0
local next_fetch = 0

function init(args)
   local options = gmq.args(args)
   local subject = options.subject or "bench.batch"
   local threads = tonumber(options.threads) or 1
   local ids = gmq.read_lines(assert(options.ids, "batchfetch.lua needs ids=PATH"))
   publish_request = gmq.post("/api/publish",
      gmq.publish_body(subject, gmq.payload(tonumber(options.size) or 16)))
   for i = thread_index, #ids, threads do
      fetch_requests[#fetch_requests + 1] = gmq.post("/api/fetch", gmq.fetch_body(subject, ids[i]))
   end
   assert(#fetch_requests > 0, "fewer subscriber ids than threads")
end

function request()
   count = count + 1
   if count % 2 == 1 then
      return publish_request
   end
   next_fetch = next_fetch % #fetch_requests + 1
   return fetch_requests[next_fetch]
end
