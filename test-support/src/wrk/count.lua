-- wrk script of edge-test-support's `Wrk`: cycles through the requests
-- given after `--` as `host path` pairs, counts every answer outside
-- 200..=299 per thread, and prints one `wrk-summary key=value ...` line
-- with the totals when the run ends.
--
-- wrk itself reports statuses only from 400 up ("Non-2xx or 3xx
-- responses"); this script holds a 1xx or 3xx against the run as well.

local threads = {}

-- Runs in the setup environment, once per thread, before the run.
function setup(thread)
   table.insert(threads, thread)
end

-- Runs in each thread's own environment; args[0] is the URL.
function init(args)
   prepared = {}
   local i = 1
   while args[i] ~= nil do
      local host, path = args[i], args[i + 1]
      if path == nil then
         error("requests come as `host path` pairs; odd argument " .. host)
      end
      -- Built once: wrk.format per request would cost more than edge does.
      table.insert(prepared, wrk.format("GET", path, { Host = host }))
      i = i + 2
   end
   if #prepared == 0 then
      error("no `host path` pairs after --")
   end
   sent = 0
   responses = 0
   non_2xx = 0
   first_non_2xx = 0
end

function request()
   sent = sent + 1
   return prepared[(sent - 1) % #prepared + 1]
end

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non_2xx = non_2xx + 1
      if first_non_2xx == 0 then
         first_non_2xx = status
      end
   end
end

function done(summary, latency, requests)
   local responses, non_2xx, first_non_2xx = 0, 0, 0
   for _, thread in ipairs(threads) do
      responses = responses + thread:get("responses")
      non_2xx = non_2xx + thread:get("non_2xx")
      if first_non_2xx == 0 then
         first_non_2xx = thread:get("first_non_2xx")
      end
   end
   local errors = summary.errors
   io.write(string.format(
      "wrk-summary requests=%d responses=%d non_2xx=%d first_non_2xx=%d"
         .. " connect=%d read=%d write=%d timeout=%d status=%d"
         .. " p99_us=%d max_us=%d duration_us=%d\n",
      summary.requests, responses, non_2xx, first_non_2xx,
      errors.connect, errors.read, errors.write, errors.timeout, errors.status,
      latency:percentile(99.0), latency.max, summary.duration))
end
