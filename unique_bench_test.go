package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkUniqueEnqueue compares an enqueue with a unique key against one without, in the same run on a real
// redis-server: rounds of each alternate (plain, unique, plain, ...), and the medians of the rounds are reported,
// throughput (ops/s) and Redis CPU per task (INFO cpu, user + system). Every unique task has a key of its own
// (the lock is taken, not refused), with the default lifetime.
//
//	go test -run '^$' -bench BenchmarkUniqueEnqueue -benchtime 1x .
func BenchmarkUniqueEnqueue(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s, _ := benchSetup(b)
			ctx := context.Background()
			perRound, rounds := 2000, 9
			if batch > 1 {
				perRound = 20000
			}
			var plainRate, uniqueRate, plainCPU, uniqueCPU []float64
			for r := range 2 * rounds {
				unique := r%2 == 1
				specs := make([]*TaskSpec, perRound)
				for i := range specs {
					specs[i] = NewTaskSpec("", Ref("bench", "noop", bench200))
					if unique {
						specs[i].Unique = &Unique{Key: fmt.Sprintf("u-%d-%d", r, i), TTL: time.Hour}
					}
				}
				cpu0 := redisCPU(b, s)
				start := time.Now()
				for i := 0; i < perRound; i += batch {
					require.NoError(b, s.q.EnqueueBatch(ctx, specs[i:min(i+batch, perRound)]))
				}
				rate := float64(perRound) / time.Since(start).Seconds()
				cpu := (redisCPU(b, s) - cpu0).Seconds() * 1e6 / float64(perRound)
				if unique {
					uniqueRate, uniqueCPU = append(uniqueRate, rate), append(uniqueCPU, cpu)
				} else {
					plainRate, plainCPU = append(plainRate, rate), append(plainCPU, cpu)
				}
				_, err := s.adm.Purge(ctx, StatePending)
				require.NoError(b, err)
			}
			b.ReportMetric(median(plainRate), "plain-ops/s")
			b.ReportMetric(median(uniqueRate), "unique-ops/s")
			b.ReportMetric(median(plainCPU), "plain-redis-µs/op")
			b.ReportMetric(median(uniqueCPU), "unique-redis-µs/op")
		})
	}
}

// BenchmarkUniqueHooksOnPlainDeliveries measures what the unique hooks in pickup, ack and dead letter
// (releaseLocks) cost a queue without unique tasks: a nil check per delivery, no Redis call, no allocation.
func BenchmarkUniqueHooksOnPlainDeliveries(b *testing.B) {
	s := newMini(b, nil)
	ds := make([]*Delivery, 64)
	for i := range ds {
		ds[i] = &Delivery{Spec: &TaskSpec{TaskID: fmt.Sprint(i)}, env: &envelope{}}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.q.releaseLocks(ctx, "start", ds)
		s.q.releaseLocks(ctx, "leave", ds)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*len(ds)), "ns/delivery")
}

// BenchmarkUniqueLifecycle compares the Redis CPU of a whole lifecycle (enqueue, pickup, ack) of plain and
// unique tasks, alternating rounds on a real redis-server, with medians: the pickup and ack scripts are the
// same for both; a batch that holds unique tasks adds one release call after its ack.
func BenchmarkUniqueLifecycle(b *testing.B) {
	s, _ := benchSetup(b)
	ctx := context.Background()
	const perRound, rounds, batch = 5000, 7, 100
	var plainCPU, uniqueCPU []float64
	for r := range 2 * rounds {
		unique := r%2 == 1
		specs := make([]*TaskSpec, perRound)
		for i := range specs {
			specs[i] = NewTaskSpec("", Ref("bench", "noop", bench200))
			if unique {
				specs[i].Unique = &Unique{Key: fmt.Sprintf("l-%d-%d", r, i), TTL: time.Hour}
			}
		}
		cpu0 := redisCPU(b, s)
		for i := 0; i < perRound; i += batch {
			require.NoError(b, s.q.EnqueueBatch(ctx, specs[i:i+batch]))
		}
		for got := 0; got < perRound; {
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: batch})
			require.NoError(b, err)
			require.NotEmpty(b, ds)
			require.NoError(b, s.q.Ack(ctx, ds...))
			got += len(ds)
		}
		cpu := (redisCPU(b, s) - cpu0).Seconds() * 1e6 / perRound
		if unique {
			uniqueCPU = append(uniqueCPU, cpu)
		} else {
			plainCPU = append(plainCPU, cpu)
		}
	}
	b.ReportMetric(median(plainCPU), "plain-redis-µs/task")
	b.ReportMetric(median(uniqueCPU), "unique-redis-µs/task")
}
