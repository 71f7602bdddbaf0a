-- wrk script: GET a random path from the file given after `--`, one path per line; a second
-- argument "close" asks for a new connection per request (Connection: close).
local paths = {}
local headers = {}

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  if args[2] == "close" then
    headers["Connection"] = "close"
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
