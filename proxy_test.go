package taskqueue

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chaosProxy forwards loopback TCP connections to a Redis. hold makes it stop passing bytes either way while
// keeping every connection open, as a network partition does: the client's commands go out and no reply comes
// back. release passes on what was held, in order. dropReplyOnce loses the reply of one chosen command: the
// server ran it, the client sees its connection reset. (Chaos scenario 5 and the worker's lost-reply tests.)
type chaosProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	open   chan struct{} // closed while bytes flow
	conns  map[net.Conn]struct{}
	closed chan struct{}
	wg     sync.WaitGroup

	dropMatch func(request []byte) bool // armed by dropReplyOnce; cleared when a request matches
	dropped   atomic.Int32              // replies dropped
}

// proxyLink is one proxied connection: its request side arms the drop of the reply that its reply side reads next.
type proxyLink struct {
	dropNext atomic.Bool
}

func startChaosProxy(t testing.TB, target string) *chaosProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &chaosProxy{ln: ln, target: target, open: make(chan struct{}), conns: map[net.Conn]struct{}{}, closed: make(chan struct{})}
	close(p.open)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *chaosProxy) addr() string { return p.ln.Addr().String() }

func (p *chaosProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		select {
		case <-p.closed:
			p.mu.Unlock()
			_ = c.Close()
			_ = d.Close()
			return
		default:
		}
		p.conns[c], p.conns[d] = struct{}{}, struct{}{}
		p.mu.Unlock()
		l := &proxyLink{}
		p.wg.Add(2)
		go p.pipe(d, c, l, true)
		go p.pipe(c, d, l, false)
	}
}

// pipe copies src to dst, waiting while the proxy holds; it closes both when either side ends. On the request
// side (client to server) a request that matches an armed drop marks the link before it reaches the server; on
// the reply side, a marked link drops what it reads (the reply of that request: a client sends its next command
// on a connection only after the reply of the last) and closes the connection.
func (p *chaosProxy) pipe(dst, src net.Conn, l *proxyLink, requests bool) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.open
			if requests && p.dropMatch != nil && p.dropMatch(buf[:n]) {
				p.dropMatch = nil
				l.dropNext.Store(true)
			}
			p.mu.Unlock()
			select {
			case <-gate:
			case <-p.closed:
				return
			}
			if !requests && l.dropNext.Load() {
				p.dropped.Add(1)
				return // the deferred close resets the client's connection
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// dropReplyOnce arms the proxy to lose the reply of the next request for which match holds (match sees what one
// read of the request side got: a whole command, for the small commands of the tests).
func (p *chaosProxy) dropReplyOnce(match func(request []byte) bool) {
	p.mu.Lock()
	p.dropMatch = match
	p.mu.Unlock()
}

func (p *chaosProxy) close() {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return
	default:
	}
	close(p.closed)
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
