// Package httpx holds the HTTP plumbing the control plane's servers share: the server
// itself (timeouts), problem details, request logs, metrics, rate limits and
// idempotency.
package httpx

import (
	"net"
	"net/http"
	"time"
)

// Timeouts bound how long a client may hold a connection without making progress.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers (slow-header clients).
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included (slow-body clients). Streaming
	// handlers clear it once they start (http.ResponseController.SetReadDeadline).
	Read time.Duration
	// Idle bounds a kept-alive connection between requests.
	Idle time.Duration
}

// NewServer is the one way the control plane's binaries build an HTTP server: every
// read is bounded, so a client that sends nothing, or a byte at a time, cannot hold
// connections open.
func NewServer(h http.Handler, t Timeouts) *http.Server {
	if t.ReadHeader <= 0 {
		t.ReadHeader = 10 * time.Second
	}
	if t.Read <= 0 {
		t.Read = 30 * time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 120 * time.Second
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, IdleTimeout: t.Idle}
}

// ServeInternal serves h on addr in the background for operators (metrics, health),
// apart from the public API. It returns the server (to Close) and its listener's
// address.
func ServeInternal(addr string, h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	srv := NewServer(h, Timeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second})
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String(), nil
}
