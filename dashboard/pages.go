package dashboard

import (
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The read-only pages.

type overviewRow struct {
	Queue  *Queue
	Stats  taskqueue.Stats
	Rate   string // pickups per second since the previous reading, "" for the first
	Err    string
	Shards int
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request) error {
	rows := make([]overviewRow, len(d.queues))
	for i, q := range d.queues {
		rows[i].Queue = q
		st, err := q.Admin.Stats(r.Context())
		if err != nil {
			rows[i].Err = trim(err.Error(), 300)
			d.cfg.Logger.WarnContext(r.Context(), "dashboard: stats", "queue", q.Name, "err", err)
			continue
		}
		rows[i].Stats = st
		rows[i].Rate = d.pickupRate(q.Name, st)
	}
	d.render(w, r, http.StatusOK, "overview", rows)
	return nil
}

// pickupRate returns the deliveries per second since the queue's previous reading (within ten minutes), and
// keeps this one.
func (d *Dashboard) pickupRate(name string, st taskqueue.Stats) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, ok := d.samples[name]
	d.samples[name] = sample{st.Delivered, st.ServerTime}
	dt := st.ServerTime.Sub(prev.at)
	if !ok || dt <= 0 || dt > 10*time.Minute || st.Delivered < prev.delivered {
		return ""
	}
	return strconv.FormatFloat(float64(st.Delivered-prev.delivered)/dt.Seconds(), 'f', 1, 64)
}

// paging reads ?page= (from 1) and ?size= (bounded by MaxPageSize).
func (d *Dashboard) paging(r *http.Request) (page, size int) {
	page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	size, _ = strconv.Atoi(r.URL.Query().Get("size"))
	if size < 1 {
		size = d.cfg.PageSize
	}
	return max(page, 1), min(size, d.cfg.MaxPageSize)
}

type pager struct {
	Page, Size, Pages int
	Total             int64
}

func newPager(page, size int, total int64) pager {
	pages := int((total + int64(size) - 1) / int64(size))
	return pager{Page: page, Size: size, Pages: max(pages, 1), Total: total}
}

func (p pager) Prev() int { return p.Page - 1 }
func (p pager) Next() int {
	if p.Page >= p.Pages {
		return 0
	}
	return p.Page + 1
}

type tasksView struct {
	State  taskqueue.State
	Counts taskqueue.Stats
	Rows   []taskRow
	Pager  pager
	Flow   bool // a row has a flow key or a priority level: the table shows the column
}

func countOf(st taskqueue.Stats, s taskqueue.State) int64 {
	switch s {
	case taskqueue.StatePending:
		return st.Pending
	case taskqueue.StateScheduled:
		return st.Scheduled
	case taskqueue.StateActive:
		return st.Active
	case taskqueue.StateDead:
		return st.Dead
	case taskqueue.StateCancelled:
		return st.Cancelled
	}
	return 0
}

func (d *Dashboard) tasksPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	state := taskqueue.State(r.URL.Query().Get("state"))
	if state == "" {
		state = taskqueue.StatePending
	}
	if !slices.Contains(listStates, state) {
		return badRequest("state must be pending, scheduled, active, dead or cancelled")
	}
	st, err := q.Admin.Stats(r.Context())
	if err != nil {
		return err
	}
	page, size := d.paging(r)
	infos, err := q.Admin.List(r.Context(), state, (page-1)*size, size)
	if err != nil {
		return err
	}
	v := &tasksView{State: state, Counts: st, Rows: rowsOf(infos), Pager: newPager(page, size, countOf(st, state))}
	v.Flow = slices.ContainsFunc(v.Rows, func(r taskRow) bool { return r.FlowKey != "" || r.Priority != taskqueue.PriorityDefault })
	d.render(w, r, http.StatusOK, "tasks", v)
	return nil
}

type taskView struct {
	Info        taskqueue.TaskInfo
	Row         taskRow
	Rec         record
	Pretty      string
	Progress    *taskqueue.TaskProgress
	Result      string
	Lock        *taskqueue.LockInfo
	Timeline    []timelineEntry
	Cancellable bool
	Deletable   bool
}

type timelineEntry struct {
	At   time.Time
	What string
}

