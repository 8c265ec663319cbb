package bus

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"
)

func roundTrip(t *testing.T, b Bus) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	channel := "limitr:test:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	msgs := b.Subscribe(ctx, channel)
	other := b.Subscribe(ctx, channel+":other")
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Redis subscriptions become active asynchronously: publish until one arrives.
		if err := b.Publish(ctx, channel, []byte("42")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-msgs:
			if string(m) != "42" {
				t.Fatalf("got %q", m)
			}
			select {
			case m := <-other:
				t.Fatalf("another channel got %q", m)
			case <-time.After(50 * time.Millisecond):
			}
			cancel()
			for range msgs {
			} // closed once the subscription ends
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no message")
		}
	}
}

func TestMemoryBus(t *testing.T) { roundTrip(t, NewMemory()) }

func TestRedisBus(t *testing.T) {
	url := os.Getenv("LIMITR_TEST_REDIS_URL")
	if url == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh)\"`")
	}
	client, err := NewRedisClient(url)
	if err != nil {
		t.Fatal(err)
	}
	b := NewRedis(client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer b.Close()
	roundTrip(t, b)
}

// A dead Redis must cost a call milliseconds, not the client's default dial retries.
func TestRedisClientFailsFast(t *testing.T) {
	client, err := NewRedisClient("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	start := time.Now()
	if err := client.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("a dead Redis took %v", d)
	}
}

func TestNewRedisClientRejectsBadURL(t *testing.T) {
	if _, err := NewRedisClient("http://x"); err == nil {
		t.Fatal("want an error")
	}
}
