package dashboard

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// staticHandler serves the embedded script and style sheet.
func staticHandler() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	files := http.FileServerFS(sub)
	return http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	}))
}

// pages holds one template per page, each the layout with the page's "content".
type pages struct{ byName map[string]*template.Template }

var pageNames = []string{"overview", "tasks", "task", "dead", "confirm", "search", "schedules", "locks", "groups",
	"group", "workflow", "history", "flow", "error"}

func parsePages() *pages {
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		t := template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html"))
		p.byName[name] = t
	}
	return p
}

// view is what every page's template receives: the layout's fields and the page's Data.
type view struct {
	Title    string
	Base     string // the dashboard's base path
	QBase    string // the current queue's base path; "" outside a queue
	Queue    *Queue
	Queues   []*Queue
	ReadOnly bool
	CSRF     string
	Flash    string
	Data     any
}

type errorView struct {
	Status  int
	Message string
}

// render writes page name with data, with status.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	v := &view{Base: d.cfg.BasePath, Queues: d.queues, ReadOnly: d.cfg.ReadOnly, Flash: trim(r.URL.Query().Get("done"), 300), Data: data}
	if q := d.byName[r.PathValue("queue")]; q != nil {
		v.Queue, v.QBase = q, d.queueBase(q)
	}
	v.Title = name
	if v.Queue != nil {
		v.Title = v.Queue.Name + " · " + name
	}
	if !d.cfg.ReadOnly {
		v.CSRF = d.csrf.token(w, r)
	}
	var buf bytes.Buffer
	if err := d.pages.byName[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		d.cfg.Logger.ErrorContext(r.Context(), "dashboard: render", "page", name, "err", err)
		http.Error(w, "dashboard: the page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (d *Dashboard) queueBase(q *Queue) string { return d.cfg.BasePath + "/q/" + q.Name }

// redirect sends the browser back to a page of the queue after an action, with a message.
func (d *Dashboard) redirect(w http.ResponseWriter, r *http.Request, q *Queue, page, msg string) {
	sep := "?"
	if strings.Contains(page, "?") {
		sep = "&"
	}
	http.Redirect(w, r, d.queueBase(q)+page+sep+"done="+urlEscape(msg), http.StatusSeeOther)
}

var funcs = template.FuncMap{
	"dur":     fmtDur,
	"when":    fmtTime,
	"pretty":  prettyJSON,
	"add":     func(a, b int) int { return a + b },
	"states":  func() []taskqueue.State { return listStates },
	"percent": percentOf,
	"dict":    dict,
	"period":  period,
}

// dict makes a map of its key, value arguments, for passing several values to a shared template.
func dict(kv ...any) map[string]any {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		m[k] = kv[i+1]
	}
	return m
}

var listStates = []taskqueue.State{taskqueue.StatePending, taskqueue.StateScheduled, taskqueue.StateActive, taskqueue.StateDead, taskqueue.StateCancelled}

func percentOf(done, total int) int {
	if total <= 0 {
		return 0
	}
	return min(100, done*100/total)
}

// fmtDur shows a duration rounded for people.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

// prettyJSON indents a JSON text; anything else comes back as it is (the template escapes it either way).
func prettyJSON(s string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err != nil {
		return s
	}
	return b.String()
}

// taskRow is a task as a line of a table.
type taskRow struct {
	ID, Func, Reason, LastError string
	State                       taskqueue.State
	Time                        time.Time
	Attempt, MaxRetries         int
	Created                     time.Time
	FlowKey                     string             // TaskSpec.FlowKey; "" for none
	Priority                    taskqueue.Priority // TaskSpec.Priority; 0 for the default level
}

// record is the part of a task's record (TaskInfo.Record) the pages show.
type record struct {
	Status         string  `json:"status"`
	CreatedAt      float64 `json:"created_at"`
	Strategy       string  `json:"strategy"`
	ResolverID     string  `json:"resolver_id"`
	GroupID        string  `json:"group_id"`
	Attempt        int     `json:"attempt"`
	MaxRetries     int     `json:"max_retries"`
	LastError      string  `json:"last_error"`
	FailedAt       float64 `json:"failed_at"`
	Priority       int     `json:"priority"`
	FlowKey        string  `json:"flow_key"`
	SerializedTask struct {
		Payload struct {
			Module string `json:"module"`
			Name   string `json:"name"`
		} `json:"payload"`
	} `json:"serialized_task"`
	Meta map[string]string `json:"meta"`
}

func parseRecord(raw string) (record, bool) {
	var rec record
	if raw == "" || json.Unmarshal([]byte(raw), &rec) != nil {
		return record{}, false
	}
	return rec, true
}

func unixSeconds(s float64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(s * 1e6))
}

func rowOf(info taskqueue.TaskInfo) taskRow {
	row := taskRow{ID: info.TaskID, State: info.State, Time: info.Score, Reason: info.Reason}
	if rec, ok := parseRecord(info.Record); ok {
		p := rec.SerializedTask.Payload
		if p.Module != "" || p.Name != "" {
			row.Func = p.Module + "." + p.Name
		} else {
			row.Func = rec.ResolverID
		}
		row.Attempt, row.MaxRetries, row.LastError = rec.Attempt, rec.MaxRetries, rec.LastError
		row.Created = unixSeconds(rec.CreatedAt)
		row.FlowKey, row.Priority = trim(rec.FlowKey, 80), taskqueue.Priority(rec.Priority)
	} else if info.Envelope != "" {
		row.Func = "(unreadable envelope)"
	}
	row.Func = trim(row.Func, 120)
	row.Reason = trim(row.Reason, 300)
	row.LastError = trim(row.LastError, 300)
	return row
}

func rowsOf(infos []taskqueue.TaskInfo) []taskRow {
	out := make([]taskRow, len(infos))
	for i, info := range infos {
		out[i] = rowOf(info)
	}
	return out
}

func urlEscape(s string) string { return template.URLQueryEscaper(s) }

func plural(n int, one string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", one)
	}
	return fmt.Sprintf("%d %ss", n, one)
}
