package taskqueue

import (
	"slices"
	"sync"
	"time"
)

// taskTimeouts is the one timer structure behind every task timeout of a worker: a run with a timeout joins the
// list of its timeout's duration, at the tail (runs of one duration start, and so expire, in list order), and
// leaves it when it ends. One timer is armed for the earliest deadline at the lists' heads; when it fires, the runs
// whose deadline has passed are cancelled with [ErrTimeout] and the timer is armed for the next one. Adding and
// removing a run costs a lock and a few pointer writes, with no allocation and no timer per run.
type taskTimeouts struct {
	mu    sync.Mutex
	lists []*timeoutList // one per duration in use (a few, usually one)
	timer *time.Timer
	at    time.Time // when the timer fires; zero when it is not armed
}

// timeoutList holds the runs of one timeout duration, by deadline.
type timeoutList struct {
	d          time.Duration
	head, tail *inflight
	n          int
}

// timeoutLink is a run's place in its timeout list.
type timeoutLink struct {
	list       *timeoutList // nil when not in a list
	prev, next *inflight
	deadline   time.Time
}

// maxIdleTimeoutLists bounds the empty lists kept for reuse.
const maxIdleTimeoutLists = 8

func newTaskTimeouts() *taskTimeouts {
	t := &taskTimeouts{}
	t.timer = time.AfterFunc(time.Hour, t.fire)
	t.timer.Stop()
	return t
}

// add puts f in the list of timeout d and returns its deadline.
func (t *taskTimeouts) add(f *inflight, d time.Duration) time.Time {
	t.mu.Lock()
	now := time.Now() // read under the lock: the runs of one list join it in the order of their deadlines
	deadline := now.Add(d)
	var l *timeoutList
	for _, c := range t.lists {
		if c.d == d {
			l = c
			break
		}
	}
	if l == nil {
		l = &timeoutList{d: d}
		t.lists = append(t.lists, l)
	}
	link := &f.timeout
	link.list, link.prev, link.next, link.deadline = l, l.tail, nil, deadline
	if l.tail != nil {
		l.tail.timeout.next = f
	} else {
		l.head = f
	}
	l.tail = f
	l.n++
	if t.at.IsZero() || deadline.Before(t.at) {
		t.at = deadline
		t.timer.Reset(deadline.Sub(now))
	}
	t.mu.Unlock()
	return deadline
}

// remove takes f out of its timeout list, if it is in one. The timer stays armed: when it fires early, it only
// arms itself again.
func (t *taskTimeouts) remove(f *inflight) {
	t.mu.Lock()
	if l := f.timeout.list; l != nil {
		t.unlink(f)
		if l.n == 0 && len(t.lists) > maxIdleTimeoutLists {
			t.lists = slices.DeleteFunc(t.lists, func(c *timeoutList) bool { return c == l })
		}
	}
	t.mu.Unlock()
}

// unlink removes f from its list; t.mu is held.
func (t *taskTimeouts) unlink(f *inflight) {
	link := &f.timeout
	l := link.list
	if l == nil {
		return
	}
	if link.prev != nil {
		link.prev.timeout.next = link.next
	} else {
		l.head = link.next
	}
	if link.next != nil {
		link.next.timeout.prev = link.prev
	} else {
		l.tail = link.prev
	}
	link.list, link.prev, link.next = nil, nil, nil
	l.n--
}

// fire cancels the runs whose deadline has passed and arms the timer for the next deadline.
func (t *taskTimeouts) fire() {
	now := time.Now()
	var expired []*inflight
	t.mu.Lock()
	var next time.Time
	for _, l := range t.lists {
		for l.head != nil && !l.head.timeout.deadline.After(now) {
			f := l.head
			t.unlink(f)
			expired = append(expired, f)
		}
		if l.head != nil && (next.IsZero() || l.head.timeout.deadline.Before(next)) {
			next = l.head.timeout.deadline
		}
	}
	t.at = next
	if !next.IsZero() {
		t.timer.Reset(next.Sub(now))
	}
	t.mu.Unlock()
	for _, f := range expired {
		f.cancel(ErrTimeout)
	}
}

// stop disarms the timer.
func (t *taskTimeouts) stop() {
	t.mu.Lock()
	t.timer.Stop()
	t.at = time.Time{}
	t.mu.Unlock()
}
