//go:build chaos

package taskqueue

import "testing"

// TestChaos runs the chaos scenarios of docs/reliability.md in their order, each against redis-server processes and
// worker subprocesses of its own: make test-chaos. The numbers in the names are the scenarios of the reliability
// issue; a number used twice is a scenario with two halves. The scenarios live in files named for what they break:
// chaos_worker_test.go (kills, freezes, SIGTERM, reapers, crash loops), chaos_redis_test.go (Redis killed,
// restarted, stalled, its scripts flushed, an outage), chaos_client_test.go (lost replies, silent and killed
// connections, clock skew) and chaos_input_test.go (hostile envelopes and references, schema versions).
func TestChaos(t *testing.T) {
	bin := buildChaosWorker(t, t.TempDir())
	t.Run("01_WorkerSIGKILL", func(t *testing.T) { t.Parallel(); chaosWorkerSIGKILL(t, bin) })
	t.Run("02_WorkerSIGTERMPastGrace", func(t *testing.T) { t.Parallel(); chaosWorkerSIGTERM(t, bin) })
	t.Run("03_LostEnqueueReply", func(t *testing.T) { t.Parallel(); chaosLostEnqueueReply(t) })
	t.Run("04_WorkerSIGSTOP", func(t *testing.T) { t.Parallel(); chaosWorkerSIGSTOP(t, bin) })
	t.Run("04_StalledDeliveryInProcess", func(t *testing.T) { t.Parallel(); chaosStalledInProcess(t) })
	t.Run("05_LongTaskAndSilentConnection", func(t *testing.T) { t.Parallel(); chaosLongTaskSilentConnection(t, bin) })
	t.Run("06_EightReapers", func(t *testing.T) { t.Parallel(); chaosEightReapers(t) })
	t.Run("07_CrashLoopAndPanicLoop", func(t *testing.T) { t.Parallel(); chaosCrashLoop(t, bin) })
	t.Run("07_CrashLoopBatchedNeighbours", func(t *testing.T) { t.Parallel(); chaosCrashLoopBatched(t, bin) })
	t.Run("08_RedisSIGKILLWithAOF", func(t *testing.T) { t.Parallel(); chaosRedisSIGKILL(t, bin) })
	t.Run("09_RedisRestartNoPersistence", func(t *testing.T) { t.Parallel(); chaosRestartNoPersistence(t) })
	t.Run("10_ScriptFlushUnderLoad", func(t *testing.T) { t.Parallel(); chaosScriptFlush(t) })
	t.Run("11_ClientKillBlockedPickups", func(t *testing.T) { t.Parallel(); chaosClientKill(t) })
	t.Run("11_OutageLongerThanBlockTimeout", func(t *testing.T) { t.Parallel(); chaosLongOutage(t, bin) })
	t.Run("12_DebugSleepClientPause", func(t *testing.T) { t.Parallel(); chaosSleepPause(t) })
	t.Run("13_ClockSkew", func(t *testing.T) { t.Parallel(); chaosClockSkew(t) })
	t.Run("14_HostileEnvelopes", func(t *testing.T) { t.Parallel(); chaosHostileEnvelopes(t, bin) })
	t.Run("15_HostileReferences", func(t *testing.T) { t.Parallel(); chaosHostileReferences(t, bin) })
	t.Run("16_SchemaVersions", func(t *testing.T) { t.Parallel(); chaosSchemaVersions(t) })
	t.Run("21_ScheduleKilledSchedulers", func(t *testing.T) { t.Parallel(); chaosScheduleTicks(t) })
	t.Run("22_UniqueKilledWorkers", func(t *testing.T) { t.Parallel(); chaosUniqueKilledWorkers(t, bin) })
	t.Run("23_WorkflowKilledWorkers", func(t *testing.T) { t.Parallel(); chaosWorkflowKilledWorkers(t, bin) })
}