func (d *Dashboard) taskPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	id := r.URL.Query().Get("id")
	if id == "" {
		return badRequest("id is required")
	}
	ctx := r.Context()
	info, err := q.Admin.Inspect(ctx, id)
	if err != nil {
		return err
	}
	v := &taskView{Info: info, Row: rowOf(info), Pretty: prettyJSON(cmpOr(info.Record, info.Envelope))}
	v.Rec, _ = parseRecord(info.Record)
	if p, err := q.Admin.TaskProgress(ctx, id); err == nil && !p.At.IsZero() {
		v.Progress = &p
	}
	if res, err := q.Admin.Result(ctx, id); err == nil {
		v.Result = prettyJSON(string(res))
	}
	if l, err := q.Admin.TaskLock(ctx, id); err == nil {
		v.Lock = l
	}
	v.Timeline = timeline(info, v.Rec, v.Progress)
	v.Cancellable = info.State != taskqueue.StateDead && info.State != taskqueue.StateCancelled
	v.Deletable = info.State != taskqueue.StateActive
	d.render(w, r, http.StatusOK, "task", v)
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// timeline lists what is known of a task's life, in time order.
func timeline(info taskqueue.TaskInfo, rec record, p *taskqueue.TaskProgress) []timelineEntry {
	var out []timelineEntry
	if t := unixSeconds(rec.CreatedAt); !t.IsZero() {
		out = append(out, timelineEntry{t, "created"})
	}
	if t := unixSeconds(rec.FailedAt); !t.IsZero() {
		out = append(out, timelineEntry{t, "attempt " + strconv.Itoa(rec.Attempt) + " failed"})
	}
	if p != nil {
		out = append(out, timelineEntry{p.At, "progress " + strconv.FormatFloat(p.Percent, 'f', 0, 64) + "%"})
	}
	if !info.Score.IsZero() {
		what := map[taskqueue.State]string{taskqueue.StateScheduled: "due", taskqueue.StateRetry: "retry due",
			taskqueue.StateActive: "lease ends", taskqueue.StateDead: "dead-lettered", taskqueue.StateCancelled: "cancelled"}[info.State]
		out = append(out, timelineEntry{info.Score, cmpOr(what, string(info.State))})
	}
	slices.SortStableFunc(out, func(a, b timelineEntry) int { return a.At.Compare(b.At) })
	return out
}

// deadFilter selects dead letters by reason and envelope substrings.
type deadFilter struct {
	Reason, Text string
}

func filterOf(r *http.Request) deadFilter {
	f := deadFilter{Reason: r.FormValue("reason"), Text: r.FormValue("text")}
	f.Reason, f.Text = trim(f.Reason, taskqueue.MaxSearchTerm), trim(f.Text, taskqueue.MaxSearchTerm)
	return f
}

func (f deadFilter) empty() bool { return f.Reason == "" && f.Text == "" }

func (f deadFilter) match(info taskqueue.TaskInfo) bool {
	return strings.Contains(info.Reason, f.Reason) && strings.Contains(info.Envelope, f.Text)
}

func (f deadFilter) String() string {
	var parts []string
	if f.Reason != "" {
		parts = append(parts, "reason contains "+strconv.Quote(f.Reason))
	}
	if f.Text != "" {
		parts = append(parts, "envelope contains "+strconv.Quote(f.Text))
	}
	if len(parts) == 0 {
		return "all dead letters"
	}
	return strings.Join(parts, " and ")
}

type deadView struct {
	Filter  deadFilter
	Rows    []taskRow
	Pager   pager
	Scanned int // filtered view: dead letters looked at from From
	From    int
	NextAt  int // filtered view: where the next page starts; 0 when the scan reached the end
}

// maxFilterScan bounds the dead letters one filtered page looks at.
const maxFilterScan = 20 * taskqueue.MaxListLimit

func (d *Dashboard) deadPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	ctx := r.Context()
	st, err := q.Admin.Stats(ctx)
	if err != nil {
		return err
	}
	page, size := d.paging(r)
	v := &deadView{Filter: filterOf(r), Pager: newPager(page, size, st.Dead)}
	if v.Filter.empty() {
		infos, err := q.Admin.List(ctx, taskqueue.StateDead, (page-1)*size, size)
		if err != nil {
			return err
		}
		v.Rows = rowsOf(infos)
		d.render(w, r, http.StatusOK, "dead", v)
		return nil
	}
	v.From, _ = strconv.Atoi(r.URL.Query().Get("from"))
	v.From = max(v.From, 0)
	at := v.From
	for v.Scanned < maxFilterScan && len(v.Rows) < size {
		infos, err := q.Admin.List(ctx, taskqueue.StateDead, at, taskqueue.MaxListLimit)
		if err != nil {
			return err
		}
		for i, info := range infos {
			if v.Filter.match(info) {
				v.Rows = append(v.Rows, rowOf(info))
				if len(v.Rows) == size {
					at += i + 1
					v.Scanned += i + 1
					v.NextAt = at
					break
				}
			}
		}
		if v.NextAt > 0 {
			break
		}
		at += len(infos)
		v.Scanned += len(infos)
		if len(infos) < taskqueue.MaxListLimit {
			break
		}
		v.NextAt = at // the scan bound: continue from here
	}
	if int64(v.NextAt) >= st.Dead {
		v.NextAt = 0
	}
	d.render(w, r, http.StatusOK, "dead", v)
	return nil
}

