/**
 * The one Lua script behind `redisConnectionBudget`: run atomically by Redis, so that two
 * processes can never both take the last slot.
 *
 * Keys (one hash tag, so all three live in one Redis Cluster slot):
 * - `{key}:holders`, a hash: holder id -> slots held;
 * - `{key}:leases`, a sorted set: holder id -> when its lease expires (Redis server time, ms);
 * - `{key}:waiting`, a sorted set: holder id -> until when it is known to want more slots.
 *
 * Each call states the holder's whole truth: how many slots it holds now (`held`) and how
 * many more it wants (`want`). The script
 * 1. forgets holders whose lease expired (a process that died without saying so) and
 *    waiters that stopped asking;
 * 2. reconciles the holder's count with `held`: lower when Redis counts more (a release or a
 *    grant whose reply was lost), higher, room permitting, when Redis counts fewer (its
 *    lease expired while it was alive but cut off);
 * 3. grants up to `want` more slots while the total stays within `limit`, fairly: while
 *    another holder waits below its fair share (`limit` / holders and waiters), a holder
 *    at or above its own share gets nothing;
 * 4. renews the holder's lease (or removes it, holding nothing);
 * and returns { slots now held, fair share, 1 if another holder waits below its share,
 * holders and waiters in all, 1 if another holder waits holding nothing }.
 *
 * The clock is Redis's own (`TIME`): processes' clocks never have to agree. (Redis 5 and
 * later replicate a script's effects, not the script, so TIME may come before a write; on
 * Redis 3.2 and 4 `replicate_commands` asks for that.)
 */
export const BUDGET_SCRIPT = `
local holders, leases, waiting = KEYS[1], KEYS[2], KEYS[3]
local holder = ARGV[1]
local held = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local wait_ms = tonumber(ARGV[6])

if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
for _, gone in ipairs(expired) do redis.call('HDEL', holders, gone) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', now) end
redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)

local counts = {}
local others = 0
local flat = redis.call('HGETALL', holders)
for i = 1, #flat, 2 do
  local count = tonumber(flat[i + 1])
  counts[flat[i]] = count
  if flat[i] ~= holder then others = others + count end
end

local mine = counts[holder] or 0
if mine > held then
  mine = held
elseif mine < held then
  mine = mine + math.max(0, math.min(held - mine, limit - others - mine))
end

local participants = 0
local seen = {}
for id, _ in pairs(counts) do seen[id] = true; participants = participants + 1 end
local waiters = redis.call('ZRANGE', waiting, 0, -1)
for _, id in ipairs(waiters) do
  if not seen[id] then seen[id] = true; participants = participants + 1 end
end
if want > 0 and not seen[holder] then participants = participants + 1 end
local share = math.max(1, math.floor(limit / math.max(1, participants)))

local starved = 0
local hungry = 0
for _, id in ipairs(waiters) do
  if id ~= holder and (counts[id] or 0) < share then starved = 1 end
  if id ~= holder and (counts[id] or 0) == 0 then hungry = 1 end
end

local grant = 0
if want > 0 then
  local room = math.max(0, limit - others - mine)
  if starved == 1 then room = math.min(room, math.max(0, share - mine)) end
  grant = math.min(want, room)
  mine = mine + grant
  if grant < want then
    redis.call('ZADD', waiting, now + wait_ms, holder)
  else
    redis.call('ZREM', waiting, holder)
  end
else
  redis.call('ZREM', waiting, holder)
end

if mine > 0 then
  redis.call('HSET', holders, holder, mine)
  redis.call('ZADD', leases, now + lease_ms, holder)
else
  redis.call('HDEL', holders, holder)
  redis.call('ZREM', leases, holder)
end
return { mine, share, starved, participants, hungry }
`;
