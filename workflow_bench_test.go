package taskqueue

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkWorkflowNode measures what a workflow node costs Redis on a real redis-server, against a plain task
// run the same way: each iteration submits a workflow of 100 nodes (10 layers of 10, each node after 2 nodes of
// the layer before; plain: one batch enqueue of 100 tasks), then leases and acks whatever is pending, a batch at a
// time, until every node has completed. It reports the server's CPU (INFO cpu, user + system) and the script
// calls per node. No worker runs: only the scripts are measured. submit-only submits the workflows and runs none
// of their nodes: the share of the submit in a node's cost.
//
//	go test -run '^$' -bench WorkflowNode -benchtime 50x .
func BenchmarkWorkflowNode(b *testing.B) {
	const layers, width = 10, 10
	for _, kind := range []string{"plain", "workflow", "submit-only"} {
		b.Run(kind, func(b *testing.B) {
			s := newReal(b, nil)
			ctx := context.Background()
			require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { return nil }))
			cpu0, calls0 := redisCPU(b, s), scriptCalls(b, s)
			b.ResetTimer()
			for i := range b.N {
				if kind == "plain" {
					specs := make([]*TaskSpec, layers*width)
					for j := range specs {
						specs[j] = &TaskSpec{Executable: Ref("bench", "noop", payload200{})}
					}
					require.NoError(b, s.q.EnqueueBatch(ctx, specs))
				} else {
					wf := NewWorkflow(fmt.Sprintf("bench-%d", i))
					for l := range layers {
						for k := range width {
							n := wf.Add(fmt.Sprintf("n%d-%d", l, k), &TaskSpec{Executable: Ref("bench", "noop", payload200{})})
							if l > 0 {
								n.After(fmt.Sprintf("n%d-%d", l-1, k), fmt.Sprintf("n%d-%d", l-1, (k+1)%width))
							}
						}
					}
					_, err := s.q.SubmitWorkflow(ctx, wf, nil)
					require.NoError(b, err)
				}
				if kind == "submit-only" {
					continue
				}
				for left := layers * width; left > 0; {
					ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 100})
					require.NoError(b, err)
					require.NotEmpty(b, ds, "%d nodes left, none pending", left)
					require.NoError(b, s.q.Ack(ctx, ds...))
					left -= len(ds)
				}
			}
			b.StopTimer()
			nodes := float64(b.N * layers * width)
			b.ReportMetric(float64((redisCPU(b, s)-cpu0).Microseconds())/nodes, "redis-µs/node")
			b.ReportMetric(float64(scriptCalls(b, s)-calls0)/nodes, "scripts/node")
		})
	}
}