// Search: one request runs steps until it has a screenful of matches, has scanned searchBudget entries, or has
// spent searchTime; the page then offers to continue (JavaScript continues on its own).
const (
	searchStep    = 500
	searchBudget  = 20 * searchStep
	searchTime    = 2 * time.Second
	searchMatches = 100
)

type searchView struct {
	ID, Text  string
	Exact     *taskRow
	Rows      []taskRow
	Cursor    string
	Scanned   int
	Total     int
	Started   bool
	Remaining bool
}

func (v *searchView) Percent() int {
	if !v.Remaining {
		return 100
	}
	return percentOf(v.Scanned, v.Total)
}

func searchQuery(r *http.Request) (taskqueue.SearchQuery, error) {
	sq := taskqueue.SearchQuery{IDPrefix: r.URL.Query().Get("id"), Contains: r.URL.Query().Get("text")}
	if len(sq.IDPrefix) > taskqueue.MaxSearchTerm || len(sq.Contains) > taskqueue.MaxSearchTerm {
		return sq, badRequest("search terms are at most %d bytes", taskqueue.MaxSearchTerm)
	}
	return sq, nil
}

func (d *Dashboard) searchPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	sq, err := searchQuery(r)
	if err != nil {
		return err
	}
	v := &searchView{ID: sq.IDPrefix, Text: sq.Contains}
	if sq.IDPrefix == "" && sq.Contains == "" {
		d.render(w, r, http.StatusOK, "search", v)
		return nil
	}
	ctx := r.Context()
	v.Started, v.Cursor = true, r.URL.Query().Get("cursor")
	scanned, _ := strconv.Atoi(r.URL.Query().Get("scanned"))
	if v.Cursor == "" && sq.IDPrefix != "" {
		if info, err := q.Admin.Inspect(ctx, sq.IDPrefix); err == nil && strings.Contains(info.Envelope, sq.Contains) {
			row := rowOf(info)
			v.Exact = &row
		}
	}
	deadline := time.Now().Add(searchTime)
	for range d.searchSteps {
		page, err := q.Admin.Search(ctx, sq, v.Cursor, searchStep)
		if err != nil {
			return err
		}
		v.Rows = append(v.Rows, rowsOf(page.Matches)...)
		v.Scanned += page.Scanned
		v.Total, v.Cursor = page.Total, page.Cursor
		if v.Cursor == "" || len(v.Rows) >= searchMatches || time.Now().After(deadline) {
			break
		}
	}
	v.Scanned += max(scanned, 0)
	v.Remaining = v.Cursor != ""
	d.render(w, r, http.StatusOK, "search", v)
	return nil
}

// searchJSON runs one search step for the page's script.
func (d *Dashboard) searchJSON(w http.ResponseWriter, r *http.Request, q *Queue) error {
	sq, err := searchQuery(r)
	if err != nil {
		return err
	}
	page, err := q.Admin.Search(r.Context(), sq, r.URL.Query().Get("cursor"), searchStep)
	if err != nil {
		return err
	}
	type match struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Func  string `json:"func"`
		Error string `json:"error"`
	}
	out := struct {
		Matches []match `json:"matches"`
		Cursor  string  `json:"cursor"`
		Scanned int     `json:"scanned"`
		Total   int     `json:"total"`
	}{Matches: []match{}, Cursor: page.Cursor, Scanned: page.Scanned, Total: page.Total}
	for _, info := range page.Matches {
		row := rowOf(info)
		out.Matches = append(out.Matches, match{row.ID, string(row.State), row.Func, cmpOr(row.Reason, row.LastError)})
	}
	return writeJSON(w, out)
}

type schedulesView struct {
	Schedules []taskqueue.ScheduleInfo
	Missing   bool
}

func (d *Dashboard) schedulesPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	v := &schedulesView{Missing: q.Schedules == nil}
	if q.Schedules != nil {
		list, err := q.Schedules.List(r.Context())
		if err != nil {
			return err
		}
		v.Schedules = list
	}
	d.render(w, r, http.StatusOK, "schedules", v)
	return nil
}

