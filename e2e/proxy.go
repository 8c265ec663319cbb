package e2e

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a TCP proxy for fault injection: it forwards every connection it accepts
// on a fixed loopback address to a target address. Down cuts every connection at once
// and refuses new ones (the port is closed: clients get "connection refused") until
// Up, which listens on the same address again.
type Proxy struct {
	addr string

	mu       sync.Mutex
	ln       net.Listener
	target   string
	conns    map[net.Conn]struct{}
	accepted int
	cuts     int
	gen      int // incremented by Down: connections of an older generation are cut
	muted    atomic.Bool
	wg       sync.WaitGroup
	closed   bool
}

// NewProxy listens on 127.0.0.1 (a free port) and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	return p, nil
}

// Addr is the address clients connect to; it stays the same across Down and Up.
func (p *Proxy) Addr() string { return p.addr }

// SetTarget changes where new connections go.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Stats returns the connections accepted so far and the connections Down has cut.
func (p *Proxy) Stats() (accepted, cut int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.cuts
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.ln != ln || p.closed {
				p.mu.Unlock()
				c.Close()
				return
			}
			p.accepted++
			target, gen := p.target, p.gen
			p.conns[c] = struct{}{}
			p.mu.Unlock()
			p.wg.Add(1)
			go p.pipe(c, target, gen)
		}
	}()
}

func (p *Proxy) pipe(c net.Conn, target string, gen int) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		return // the backend is down: the client sees its connection closed
	}
	p.mu.Lock()
	if p.gen != gen || p.closed {
		p.mu.Unlock()
		up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, up)
		p.mu.Unlock()
		up.Close()
	}()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn, mutable bool) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !(mutable && p.muted.Load()) {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		// Either side finishing ends both: a half-open connection would hide a cut.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go cp(up, c, false)
	go cp(c, up, true)
	<-done
	<-done
}

// Mute makes the proxy swallow everything the backend sends from now on, while it
// still forwards what clients send: requests reach the server and take effect, their
// answers are lost. Down or Unmute ends it.
func (p *Proxy) Mute() { p.muted.Store(true) }

// Unmute forwards answers again.
func (p *Proxy) Unmute() { p.muted.Store(false) }

// Down closes the listener and every open connection, abruptly (RST where possible).
func (p *Proxy) Down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	p.gen++
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.cuts += len(conns)
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset, not a graceful FIN
		}
		c.Close()
	}
	p.muted.Store(false) // after the cut, so no muted answer slips through
}

// Up listens on the proxy's address again, retrying until deadline.
func (p *Proxy) Up(deadline time.Time) error {
	for {
		ln, err := net.Listen("tcp", p.addr)
		if err == nil {
			p.serve(ln)
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("proxy: closed twice")
	}
	p.closed = true
	p.mu.Unlock()
	p.Down()
	p.wg.Wait()
	return nil
}
