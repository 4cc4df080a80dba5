-- pubfetch.lua - the original GopherMQ k6 scenario, closed-loop.
--
-- The original (loadtest/k6/loadtest.js here) subscribes once to
-- "load.test" and then has every virtual user publish ":(" to it and fetch
-- that one shared subscriber, over and over.  Here each wrk thread sends
-- publish, fetch, publish, fetch, ... to the same subject and subscriber:
-- half the requests are publishes, half are fetches that take whatever
-- copies are pending at that moment (usually zero to a few, since all
-- connections drain the same queue).  That keeps the queue short, as in a
-- consumer that keeps up, and makes every fetch contend for the same
-- subscriber, which is the original's load.  Unlike k6 there is no
-- sleep(1) between iterations: wrk keeps -c connections busy all the time.
--
-- Arguments: subject=NAME (default load.test), id=SUBSCRIBER-ID (required
-- for gophermqd; the runner passes the id it subscribed), data=TEXT
-- (default ":(" as in the original).

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
gmq.install()

local requests
local count = 0

function init(args)
   local options = gmq.args(args)
   local subject = options.subject or "load.test"
   local id = options.id or "00000000-0000-4000-8000-000000000000"
   requests = {
      gmq.post("/api/publish", gmq.publish_body(subject, options.data or ":(")),
      gmq.post("/api/fetch", gmq.fetch_body(subject, id)),
   }
end

function request()
   count = count + 1
   return requests[2 - count % 2]  -- odd: publish, even: fetch
end
