-- batch.lua - messages end to end with batch publish and batch fetch
-- (issue 11: POST /api/publish/batch, fetch "max", POST /api/ack).
--
-- One subscriber (plain, or with "ack":true) on the subject.  Each thread
-- sends RATIO batch publishes of BATCH messages of SIZE bytes, then one
-- fetch of at most MAX messages, and so on; in ack mode every fetch answer
-- that carries messages is followed by one POST /api/ack with all of their
-- seqs (acks batched), sent before the next publish.  With the defaults a
-- fetch can take 1,000 while 800 arrive between two fetches, so the queue
-- stays short: what is published is fetched (and acknowledged) in the same
-- run.  loadtest/run counts the messages from the daemon's metrics.
--
-- The subscriber's queue holds consecutive seqs (every message of the run
-- goes to it, and none is redelivered within the ack wait the runner sets),
-- and the one-thread daemon serves a fetch at a time, so each answer holds
-- the seqs first..last without a gap: the ack lists exactly those, read
-- from the first and the last message.  Scanning all 1,000 seqs of each
-- answer in Lua would cost wrk more than the server spends.  The runner
-- checks that acked + still in flight = delivered.
--
-- Arguments: subject=NAME (default bench.batch), id=SUBSCRIBER-ID,
--            mode=plain|ack (default plain), batch=N (100), size=BYTES (100),
--            max=N (1000), ratio=N publishes per fetch (8).

local gmq = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "gmq.lua")

local publish_request, fetch_request, ack_head
local ack_mode = false
local ratio = 8
local acks = {}
local count = 0

-- A fetch answer starts with {"subject": (publish and ack answers with
-- {"status":); in ack mode its messages' seqs go into one ack.
local function on_response(status, headers, body)
   if ack_mode and status == 200 and body and body:sub(1, 11) == '{"subject":' then
      local first = tonumber(body:match('"seq":(%d+)'))
      if first then
         local last = tonumber(body:match('.*"seq":(%d+)'))
         local seqs = {}
         for seq = first, last do
            seqs[#seqs + 1] = seq
         end
         acks[#acks + 1] = gmq.post("/api/ack", ack_head .. table.concat(seqs, ",") .. "]}")
      end
   end
end

gmq.install({response = on_response})

function init(args)
   local options = gmq.args(args)
   local subject = gmq.json_string(options.subject or "bench.batch")
   local id = gmq.json_string(options.id or "00000000-0000-4000-8000-000000000000")
   local batch = tonumber(options.batch) or 100
   ratio = tonumber(options.ratio) or 8
   ack_mode = options.mode == "ack"
   local message = '{"subject":' .. subject .. ',"data":' ..
                   gmq.json_string(gmq.payload(tonumber(options.size) or 100)) .. '}'
   local messages = {}
   for i = 1, batch do
      messages[i] = message
   end
   publish_request = gmq.post("/api/publish/batch",
                              '{"messages":[' .. table.concat(messages, ",") .. ']}')
   fetch_request = gmq.post("/api/fetch", '{"subject":' .. subject .. ',"id":' .. id ..
                            ',"max":' .. (tonumber(options.max) or 1000) .. '}')
   ack_head = '{"subject":' .. subject .. ',"id":' .. id .. ',"seqs":['
end

function request()
   if #acks > 0 then
      return table.remove(acks, 1)
   end
   count = count + 1
   if count % (ratio + 1) == 0 then
      return fetch_request
   end
   return publish_request
end
