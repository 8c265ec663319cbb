package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript runs GCRA atomically in Redis. The clock is Redis's own (TIME),
// so API replicas with skewed clocks share one consistent view. Times are in
// microseconds (below 2^53, exact in Lua's doubles). The key holds the TAT and
// expires when the bucket would be full again, so idle keys vanish by
// themselves. A denied request changes nothing.
//
// KEYS[1] = bucket key; ARGV[1] = emission interval (µs); ARGV[2] = burst.
// Returns {allowed (0|1), remaining, retry_after (µs)}.
var gcraScript = redis.NewScript(`
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now}
end
local ttl = new_tat - now
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ttl / 1000))
return {1, math.floor((tolerance - ttl) / interval), 0}
`)

// Redis is a Limiter shared by every process using the same Redis and prefix.
type Redis struct {
	client redis.UniversalClient
	prefix string
	g      gcra
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter allowing rate requests per per for each key,
// with bursts of up to burst requests (burst < 1 means rate), kept in Redis
// under prefix+key (for example prefix "limitr:ratelimit:"). It panics if
// rate < 1 or per <= 0.
//
// Each Allow is one EVALSHA round trip (EVAL the first time the script is
// missing). Give the client short timeouts and few retries, since the
// middleware fails open on errors and a dead Redis should cost a request
// milliseconds, not seconds: for example ReadTimeout/WriteTimeout 100ms,
// DialTimeout 200ms, MaxRetries -1, DialerRetries 1 (go-redis defaults to 5
// dial attempts 100ms apart).
func NewRedis(client redis.UniversalClient, prefix string, rate int, per time.Duration, burst int) *Redis {
	return &Redis{client: client, prefix: prefix, g: newGCRA(rate, per, burst)}
}

// Allow implements Limiter.
func (r *Redis) Allow(ctx context.Context, key string) (Decision, error) {
	d := Decision{Limit: r.g.rate, Per: r.g.per}
	res, err := gcraScript.Run(ctx, r.client, []string{r.prefix + key},
		r.g.interval.Microseconds(), r.g.burst).Int64Slice()
	if err != nil {
		return d, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(res) != 3 {
		return d, fmt.Errorf("ratelimit: redis: unexpected script result %v", res)
	}
	d.Allowed = res[0] == 1
	d.Remaining = int(res[1])
	d.RetryAfter = time.Duration(res[2]) * time.Microsecond
	return d, nil
}