type locksView struct {
	Locks []taskqueue.LockInfo
	Limit int
}

func (d *Dashboard) locksPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	_, size := d.paging(r)
	locks, err := q.Admin.Locks(r.Context(), size)
	if err != nil {
		return err
	}
	d.render(w, r, http.StatusOK, "locks", &locksView{Locks: locks, Limit: size})
	return nil
}

// Groups: one request runs SCAN steps until groupsBudget keys were asked for or a screenful was found.
const (
	groupsStep   = 500
	groupsBudget = 20 * groupsStep
)

type groupsView struct {
	Groups []taskqueue.GroupSummary
	Cursor string
	More   bool
}

func (d *Dashboard) groupsPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	v := &groupsView{Cursor: r.URL.Query().Get("cursor")}
	_, size := d.paging(r)
	for range groupsBudget / groupsStep {
		page, err := q.Admin.Groups(r.Context(), v.Cursor, groupsStep)
		if err != nil {
			return err
		}
		v.Groups = append(v.Groups, page.Groups...)
		if v.Cursor = page.Cursor; v.Cursor == "" || len(v.Groups) >= size {
			break
		}
	}
	v.More = v.Cursor != ""
	slices.SortFunc(v.Groups, func(a, b taskqueue.GroupSummary) int { return b.Created.Compare(a.Created) })
	d.render(w, r, http.StatusOK, "groups", v)
	return nil
}

func (d *Dashboard) groupPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	res, err := q.Admin.Group(r.Context(), r.URL.Query().Get("id"))
	if err != nil {
		return err
	}
	d.render(w, r, http.StatusOK, "group", res)
	return nil
}

// treeNode is a workflow node placed in the tree: under its first parent, with a note of its other parents.
type treeNode struct {
	Node         taskqueue.WorkflowNodeInfo
	Link         string // the node's task page
	Children     []*treeNode
	OtherParents []string
}

type workflowView struct {
	Info  *taskqueue.WorkflowInfo
	Roots []*treeNode
}

func (d *Dashboard) workflowPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	info, err := q.Admin.Workflow(r.Context(), r.URL.Query().Get("id"))
	if err != nil {
		if errors.Is(err, taskqueue.ErrInvalidNodeID) {
			return notFound("no workflow %q", trim(r.URL.Query().Get("id"), 80))
		}
		return err
	}
	d.render(w, r, http.StatusOK, "workflow", &workflowView{Info: info, Roots: workflowTree(info, d.queueBase(q))})
	return nil
}

// workflowTree arranges a workflow's nodes (a DAG) as a tree: each node under its first parent.
func workflowTree(info *taskqueue.WorkflowInfo, qbase string) []*treeNode {
	nodes := make(map[string]*treeNode, len(info.Nodes))
	for i := range info.Nodes {
		n := &info.Nodes[i]
		nodes[n.ID] = &treeNode{Node: *n, Link: qbase + "/task?id=" + urlEscape(n.TaskID)}
	}
	var roots []*treeNode
	for i := range info.Nodes {
		n := &info.Nodes[i]
		t := nodes[n.ID]
		parent := ""
		for _, p := range n.Parents {
			if nodes[p] != nil {
				parent = p
				break
			}
		}
		if parent == "" {
			roots = append(roots, t)
			continue
		}
		nodes[parent].Children = append(nodes[parent].Children, t)
		t.OtherParents = slices.DeleteFunc(slices.Clone(n.Parents), func(p string) bool { return p == parent })
	}
	return roots
}

type historyView struct {
	Window    string
	Windows   []string
	Charts    []template.HTML
	Available bool
	Points    int
	Empty     bool // every point is zero: nothing was counted in the window
}

func (d *Dashboard) historyPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	v := &historyView{Window: "1h"}
	span := time.Hour
	for _, hw := range historyWindows {
		v.Windows = append(v.Windows, hw.Name)
		if hw.Name == r.URL.Query().Get("window") {
			v.Window, span = hw.Name, hw.Span
		}
	}
	if q.history != nil {
		points, err := q.history.History(r.Context(), span)
		if err != nil {
			return err
		}
		v.Available, v.Points, v.Charts = true, len(points), historyCharts(points)
		v.Empty = !slices.ContainsFunc(points, func(p Point) bool { return p.Enqueued+p.Processed+p.Failed > 0 })
	}
	d.render(w, r, http.StatusOK, "history", v)
	return nil
}
