package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// latencyProxy forwards loopback TCP connections to a target, holding every chunk for half the added round-trip
// time in each direction. Order and pipelining are kept: a chunk waits only for its own delay, not for the
// chunks before it to be answered, as on a real network link with that latency.
type latencyProxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

// startProxy listens on a free 127.0.0.1 port and forwards to target with rtt of added round-trip time.
func startProxy(target string, rtt time.Duration) (*latencyProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &latencyProxy{ln: ln, target: target, oneWay: rtt / 2}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *latencyProxy) addr() string { return p.ln.Addr().String() }

func (p *latencyProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c, u) })
		p.wg.Go(func() { p.pipe(u, c) })
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, each chunk delayed by oneWay from when it was read.
func (p *latencyProxy) pipe(src, dst net.Conn) {
	ch := make(chan chunk, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		for c := range ch {
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b := make([]byte, n)
			copy(b, buf[:n])
			select {
			case ch <- chunk{b: b, at: time.Now().Add(p.oneWay)}:
			case <-ctx.Done():
			}
		}
		if err != nil {
			close(ch)
			<-ctx.Done()
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// close stops accepting, closes every connection and waits for the copies to end.
func (p *latencyProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
