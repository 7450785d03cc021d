package dashboard

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/graflow-go/taskqueue"
)

// ErrInvalidConfig is returned by [New] for a configuration it cannot serve; the message names the field.
var ErrInvalidConfig = errors.New("dashboard: invalid configuration")

// Page size bounds: the defaults of [Config.PageSize] and [Config.MaxPageSize].
const (
	DefaultPageSize    = 50
	DefaultMaxPageSize = 500
)

// DefaultTimeout bounds the Redis work of one request unless [Config.Timeout] says otherwise.
const DefaultTimeout = 10 * time.Second

// Queue is one queue the dashboard shows.
type Queue struct {
	// Name labels the queue in pages and URLs: 1 to 128 letters, digits and "_.:-". Default: the Admin's key prefix.
	Name string
	// Admin administers the queue: of a [taskqueue.RedisTaskQueue] or a [taskqueue.ShardedQueue]. Required.
	Admin *taskqueue.Admin
	// Schedules are the queue's periodic schedules; nil leaves the schedules page out.
	Schedules *taskqueue.Schedules

	history historySource // the history of the charts; from Admin by default (history.go)
}

// Config configures [New]. Zero values take the documented defaults.
type Config struct {
	// Queues are the queues shown, at least one, with distinct names.
	Queues []Queue
	// ReadOnly registers no mutating route: no pause, requeue, delete, cancel, trigger or limit, and no control for
	// them.
	ReadOnly bool
	// BasePath is the path the handler is mounted under ("/ops/queues"; "" for the root). The handler strips it
	// from requests itself, and builds every link with it: mount the handler on BasePath+"/" without
	// [http.StripPrefix].
	BasePath string
	// PageSize is the default number of tasks per page (default [DefaultPageSize]); MaxPageSize the most a
	// request may ask for (default [DefaultMaxPageSize], at most [taskqueue.MaxListLimit]).
	PageSize, MaxPageSize int
	// Timeout bounds the Redis work of one request (default [DefaultTimeout]).
	Timeout time.Duration
	// CSRFKey signs the CSRF tokens (at least 32 bytes); default a random key per [New], which is enough for one
	// process (tokens do not survive a restart: a form left open must be reloaded).
	CSRFKey []byte
	// Logger receives the errors of requests; default slog.Default().
	Logger *slog.Logger
}

var queueNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// Dashboard is the dashboard's [http.Handler].
type Dashboard struct {
	cfg    Config
	queues []*Queue
	byName map[string]*Queue
	mux    *http.ServeMux
	pages  *pages
	csrf   csrf

	searchSteps int // search steps one page load runs (tests lower it to exercise the script's steps)

	mu      sync.Mutex
	samples map[string]sample // the last Stats reading of each queue, for the pickup rate
}

// sample is one reading of a queue's deliveries counter.
type sample struct {
	delivered int64
	at        time.Time
}

var _ http.Handler = (*Dashboard)(nil)

