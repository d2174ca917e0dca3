local p = ARGV[1]
local removed = redis.call('ZREM', p .. 'snapshots:unarchived', ARGV[2])
if removed == 1 then trim_log(p) end
return removed
