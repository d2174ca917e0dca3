local A = cjson.decode(ARGV[1])
local p = A.p
local C = A.cfg
local M = C.M
local logkey = p .. 'sharelog'
local wkey = p .. 'window'
local meta = p .. 'window:meta'
local rkey = p .. 'round'

-- 1. checks, before any write
local runkey = p .. 'batch:' .. A.run
local done = tonumber(redis.call('GET', runkey) or '0')
if A.n <= done then return {0} end
if A.prev > done then return {2, done} end
local ns = #A.s
local first = 0
if ns > 0 then
  first = tonumber(redis.call('GET', p .. 'seq') or '0') + 1
  local top = redis.call('XREVRANGE', logkey, '+', '-', 'COUNT', 1)
  if #top > 0 and tonumber(string.match(top[1][1], '^(%d+)')) >= first then
    return redis.error_reply('hashcoop: ' .. logkey .. ' is ahead of ' .. p .. 'seq; not writing')
  end
end

-- 2. batch id, sequence numbers, share log
redis.call('SET', runkey, ints(A.n), 'EX', C.runttl)
local last = 0
if ns > 0 then
  last = redis.call('INCRBY', p .. 'seq', ns)
  redis.call('XADD', logkey, ints(first) .. '-0', 'v', '1', 'batch', A.run .. ':' .. ints(A.n), 'n', ints(ns),
             't', fmt(A.t), 'a', A.la, 's', A.ls)
end