// New returns the dashboard of cfg.Queues, or an error wrapping [ErrInvalidConfig] naming the field at fault.
func New(cfg Config) (*Dashboard, error) {
	if len(cfg.Queues) == 0 {
		return nil, fmt.Errorf("%w: Queues: at least one queue", ErrInvalidConfig)
	}
	cfg.PageSize = cmp.Or(cfg.PageSize, DefaultPageSize)
	cfg.MaxPageSize = cmp.Or(cfg.MaxPageSize, DefaultMaxPageSize)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	if cfg.MaxPageSize < 1 || cfg.MaxPageSize > taskqueue.MaxListLimit {
		return nil, fmt.Errorf("%w: MaxPageSize must be 1 to %d", ErrInvalidConfig, taskqueue.MaxListLimit)
	}
	if cfg.PageSize < 1 || cfg.PageSize > cfg.MaxPageSize {
		return nil, fmt.Errorf("%w: PageSize must be 1 to MaxPageSize", ErrInvalidConfig)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: Timeout must not be negative", ErrInvalidConfig)
	}
	cfg.BasePath = strings.TrimRight(cfg.BasePath, "/")
	if cfg.BasePath != "" && (!strings.HasPrefix(cfg.BasePath, "/") || strings.ContainsAny(cfg.BasePath, "?#{}")) {
		return nil, fmt.Errorf("%w: BasePath must start with / and hold no ?, # or braces", ErrInvalidConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CSRFKey == nil {
		cfg.CSRFKey = make([]byte, 32)
		_, _ = rand.Read(cfg.CSRFKey)
	} else if len(cfg.CSRFKey) < 32 {
		return nil, fmt.Errorf("%w: CSRFKey must be at least 32 bytes", ErrInvalidConfig)
	}
	d := &Dashboard{cfg: cfg, byName: map[string]*Queue{}, samples: map[string]sample{}, searchSteps: searchBudget / searchStep}
	for i, q := range cfg.Queues {
		if q.Admin == nil {
			return nil, fmt.Errorf("%w: Queues[%d].Admin is nil", ErrInvalidConfig, i)
		}
		q.Name = cmp.Or(q.Name, q.Admin.KeyPrefix())
		if !queueNamePattern.MatchString(q.Name) {
			return nil, fmt.Errorf("%w: Queues[%d].Name %q must be 1 to 128 letters, digits and _.:-", ErrInvalidConfig, i, trim(q.Name, 80))
		}
		if d.byName[q.Name] != nil {
			return nil, fmt.Errorf("%w: Queues[%d].Name %q is taken", ErrInvalidConfig, i, q.Name)
		}
		if q.history == nil {
			q.history = adminHistory{q.Admin}
		}
		d.queues = append(d.queues, &q)
		d.byName[q.Name] = &q
	}
	d.csrf = csrf{key: cfg.CSRFKey, path: cfg.BasePath + "/"}
	d.pages = parsePages()
	d.routes()
	return d, nil
}

// routes registers the pages, and the actions unless read-only.
func (d *Dashboard) routes() {
	m := http.NewServeMux()
	get := func(pattern string, h func(w http.ResponseWriter, r *http.Request, q *Queue) error) {
		m.HandleFunc("GET "+pattern, d.withQueue(h))
	}
	m.HandleFunc("GET /{$}", d.wrap(d.overview))
	m.Handle("GET /static/", staticHandler())
	get("/q/{queue}/{$}", d.tasksPage)
	get("/q/{queue}/task", d.taskPage)
	get("/q/{queue}/dead", d.deadPage)
	get("/q/{queue}/search", d.searchPage)
	get("/q/{queue}/search.json", d.searchJSON)
	get("/q/{queue}/schedules", d.schedulesPage)
	get("/q/{queue}/locks", d.locksPage)
	get("/q/{queue}/groups", d.groupsPage)
	get("/q/{queue}/group", d.groupPage)
	get("/q/{queue}/workflow", d.workflowPage)
	get("/q/{queue}/history", d.historyPage)
	get("/q/{queue}/flow", d.flowPage) // flow.go
	if !d.cfg.ReadOnly {
		post := func(pattern string, h func(w http.ResponseWriter, r *http.Request, q *Queue) error) {
			m.Handle("POST "+pattern, d.csrf.protect(d.withQueue(h)))
		}
		post("/q/{queue}/pause", d.pauseAction)
		post("/q/{queue}/resume", d.resumeAction)
		post("/q/{queue}/task/cancel", d.cancelAction)
		post("/q/{queue}/task/delete", d.deleteAction)
		post("/q/{queue}/dead/selected", d.deadSelectedAction)
		post("/q/{queue}/dead/bulk", d.deadBulkAction)
		post("/q/{queue}/schedules/action", d.scheduleAction)
		post("/q/{queue}/locks/release", d.releaseLockAction)
		post("/q/{queue}/flow/limits", d.flowAction)
	}
	d.mux = m
}

// ServeHTTP serves the dashboard under [Config.BasePath], with security headers on every response.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if d.cfg.BasePath != "" {
		rest, ok := strings.CutPrefix(r.URL.Path, d.cfg.BasePath)
		if !ok || (rest != "" && rest[0] != '/') {
			http.NotFound(w, r)
			return
		}
		if rest == "" {
			http.Redirect(w, r, d.cfg.BasePath+"/", http.StatusFound)
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path = rest
		u.RawPath = ""
		r2.URL = &u
		r = r2
	}
	d.mux.ServeHTTP(w, r)
}

// httpError is an error with the status a page answers with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// wrap turns a page function into a handler: a bounded context, and errors rendered as an error page.
func (d *Dashboard) wrap(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d.cfg.Timeout)
		defer cancel()
		r = r.WithContext(ctx)
		if err := h(w, r); err != nil {
			d.fail(w, r, err)
		}
	}
}

// withQueue resolves the {queue} of the path.
func (d *Dashboard) withQueue(h func(w http.ResponseWriter, r *http.Request, q *Queue) error) http.HandlerFunc {
	return d.wrap(func(w http.ResponseWriter, r *http.Request) error {
		q := d.byName[r.PathValue("queue")]
		if q == nil {
			return notFound("no queue %q", trim(r.PathValue("queue"), 80))
		}
		return h(w, r, q)
	})
}

// fail answers with an error page: the message of a client's error, a generic one (and a log line) for the rest.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, err.Error()
	var he *httpError
	switch {
	case errors.As(err, &he):
		status = he.status
	case errors.Is(err, taskqueue.ErrNotFound), errors.Is(err, taskqueue.ErrGroupNotFound),
		errors.Is(err, taskqueue.ErrWorkflowNotFound), errors.Is(err, taskqueue.ErrScheduleNotFound):
		status = http.StatusNotFound
	case errors.Is(err, taskqueue.ErrInvalidConfig), errors.Is(err, taskqueue.ErrInvalidTaskID):
		status = http.StatusBadRequest
	default:
		d.cfg.Logger.ErrorContext(r.Context(), "dashboard: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	d.render(w, r, status, "error", &errorView{Status: status, Message: trim(msg, 2000)})
}

// trim cuts s to at most n bytes, on a rune boundary, marking the cut.
func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
