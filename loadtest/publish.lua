-- publish.lua - synchronous publish of a small message to one subject.
--
-- Every request is the same POST /api/publish, built once per thread, so
-- wrk spends as little CPU as it can per request.  The subject needs a
-- subscriber, or gophermqd answers 404 (counted as an error): loadtest/run
-- subscribes one before the run and fetches what piled up after it.
--
-- Arguments (after "--"): subject=NAME (default bench.publish),
--                         size=BYTES of payload (default 16),
--                         path=URL path (default /api/publish).
-- Example: wrk -t1 -c50 -d5s -s loadtest/publish.lua http://127.0.0.1:8082 -- subject=a.b

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
gmq.install()

function init(args)
   gmq.fixed_publish(args, "bench.publish", "/api/publish")
end
