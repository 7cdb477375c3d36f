-- wrk script for benches/load.sh: rotates pre-signed notifications (written by
-- `throughput --export DIR`, listed in DIR/index), each sent to the path given.
--   wrk -s benches/load.lua URL -- DIR PATH
local requests = {}
local counter = 0

function init(args)
  local dir, path = args[1], args[2]
  for name in io.lines(dir .. "/index") do
    local file = assert(io.open(dir .. "/" .. name, "rb"))
    local data = file:read("*a")
    file:close()
    local head, body = data:match("^(.-)\r\n\r\n(.*)$")
    local headers = {}
    for line in head:gmatch("[^\r\n]+") do
      local name, value = line:match("^([^:]+): (.*)$")
      headers[name] = value
    end
    requests[#requests + 1] = wrk.format("POST", path, headers, body)
  end
  counter = math.random(#requests)
end

function request()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end
