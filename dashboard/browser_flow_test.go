package dashboard

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// A concurrency limit set through the flow page's form is stored and listed; a refused one (a key with a space)
// shows the library's message and stores nothing.
func TestBrowserFlow(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	bg := context.Background()
	require.NoError(t, f.adm.SetRateLimit(bg, "", 200, time.Second))
	require.NoError(t, f.adm.SetConcurrencyLimit(bg, taskqueue.AllFlowKeys, 5))
	require.NoError(t, f.adm.SetConcurrencyLimit(bg, "tenant-a", 2))
	require.NoError(t, f.adm.SetRateLimit(bg, "tenant-c", 10, time.Minute))
	f.enqueueKeyed(t, "tenant-a", ids("a-", 6)...)
	f.enqueueKeyed(t, "tenant-b", ids("b-", 3)...)
	f.enqueueKeyed(t, "tenant-c", ids("c-", 2)...)
	ds, err := f.q.Dequeue(bg, taskqueue.DequeueOptions{Max: 20})
	require.NoError(t, err)
	require.Len(t, ds, 7, "tenant-a held at 2")
	srv, _ := f.serve(t, Config{})

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/flow"), chromedp.WaitVisible(chromedp.CSS("#flow-limits")))
	require.Contains(t, text(ctx, t, `#flow-limits tr[data-key="tenant-a"]`), "at limit")
	require.Contains(t, text(ctx, t, "#flow-held"), "tenant-a")

	run(ctx, t,
		chromedp.SetValue(chromedp.CSS(`#set-concurrency input[name="key"]`), "tenant-b"),
		chromedp.SetValue(chromedp.CSS(`#set-concurrency input[name="n"]`), "3"),
		chromedp.Click(chromedp.CSS(`#set-concurrency button`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(ctx, t, ".flash"), "At most 3 tasks of key tenant-b at once.")
	require.Equal(t, "3", text(ctx, t, `#flow-limits tr[data-key="tenant-b"] td[data-limit="concurrency"]`))
	require.Contains(t, f.limits(t), taskqueue.FlowLimit{Key: "tenant-b", Concurrency: 3})
	screenshot(ctx, t, "flow")

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/task?id=a-00000"), chromedp.WaitVisible(chromedp.CSS("#task-flow-key")))
	require.Equal(t, "tenant-a", text(ctx, t, "#task-flow-key"))
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/flow"), chromedp.WaitVisible(chromedp.CSS("#set-concurrency")))
	before := f.limits(t)
	run(ctx, t,
		chromedp.SetValue(chromedp.CSS(`#set-concurrency input[name="key"]`), "tenant b"),
		chromedp.SetValue(chromedp.CSS(`#set-concurrency input[name="n"]`), "4"),
		chromedp.Click(chromedp.CSS(`#set-concurrency button`)),
		chromedp.WaitVisible(chromedp.CSS("#flow-error")))
	require.Contains(t, text(ctx, t, "#flow-error"), "invalid flow key")
	require.Equal(t, before, f.limits(t), "nothing stored")
}
