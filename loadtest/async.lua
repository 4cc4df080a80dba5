-- async.lua - asynchronous publish (POST /api/publish/async) to one subject.
--
-- gophermqd validates the body, queues the publish for its worker pool and
-- answers at once; a full queue answers 503 (counted as an error).  The
-- subject needs a subscriber: loadtest/run subscribes one before the run,
-- waits after it until the pending gauge stops moving (so the CPU time of
-- the deferred work is counted) and then fetches what piled up.
--
-- Arguments: subject=NAME (default bench.async), size=BYTES (default 16).

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")
gmq.install()

function init(args)
   gmq.fixed_publish(args, "bench.async", "/api/publish/async")
end
