local function fmt(x) return string.format('%.17g', x) end
local function ints(x) return string.format('%d', x) end

local function trim_log(p)
  local logkey = p .. 'sharelog'
  local head = redis.call('LINDEX', p .. 'window', 0)
  if not head then return end
  local floor = tonumber(string.match(head, '^(%d+)'))
  local un = redis.call('ZRANGE', p .. 'snapshots:unarchived', 0, 0, 'WITHSCORES')
  if #un > 0 and tonumber(un[2]) < floor then floor = tonumber(un[2]) end
  local e = redis.call('XREVRANGE', logkey, ints(floor) .. '-0', '-', 'COUNT', 1)
  if #e > 0 then redis.call('XTRIM', logkey, 'MINID', e[1][1]) end
end
