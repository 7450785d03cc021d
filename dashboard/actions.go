package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/graflow-go/taskqueue"
)

// The actions: registered only when the dashboard is not read-only, POST only, behind the CSRF check (csrf.go).
// Each redirects (303) to a page that shows the outcome.

func (d *Dashboard) pauseAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	if err := q.Admin.Pause(r.Context()); err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(r.Context(), "dashboard: queue paused", "queue", q.Name)
	d.redirect(w, r, q, "/", "Pickup paused.")
	return nil
}

func (d *Dashboard) resumeAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	if err := q.Admin.Resume(r.Context()); err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(r.Context(), "dashboard: queue resumed", "queue", q.Name)
	d.redirect(w, r, q, "/", "Pickup resumed.")
	return nil
}

func (d *Dashboard) cancelAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	id := r.PostFormValue("id")
	was, err := q.Admin.Cancel(r.Context(), id)
	if err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(r.Context(), "dashboard: task cancelled", "queue", q.Name, "task", id)
	d.redirect(w, r, q, "/task?id="+urlEscape(id), fmt.Sprintf("Cancelled (it was %s).", was))
	return nil
}

func (d *Dashboard) deleteAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	id := r.PostFormValue("id")
	was, err := q.Admin.Delete(r.Context(), id)
	if err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(r.Context(), "dashboard: task deleted", "queue", q.Name, "task", id)
	d.redirect(w, r, q, "/", fmt.Sprintf("Deleted task %s (it was %s).", trim(id, 100), was))
	return nil
}

// deadSelectedAction requeues or deletes the dead letters ticked on a page.
func (d *Dashboard) deadSelectedAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	if err := r.ParseForm(); err != nil {
		return badRequest("bad form")
	}
	ids := r.PostForm["id"]
	if len(ids) == 0 {
		return badRequest("no dead letter selected")
	}
	if len(ids) > d.cfg.MaxPageSize {
		return badRequest("at most %d dead letters at once", d.cfg.MaxPageSize)
	}
	var n int
	var err error
	verb := "Requeued"
	switch r.PostFormValue("action") {
	case "requeue":
		n, err = q.Admin.RequeueDead(r.Context(), ids...)
	case "delete":
		verb = "Deleted"
		n, err = q.Admin.DeleteDead(r.Context(), ids...)
	default:
		return badRequest("action must be requeue or delete")
	}
	if err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(r.Context(), "dashboard: dead letters "+verb, "queue", q.Name, "count", n)
	d.redirect(w, r, q, "/dead", fmt.Sprintf("%s %s.", verb, plural(n, "dead letter")))
	return nil
}

type confirmView struct {
	Action string // requeue or delete
	Filter deadFilter
	Count  int
}

// deadBulkAction acts on every dead letter that matches a filter, in two steps: without "confirm" it counts them
// and asks; with confirm=N it acts on at most N of them (never on more than the count the operator saw).
func (d *Dashboard) deadBulkAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	action := r.PostFormValue("action")
	if action != "requeue" && action != "delete" {
		return badRequest("action must be requeue or delete")
	}
	f := filterOf(r)
	ctx := r.Context()
	if r.PostFormValue("confirm") == "" {
		n, err := countDead(r, q, f)
		if err != nil {
			return err
		}
		d.render(w, r, http.StatusOK, "confirm", &confirmView{Action: action, Filter: f, Count: n})
		return nil
	}
	limit, err := strconv.Atoi(r.PostFormValue("confirm"))
	if err != nil || limit < 0 {
		return badRequest("confirm must be the count confirmed")
	}
	left := limit
	filter := func(info taskqueue.TaskInfo) bool {
		if left > 0 && f.match(info) {
			left--
			return true
		}
		return false
	}
	verb, act := "Requeued", q.Admin.RequeueAllDead
	if action == "delete" {
		verb, act = "Deleted", q.Admin.DeleteAllDead
	}
	n, err := act(ctx, filter, taskqueue.WithBatchSize(taskqueue.MaxListLimit))
	if err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(ctx, "dashboard: dead letters "+verb, "queue", q.Name, "count", n, "filter", f.String())
	d.redirect(w, r, q, "/dead", fmt.Sprintf("%s %s (%s).", verb, plural(n, "dead letter"), f.String()))
	return nil
}

// countDead counts the dead letters that match f, reading them a page at a time.
func countDead(r *http.Request, q *Queue, f deadFilter) (int, error) {
	st, err := q.Admin.Stats(r.Context())
	if err != nil {
		return 0, err
	}
	if f.empty() {
		return int(st.Dead), nil
	}
	n := 0
	for at := 0; int64(at) < st.Dead; at += taskqueue.MaxListLimit {
		infos, err := q.Admin.List(r.Context(), taskqueue.StateDead, at, taskqueue.MaxListLimit)
		if err != nil {
			return 0, err
		}
		for _, info := range infos {
			if f.match(info) {
				n++
			}
		}
		if len(infos) < taskqueue.MaxListLimit {
			break
		}
	}
	return n, nil
}

func (d *Dashboard) scheduleAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	if q.Schedules == nil {
		return notFound("this queue has no schedules configured")
	}
	name, ctx := r.PostFormValue("name"), r.Context()
	var msg string
	switch r.PostFormValue("op") {
	case "pause":
		if _, err := q.Schedules.Pause(ctx, name); err != nil {
			return err
		}
		msg = "Schedule " + name + " paused."
	case "resume":
		if _, err := q.Schedules.Resume(ctx, name); err != nil {
			return err
		}
		msg = "Schedule " + name + " resumed."
	case "trigger":
		id, err := q.Schedules.Trigger(ctx, name)
		if err != nil {
			return err
		}
		msg = "Schedule " + name + " triggered: task " + id + "."
	default:
		return badRequest("op must be pause, resume or trigger")
	}
	d.cfg.Logger.InfoContext(ctx, "dashboard: schedule "+r.PostFormValue("op"), "queue", q.Name, "schedule", name)
	d.redirect(w, r, q, "/schedules", trim(msg, 300))
	return nil
}

func (d *Dashboard) releaseLockAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	key := r.PostFormValue("key")
	ok, err := q.Admin.ReleaseLock(r.Context(), key)
	if err != nil {
		return err
	}
	msg := "No lock held that key."
	if ok {
		msg = "Lock released."
	}
	d.cfg.Logger.InfoContext(r.Context(), "dashboard: lock released", "queue", q.Name, "key", key)
	d.redirect(w, r, q, "/locks", msg)
	return nil
}

func writeJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	return nil
}
