// BullMQ side of taskqueue's bench-compare. The Go harness runs one scenario per call, whole, inside Node (no
// per-task IPC), on the redis-server it started and flushed:
//
//	node bench.mjs <host:port> <scenario> '<JSON params>'
//
// and reads the one JSON line this prints on stdout: {"metrics":{...}} (latency also gives "samples_ms", the
// harness computes its percentiles as for the other libraries) or {"error":"..."}. Scenarios:
//
//	enqueue  {window_ms, warmup_ms, bulk}       queue.add from 1 and from 8 concurrent callers, queue.addBulk of
//	                                            `bulk`: tasks/s and Redis CPU µs per task of each
//	process  {conc, warmup_ms, window_ms, bulk, backlog}
//	                                            a worker of concurrency conc while a producer process adds bulks,
//	                                            keeping the backlog (added minus started) at about `backlog`
//	fill     {n, bulk, callers}                 adds n jobs: addBulk of `bulk`, or (bulk 0) `callers` concurrent adds
//	drain    {n, conc, workers, limiter}        `workers` workers of concurrency conc run the n jobs of fill:
//	                                            seconds to the last job's start, peak RSS, CPU seconds;
//	                                            limiter ({max, duration}, optional): the workers' rate limiter
//	latency  {n, every_ms, delay_ms, conc}       one job every every_ms (due after delay_ms) to a running worker:
//	                                            each job's start minus its due time (signed, ms)
//	produce  {bulk, backlog}                    (internal) the producer of process, until its parent disconnects
//	check    {}                                 loads BullMQ, prints no metrics (the harness's install check)
//
// Every job's data is {"seq":N,"data":"xx…"}, 200 bytes of JSON like the other libraries' payloads; jobs are
// added with removeOnComplete: true (the other libraries keep no finished tasks), and a job's handler start is
// what the harness counts, as for the others.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const QUEUE = 'bench';
const PAYLOAD_SIZE = 200;

// data returns the payload of job seq: JSON.stringify gives exactly PAYLOAD_SIZE bytes.
export function data(seq) {
  const pad = PAYLOAD_SIZE - '{"seq":,"data":""}'.length - String(seq).length;
  return { seq, data: 'x'.repeat(pad) };
}

