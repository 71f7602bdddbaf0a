-- wrk script: POST a random OCSP request from the file given after `--`, one hex-encoded DER
-- request a line (RFC 6960 A.1: Content-Type application/ocsp-request); a second argument
-- "close" asks for a new connection per request (Connection: close).
local bodies = {}
local headers = {["Content-Type"] = "application/ocsp-request"}

local function unhex(text)
  return (text:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      bodies[#bodies + 1] = unhex(line)
    end
  end
  if args[2] == "close" then
    headers["Connection"] = "close"
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  return wrk.format("POST", "/", headers, bodies[math.random(#bodies)])
end
