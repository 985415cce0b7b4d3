-- wrk: POST the file $BODY to $URL_PATH with $CONTENT_TYPE (and $HEADER_LENGTH as Triton's
-- Inference-Header-Content-Length when set), $DEPTH requests pipelined per write (default 1).
local depth = tonumber(os.getenv("DEPTH") or "1") or 1
local file = assert(io.open(os.getenv("BODY"), "rb"))
local body = file:read("*a")
file:close()

-- An empty variable counts as unset (Lua's "" is true).
local function env(name)
   local value = os.getenv(name)
   if value == nil or value == "" then return nil end
   return value
end

init = function(args)
   local headers = { ["Content-Type"] = env("CONTENT_TYPE") or "application/json" }
   if env("HEADER_LENGTH") then headers["Inference-Header-Content-Length"] = env("HEADER_LENGTH") end
   req = string.rep(wrk.format("POST", os.getenv("URL_PATH"), headers, body), depth)
end

request = function() return req end

-- A non-2xx answer is counted by wrk; a line at the end makes it visible.
done = function(summary, latency, requests)
   io.write(string.format("non-2xx-or-errors: %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
