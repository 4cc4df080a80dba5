-- fanout.lua - synchronous publish to a subject with many subscribers.
--
-- Each request stores one copy per subscriber (loadtest/run subscribes 100
-- by default, --fanout N).  Nothing fetches during the run, so the copies
-- pile up; the broker runs with max_pending = 0 (no limit) and the runner
-- fetches every subscriber after each run, outside the measured window.
-- CPU per request is therefore the cost of one publish fanned out to N.
--
-- Arguments: subject=NAME (default bench.fanout), size=BYTES (default 16).

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
gmq.install()

function init(args)
   gmq.fixed_publish(args, "bench.fanout", "/api/publish")
end