function connect(addr, worker) {
  const i = addr.lastIndexOf(':');
  const opts = { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
  // BullMQ's connection guide: a worker's connection needs maxRetriesPerRequest: null.
  if (worker) opts.maxRetriesPerRequest = null;
  return new IORedis(opts);
}

function newQueue(addr, name = QUEUE) {
  return new Queue(name, {
    connection: connect(addr, false),
    defaultJobOptions: { removeOnComplete: true },
  });
}

// newWorker starts a Worker of concurrency conc; limiter ({max, duration}, BullMQ's queue-wide rate limiter) is
// set when given.
function newWorker(addr, conc, onStart, name = QUEUE, limiter = undefined) {
  const opts = { connection: connect(addr, true), concurrency: conc };
  if (limiter) opts.limiter = limiter;
  return new Worker(
    name,
    async (job) => {
      onStart(job.data.seq);
    },
    opts,
  );
}

async function closeAll(...xs) {
  for (const x of xs) {
    const conn = x.opts && x.opts.connection;
    await x.close();
    if (conn && typeof conn.quit === 'function') await conn.quit().catch(() => {});
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function bulkOf(seq0, n) {
  const jobs = new Array(n);
  for (let i = 0; i < n; i++) jobs[i] = { name: 'noop', data: data(seq0 + i) };
  return jobs;
}

async function redisCPU(client) {
  const info = await client.info('cpu');
  const get = (k) => Number((info.match(new RegExp(`^${k}:([0-9.]+)`, 'm')) || [])[1] || 0);
  return get('used_cpu_user') + get('used_cpu_sys');
}

// rate runs `callers` concurrent loops of step() until each has finished one step (the first call of a script
// loads it into Redis) and warmupMs more, then counts the tasks they add in windowMs.
async function rate(callers, warmupMs, windowMs, step, onWindow) {
  let counting = false;
  let count = 0;
  let stop = false;
  let warm = 0;
  const loops = [];
  for (let c = 0; c < callers; c++) {
    loops.push(
      (async () => {
        let first = true;
        while (!stop) {
          const n = await step();
          if (counting) count += n;
          if (first) warm++;
          first = false;
        }
      })(),
    );
  }
  while (warm < callers) await sleep(1);
  await sleep(warmupMs);
  const before = onWindow ? await onWindow() : 0;
  counting = true;
  const t0 = performance.now();
  await sleep(windowMs);
  counting = false;
  const secs = (performance.now() - t0) / 1000;
  const after = onWindow ? await onWindow() : 0;
  const n = count;
  stop = true;
  await Promise.all(loops);
  return { tps: n / secs, n, delta: after - before };
}

async function enqueue(addr, p) {
  const out = {};
  let seq = 0;
  const admin = connect(addr, false);
  const runs = [
    ['enqueue_seq', 1, 0],
    ['enqueue_par8', 8, 0],
    ['enqueue_batch', 1, p.bulk],
  ];
  for (const [metric, callers, bulk] of runs) {
    const q = newQueue(addr, `bench-${metric}`);
    await q.waitUntilReady();
    const step = bulk > 0
      ? async () => {
          const s0 = seq;
          seq += bulk;
          await q.addBulk(bulkOf(s0, bulk));
          return bulk;
        }
      : async () => {
          await q.add('noop', data(seq++));
          return 1;
        };
    const r = await rate(callers, p.warmup_ms, p.window_ms, step, () => redisCPU(admin));
    out[`${metric}_tps`] = r.tps;
    if (r.n > 0) out[`${metric}_redis_cpu_us`] = (r.delta * 1e6) / r.n;
    await closeAll(q);
  }
  await admin.quit();
  return out;
}

// produce adds bulks of p.bulk while the backlog (jobs added minus jobs started, which its parent reports every
// few milliseconds) is under p.backlog, until its parent goes away. It runs in a process of its own, as the
// other libraries' producers run beside, not inside, the worker's event loop; it reports its count likewise.
async function produce(addr, p) {
  const q = newQueue(addr);
  await q.waitUntilReady();
  let stop = false;
  let started = 0;
  process.on('message', (m) => {
    started = m;
  });
  process.on('disconnect', () => {
    stop = true;
  });
  let seq = 0;
  const tell = (n) => process.connected && process.send(n, () => {}); // a send racing the disconnect is dropped
  const report = setInterval(() => seq > 0 && tell(seq), 5);
  while (!stop) {
    if (seq - started >= p.backlog) {
      await sleep(1);
      continue;
    }
    await q.addBulk(bulkOf(seq, p.bulk));
    seq += p.bulk;
    if (seq === p.bulk) tell(seq); // the first bulk is in: a backlog to start from
  }
  clearInterval(report);
  await closeAll(q);
  return {};
}

async function processRate(addr, p) {
  const child = fork(fileURLToPath(import.meta.url), [addr, 'produce', JSON.stringify({ bulk: p.bulk, backlog: p.backlog })], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  let enq = 0;
  let done = 0;
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await new Promise((resolve, reject) => {
      child.on('message', (m) => {
        enq = m;
        resolve();
      });
      child.once('exit', (code) => reject(new Error(`producer exited (${code})`)));
    });
    const feed = setInterval(() => child.connected && child.send(done, () => {}), 5);
    await sleep(100); // a small backlog first, as for the other libraries
    const w = newWorker(addr, p.conc, () => {
      done++;
    });
    // The warm-up starts once the worker runs jobs: a Node process on a loaded machine can take seconds to get
    // there, which the other libraries' in-process workers do not.
    for (const t = performance.now(); done === 0; await sleep(5)) {
      if (performance.now() - t > 60000) throw new Error('the worker started no job in 60 s');
    }
    await sleep(p.warmup_ms);
    const c0 = done;
    const e0 = enq;
    const t0 = performance.now();
    let backlog = 0;
    let samples = 0;
    while (performance.now() - t0 < p.window_ms) {
      await sleep(10);
      backlog += enq - done;
      samples++;
    }
    const c1 = done;
    const e1 = enq;
    const secs = (performance.now() - t0) / 1000;
    clearInterval(feed);
    child.disconnect();
    await closeAll(w);
    if (c1 === c0) throw new Error('no job completed in the window');
    const m = `process_c${p.conc}`;
    return { [`${m}_tps`]: (c1 - c0) / secs, [`${m}_produce_tps`]: (e1 - e0) / secs, [`${m}_backlog`]: backlog / Math.max(samples, 1) };
  } finally {
    if (child.connected) child.disconnect();
    await exited;
  }
}

async function fill(addr, p) {
  const q = newQueue(addr);
  await q.waitUntilReady();
  if (p.bulk > 0) {
    for (let i = 0; i < p.n; i += p.bulk) await q.addBulk(bulkOf(i, Math.min(p.bulk, p.n - i)));
  } else {
    let next = 0;
    const callers = [];
    for (let c = 0; c < p.callers; c++) {
      callers.push(
        (async () => {
          for (let i = next++; i < p.n; i = next++) await q.add('noop', data(i));
        })(),
      );
    }
    await Promise.all(callers);
  }
  await closeAll(q);
  return {};
}

// drain runs the backlog with p.workers workers of concurrency p.conc (each with its connections, as BullMQ
// requires) and reports the seconds from their start to the last job's start, the process's peak RSS (this
// process only runs the workers) and its CPU seconds over the same span.
async function drain(addr, p) {
  let count = 0;
  let finish;
  const finished = new Promise((r) => {
    finish = r;
  });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const ws = [];
  for (let i = 0; i < (p.workers || 1); i++) {
    ws.push(
      newWorker(
        addr,
        p.conc,
        () => {
          if (++count === p.n) finish([performance.now(), process.cpuUsage(cpu0)]);
        },
        QUEUE,
        p.limiter,
      ),
    );
  }
  const timeout = setTimeout(() => finish(null), 300000);
  const end = await finished;
  clearTimeout(timeout);
  await closeAll(...ws);
  if (end === null) throw new Error(`only ${count} of ${p.n} jobs ran in 5 minutes`);
  const [t1, cpu] = end;
  return { secs: (t1 - t0) / 1000, rss_mib: process.resourceUsage().maxRSS / 1024, cpu_s: (cpu.user + cpu.system) / 1e6 };
}

async function latency(addr, p) {
  const sent = new Array(p.n).fill(0);
  const got = new Array(p.n).fill(0);
  let count = 0;
  let all;
  const allDone = new Promise((r) => {
    all = r;
  });
  const w = newWorker(addr, p.conc, (seq) => {
    if (seq >= 0 && seq < p.n && got[seq] === 0) {
      got[seq] = performance.now();
      if (++count === p.n) all(true);
    }
  });
  await w.waitUntilReady();
  const q = newQueue(addr);
  await q.waitUntilReady();
  await sleep(200); // let the worker settle into its wait
  const opts = p.delay_ms > 0 ? { delay: p.delay_ms } : undefined;
  const start = performance.now();
  for (let i = 0; i < p.n; i++) {
    const due = start + i * p.every_ms;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    sent[i] = performance.now();
    await q.add('noop', data(i), opts);
  }
  const t = setTimeout(() => all(false), p.delay_ms + 30000);
  const ok = await allDone;
  clearTimeout(t);
  await closeAll(w, q);
  if (!ok) throw new Error(`only ${count} of ${p.n} jobs started`);
  return { samples_ms: got.map((g, i) => g - sent[i] - p.delay_ms) };
}

// check loads the modules and does nothing: the harness's test that the install works.
async function check() {
  return {};
}

const scenarios = { check, enqueue, process: processRate, produce, fill, drain, latency };

async function main() {
  const [addr, name, raw] = process.argv.slice(2);
  const f = scenarios[name];
  if (!addr || !f) throw new Error(`usage: node bench.mjs host:port ${Object.keys(scenarios).join('|')} '{json}'`);
  const out = await f(addr, JSON.parse(raw || '{}'));
  if (name === 'produce') return;
  const { samples_ms: samples, ...metrics } = out;
  process.stdout.write(JSON.stringify(samples ? { metrics, samples_ms: samples } : { metrics }) + '\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stdout.write(JSON.stringify({ error: String((err && err.message) || err) }) + '\n');
    process.exit(1);
  },
);
