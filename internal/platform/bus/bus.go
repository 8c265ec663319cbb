// Package bus fans messages out to every API replica: Redis pub/sub when Redis is
// configured, in-process channels otherwise (a single node). Messages are hints that
// something changed; the truth is always re-read from Postgres, so a lost message
// costs latency, never correctness.
package bus

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bus publishes and subscribes to named channels.
type Bus interface {
	Publish(ctx context.Context, channel string, msg []byte) error
	// Subscribe delivers messages until ctx ends. Slow subscribers drop messages
	// rather than block publishers.
	Subscribe(ctx context.Context, channel string) <-chan []byte
	Close() error
}

// Memory is an in-process bus.
type Memory struct {
	mu   sync.Mutex
	subs map[string]map[chan []byte]struct{}
}

// NewMemory returns an in-process bus.
func NewMemory() *Memory { return &Memory{subs: map[string]map[chan []byte]struct{}{}} }

// Publish delivers msg to current subscribers of channel.
func (m *Memory) Publish(ctx context.Context, channel string, msg []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs[channel] {
		select {
		case ch <- msg:
		default:
		}
	}
	return nil
}

// Subscribe listens on channel until ctx ends.
func (m *Memory) Subscribe(ctx context.Context, channel string) <-chan []byte {
	ch := make(chan []byte, 64)
	m.mu.Lock()
	if m.subs[channel] == nil {
		m.subs[channel] = map[chan []byte]struct{}{}
	}
	m.subs[channel][ch] = struct{}{}
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		delete(m.subs[channel], ch)
		m.mu.Unlock()
		close(ch)
	}()
	return ch
}

// Close is a no-op.
func (m *Memory) Close() error { return nil }

// Redis is a bus over Redis pub/sub. Local subscribers also receive what this replica
// publishes through Redis, so one code path serves one node or many.
type Redis struct {
	client redis.UniversalClient
	logger *slog.Logger
}

// NewRedis returns a Redis-backed bus.
func NewRedis(client redis.UniversalClient, logger *slog.Logger) *Redis {
	return &Redis{client: client, logger: logger}
}

// Publish sends msg to every replica subscribed to channel.
func (r *Redis) Publish(ctx context.Context, channel string, msg []byte) error {
	return r.client.Publish(ctx, channel, msg).Err()
}

// Subscribe listens on channel until ctx ends, resubscribing after Redis outages (the
// go-redis client reconnects on its own).
func (r *Redis) Subscribe(ctx context.Context, channel string) <-chan []byte {
	out := make(chan []byte, 64)
	ps := r.client.Subscribe(ctx, channel)
	go func() {
		defer close(out)
		defer ps.Close()
		msgs := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- []byte(m.Payload):
				default:
					r.logger.Warn("bus: subscriber is slow, dropping a message", "channel", channel)
				}
			}
		}
	}()
	return out
}

// Close closes the client.
func (r *Redis) Close() error { return r.client.Close() }

// NewRedisClient opens a client tuned for a Redis that only speeds things up: short
// timeouts, no command retries and one dial attempt, so a dead Redis costs a request a
// few milliseconds instead of the client's default retry budget (about 400 ms).
func NewRedisClient(redisURL string) (*redis.Client, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	return redis.NewClient(opts), nil
}
