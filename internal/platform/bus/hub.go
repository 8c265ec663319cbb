package bus

import (
	"context"
	"sync"
)

// Hub shares one subscription per channel among many local listeners (a Redis
// subscription holds a connection) and fans wake-ups out to them. A listener holds at
// most one pending wake-up: wake-ups coalesce, since listeners re-read the truth from
// Postgres anyway.
type Hub struct {
	ctx   context.Context
	bus   Bus
	mu    sync.Mutex
	chans map[string]*hubChannel
}

type hubChannel struct {
	listeners map[chan struct{}]struct{}
	cancel    context.CancelFunc
}

// NewHub returns a hub on b; its subscriptions end with ctx.
func NewHub(ctx context.Context, b Bus) *Hub {
	return &Hub{ctx: ctx, bus: b, chans: map[string]*hubChannel{}}
}

// Listen joins channel. The subscription is in place when Listen returns, so a
// wake-up published after the caller reads its state reaches it. leave must be called
// once.
func (h *Hub) Listen(channel string) (wake <-chan struct{}, leave func()) {
	l := make(chan struct{}, 1)
	h.mu.Lock()
	hc := h.chans[channel]
	fresh := hc == nil
	var ctx context.Context
	if fresh {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(h.ctx)
		hc = &hubChannel{listeners: map[chan struct{}]struct{}{}, cancel: cancel}
		h.chans[channel] = hc
	}
	hc.listeners[l] = struct{}{}
	h.mu.Unlock()
	if fresh {
		msgs := h.bus.Subscribe(ctx, channel)
		go h.forward(hc, msgs)
	}
	return l, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(hc.listeners, l)
		if len(hc.listeners) == 0 && h.chans[channel] == hc {
			delete(h.chans, channel)
			hc.cancel()
		}
	}
}

func (h *Hub) forward(hc *hubChannel, msgs <-chan []byte) {
	for range msgs {
		h.mu.Lock()
		for l := range hc.listeners {
			select {
			case l <- struct{}{}:
			default:
			}
		}
		h.mu.Unlock()
	}
}