local function decode_entry(s)
  local e = {amt = {}, order = {}}
  local i = 0
  local a = nil
  for tok in string.gmatch(s, '%S+') do
    i = i + 1
    if i == 1 then e.first = tonumber(tok)
    elseif i == 2 then e.last = tonumber(tok)
    elseif i == 3 then e.total = tonumber(tok)
    elseif i == 4 then e.closed = (tok == '1')
    elseif i == 5 then e.time = tonumber(tok)
    elseif a == nil then a = tok
    else e.amt[a] = tonumber(tok); e.order[#e.order + 1] = a; a = nil end
  end
  return e
end

local function encode_entry(e)
  local parts = {ints(e.first), ints(e.last), fmt(e.total), e.closed and '1' or '0', fmt(e.time)}
  for _, a in ipairs(e.order) do
    parts[#parts + 1] = a
    parts[#parts + 1] = fmt(e.amt[a])
  end
  return table.concat(parts, ' ')
end

-- shares lo..hi from the share log: {seq, address, difficulty, worker, hash}
local function log_rows(lo, hi)
  local rows = {}
  local from = ints(lo) .. '-0'
  local s0 = redis.call('XREVRANGE', logkey, from, '-', 'COUNT', 1)
  if #s0 > 0 then from = s0[1][1] end
  for _, ent in ipairs(redis.call('XRANGE', logkey, from, ints(hi) .. '-0')) do
    local base = tonumber(string.match(ent[1], '^(%d+)'))
    local f = {}
    local kv = ent[2]
    for j = 1, #kv, 2 do f[kv[j]] = kv[j + 1] end
    local addrs = {}
    for a in string.gmatch(f.a or '', '%S+') do addrs[#addrs + 1] = a end
    local k = 0
    for line in string.gmatch(f.s or '', '[^\n]+') do
      local seq = base + k
      k = k + 1
      if seq > hi then break end
      if seq >= lo then
        local ai, w, d, sd, job, h = string.match(line, '^(%d+) (%S+) (%S+) (%S+) (%S+) (%S+)')
        rows[#rows + 1] = {seq, addrs[tonumber(ai) + 1], tonumber(d), w, h}
      end
    end
  end
  return rows
end

local wlen = redis.call('LLEN', wkey)
local tail = nil
local tail_stored = false
local tail_dirty = false
if wlen > 0 then
  tail = decode_entry(redis.call('LINDEX', wkey, -1))
  tail_stored = true
end
local function store_tail()
  if tail and tail_dirty then
    if tail_stored then
      redis.call('LSET', wkey, -1, encode_entry(tail))
    else
      redis.call('RPUSH', wkey, encode_entry(tail))
      wlen = wlen + 1
      tail_stored = true
    end
    tail_dirty = false
  end
end
local wtotal = tonumber(redis.call('HGET', meta, 'total') or '0')

local rr = redis.call('HMGET', rkey, 'diff', 'shares', 'start', 'start_seq', 'best', 'best_addr', 'best_worker', 'best_time')
local R = {diff = tonumber(rr[1] or '0'), shares = tonumber(rr[2] or '0'), start = tonumber(rr[3] or '0'),
           start_seq = tonumber(rr[4] or '0'), best = tonumber(rr[5] or '0'), best_addr = rr[6] or '',
           best_worker = rr[7] or '', best_time = tonumber(rr[8] or '0')}

local function hset_pairs(key, order, amt)
  local args = {}
  for _, a in ipairs(order) do
    args[#args + 1] = a
    args[#args + 1] = fmt(amt[a])
    if #args >= 1000 then
      redis.call('HSET', key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

-- the window ending at block share sb, written as an immutable record
local function snapshot(sb, bk, t, addr, wname)
  local bh, nd = bk[1], bk[2]
  local need
  if C.fixed > 0 then need = C.fixed else need = C.factor * nd end
  local total = 0.0
  local amt, order = {}, {}
  local function add(a, d)
    if amt[a] == nil then
      amt[a] = d
      order[#order + 1] = a
    else
      amt[a] = amt[a] + d
    end
  end
  local first_seq, partial = nil, nil
  local idx = wlen - 1
  local stop = false
  while idx >= 0 and not stop do
    local lo = idx - 63
    if lo < 0 then lo = 0 end
    local chunk = redis.call('LRANGE', wkey, lo, idx)
    for j = #chunk, 1, -1 do
      if total >= need then stop = true; break end
      local e = decode_entry(chunk[j])
      if total + e.total <= need then
        for _, a in ipairs(e.order) do add(a, e.amt[a]) end
        total = total + e.total
        first_seq = e.first
      else
        local rows = log_rows(e.first, e.last)
        for r = #rows, 1, -1 do
          local row = rows[r]
          if total >= need then break end
          if total + row[3] <= need then
            add(row[2], row[3])
            total = total + row[3]
            first_seq = row[1]
          else
            partial = need - total
            add(row[2], partial)
            total = need
            first_seq = row[1]
            break
          end
        end
      end
    end
    idx = lo - 1
  end
  local first_share, first_credit = '', ''
  if first_seq then
    local fr = log_rows(first_seq, first_seq)
    if #fr > 0 then
      first_share = fr[1][5]
      first_credit = fmt(partial or fr[1][3])
    end
  end
  local floor_seq = tonumber(string.match(redis.call('LINDEX', wkey, 0), '^(%d+)'))
  local log_from = floor_seq
  if first_seq then log_from = math.max(floor_seq, first_seq - first_seq % M) end
  local skey = p .. 'snapshot:' .. bh
  if redis.call('EXISTS', skey) == 0 then
    redis.call('HSET', skey, 'v', '1', 'hash', bh, 'height', ints(bk[3]), 'seq', ints(sb),
      'first_seq', first_seq and ints(first_seq) or '', 'first_share', first_share, 'first_credit', first_credit,
      'partial', partial and '1' or '0', 'last_share', bh, 'n', fmt(need), 'total', fmt(total),
      'complete', (total >= need) and '1' or '0', 'floor_seq', ints(floor_seq), 'log_from', ints(log_from),
      'network_difficulty', fmt(nd), 'window_factor', fmt(C.factor), 'window_difficulty', fmt(C.fixed),
      'entry_shares', ints(M), 'time', fmt(t), 'created', fmt(A.t), 'finder_address', addr,
      'finder_worker', wname, 'job_id', bk[5], 'addresses', ints(#order))
    hset_pairs(skey .. ':addr', order, amt)
    redis.call('ZADD', p .. 'snapshots:unarchived', log_from, bh)
  end
end

local function close_round(sb, bk, t, addr, wname)
  local bh, nd = bk[1], bk[2]
  local bkey = p .. 'block:' .. bh
  local effort = 0
  if nd > 0 then effort = R.diff / nd end
  redis.call('HSET', bkey, 'hash', bh, 'height', ints(bk[3]), 'seq', ints(sb), 'time', fmt(t), 'address', addr,
    'worker', wname, 'network_difficulty', fmt(nd), 'round_difficulty', fmt(R.diff), 'round_shares', ints(R.shares),
    'round_start', fmt(R.start), 'round_start_seq', ints(R.start_seq), 'effort', fmt(effort),
    'duration', fmt(t - R.start), 'round_best', fmt(R.best), 'round_best_addr', R.best_addr,
    'round_best_worker', R.best_worker, 'job_id', bk[5])
  redis.call('HSETNX', bkey, 'status', 'found')
  redis.call('ZADD', p .. 'blocks', sb, bh)
  R = {diff = 0, shares = 0, start = t, start_seq = sb + 1, best = 0, best_addr = '', best_worker = '', best_time = 0}
end

-- 3. per share: window entries, round, snapshots
local found = {}
for i = 1, ns do
  local sh = A.s[i]
  local seq = first + i - 1
  local a = A.a[sh[1] + 1]
  local wname = A.w[sh[2] + 1]
  local d, sd, t = sh[3], sh[4], sh[5]
  if tail == nil or tail.closed or math.floor(tail.first / M) ~= math.floor(seq / M) then
    store_tail()
    tail = {first = seq, last = seq, total = 0.0, closed = false, time = t, amt = {}, order = {}}
    tail_stored = false
  end
  if tail.amt[a] == nil then
    tail.amt[a] = d
    tail.order[#tail.order + 1] = a
  else
    tail.amt[a] = tail.amt[a] + d
  end
  tail.total = tail.total + d
  tail.last = seq
  if t > tail.time then tail.time = t end
  tail_dirty = true
  wtotal = wtotal + d
  if R.start == 0 then
    R.start = t
    R.start_seq = seq
  end
  R.diff = R.diff + d
  R.shares = R.shares + 1
  if sd > R.best then
    R.best = sd
    R.best_addr = a
    R.best_worker = wname
    R.best_time = t
  end
  if sh[6] > 0 then
    local bk = A.bk[sh[6]]
    tail.closed = true
    tail_dirty = true
    store_tail()
    snapshot(seq, bk, t, a, wname)
    close_round(seq, bk, t, a, wname)
    found[#found + 1] = bk[1]
  end
end
store_tail()

-- 4. network difficulty reference, trimming, round and window state
if ns > 0 then
  local mm = redis.call('HMGET', meta, 'nd_day', 'nd_cur', 'nd_prev')
  local nday, ncur, nprev = tonumber(mm[1] or '0'), tonumber(mm[2] or '0'), tonumber(mm[3] or '0')
  for _, x in ipairs(A.nd) do
    local day, nd = x[1], x[2]
    if day > nday then
      if day == nday + 1 then nprev = ncur else nprev = 0 end
      ncur = nd
      nday = day
    elseif nd > ncur then
      ncur = nd
    end
  end
  local ref = math.max(ncur, nprev)
  local keep
  if C.fixed > 0 then keep = C.fixed * (1 + C.margin) else keep = C.factor * ref * (1 + C.margin) end
  local pops = 0
  while pops < 10000 and wlen > 1 do
    local ht = tonumber(string.match(redis.call('LINDEX', wkey, 0), '^%S+ %S+ (%S+)'))
    if wtotal - ht < keep then break end
    redis.call('LPOP', wkey)
    wlen = wlen - 1
    wtotal = wtotal - ht
    pops = pops + 1
  end
  redis.call('HSET', meta, 'total', fmt(wtotal), 'nd_day', ints(nday), 'nd_cur', fmt(ncur), 'nd_prev', fmt(nprev),
             'nd', fmt(A.ndl), 'keep', fmt(keep))
  redis.call('HSET', rkey, 'diff', fmt(R.diff), 'shares', ints(R.shares), 'start', fmt(R.start),
             'start_seq', ints(R.start_seq), 'best', fmt(R.best), 'best_addr', R.best_addr,
             'best_worker', R.best_worker, 'best_time', fmt(R.best_time))
  if pops > 0 then trim_log(p) end
end
if #found > 0 then
  local excess = redis.call('ZCARD', p .. 'blocks') - C.maxblocks
  if excess > 0 then
    for _, bh in ipairs(redis.call('ZRANGE', p .. 'blocks', 0, excess - 1)) do
      redis.call('ZREM', p .. 'blocks', bh)
      redis.call('DEL', p .. 'block:' .. bh)
      if not redis.call('ZSCORE', p .. 'snapshots:unarchived', bh) then
        redis.call('DEL', p .. 'snapshot:' .. bh, p .. 'snapshot:' .. bh .. ':addr')
      end
    end
  end
end

-- 5. aggregated statistics, block metadata, block status
for _, op in ipairs(A.ops) do
  local c, k = op[1], op[2]
  if c == 'hincr' then
    redis.call('HINCRBY', k, op[3], op[4])
  elseif c == 'addf' then
    local v = redis.call('HGET', k, op[3])
    redis.call('HSET', k, op[3], fmt((v and tonumber(v) or 0) + op[4]))
  elseif c == 'max' then
    local v = redis.call('HGET', k, op[3])
    if (not v) or op[4] > tonumber(v) then
      local args = {op[3], fmt(op[4])}
      for j = 5, #op do args[#args + 1] = op[j] end
      redis.call('HSET', k, unpack(args))
    end
  elseif c == 'setnx' then
    redis.call('HSETNX', k, op[3], op[4])
  elseif c == 'zgt' then
    redis.call('ZADD', k, 'GT', fmt(op[3]), op[4])
  elseif c == 'exp' then
    redis.call('EXPIRE', k, op[3])
  elseif c == 'bucket' then
    local v = redis.call('HGET', k, op[3])
    redis.call('HSET', k, op[3], fmt((v and tonumber(v) or 0) + op[4]))
    if redis.call('HLEN', k) > op[6] then
      for _, f in ipairs(redis.call('HKEYS', k)) do
        if tonumber(f) < op[5] then redis.call('HDEL', k, f) end
      end
    end
    redis.call('EXPIRE', k, op[7])
  elseif c == 'slot' then
    local cur = redis.call('GETRANGE', k, op[3], op[3] + 7)
    local v = 0
    if #cur == 8 then v = struct.unpack('<d', cur) end
    redis.call('SETRANGE', k, op[3], struct.pack('<d', v + op[4]))
    redis.call('EXPIRE', k, op[5])
  elseif c == 'zrem' then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. fmt(op[3]))
  end
end
for _, f in ipairs(A.bf) do
  local bkey = p .. 'block:' .. f[1]
  redis.call('HSET', bkey, 'hash', f[1], 'height', ints(f[2]), 'prevhash', f[3], 'address', f[4], 'worker', f[5],
             'reward', f[6], 'job_id', f[7], 'found_time', f[8])
  redis.call('HSETNX', bkey, 'status', 'found')
end
for _, s in ipairs(A.st) do
  local bkey = p .. 'block:' .. s[1]
  redis.call('HSET', bkey, 'status', s[2], 'status_reason', s[3], 'verdicts', s[4], 'status_time', s[5])
  redis.call('HSETNX', bkey, 'height', ints(s[6]))
end

local out = {1, first, last}
for _, h in ipairs(found) do out[#out + 1] = h end
return out
