/**
 * The dirty-log-perf scenario (dirty_log_perf_test) outside the bench: its
 * iteration protocol lets the world stop in the middle of an iteration
 * (threads mode, frequent stop-the-world checks), a --ops quota ends it
 * after whole iterations with every one recorded, and in sim mode it is
 * deterministic, with the quota spent the run ends (no deadlock). Needs `npm run build`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { runThreads } from '../../stress/run.js';
import { runSim } from '../../stress/simrun.js';
import { defaultOptions, type RunOptions } from '../../stress/options.js';
import { observePerfLogs, readPerfLog, WARMUP_PASSES, type PerfSummary } from '../../src/actors/perflog.js';
import type { Report } from '../../stress/report.js';
import { requireBuild } from './support.js';

const MIB = 1024 * 1024;

async function run(o: RunOptions, sim = false): Promise<{ r: Report; perf: PerfSummary }> {
  const logs: SharedArrayBuffer[] = [];
  const stop = observePerfLogs((l) => logs.push(l));
  try {
    const r = sim ? await runSim(o) : await runThreads(o);
    expect(logs, 'one record per run').toHaveLength(1);
    return { r, perf: readPerfLog(logs[0]) };
  } finally {
    stop();
  }
}

describe('scenario dirty-log-perf', () => {
  beforeAll(requireBuild);

  it('threads mode: stop-the-world checks every 5 ms inside iterations; --ops ends it after whole passes, each iteration recorded', async () => {
    const seed = 17;
    const vcpus = 2;
    const pagesPerVcpu = (2 * MIB) / 4096;
    const passes = WARMUP_PASSES + 1;
    // populate + 2 iterations per pass, every page of every slice each time
    const ops = vcpus * pagesPerVcpu * 3 * passes;
    const o: RunOptions = { ...defaultOptions(), scenario: 'dirty-log-perf', profile: '6.2', lock: 'rwlock', vcpus, guestMem: vcpus * 2 * MIB, writePct: 100, durationMs: null, ops, seed, quiet: true, checkEveryMs: 5 };
    const { r, perf } = await run(o);
    expect(r.result, `seed ${seed}: ${r.error ?? r.violations[0]?.message}`).toBe('pass');
    expect(r.quiescentChecks, `seed ${seed}`).toBeGreaterThan(1);
    expect(r.counters.accesses, `seed ${seed}`).toBe(ops);
    expect(perf.vcpus).toBe(vcpus);
    expect(perf.warmup.iterations + perf.iterations, `seed ${seed}`).toBe(2 * passes);
    expect(perf.iterations, `seed ${seed}`).toBe(2 * (passes - WARMUP_PASSES));
    // every page written once per timed iteration, and each write to a page write-protected by the harvest (or in a block) faults
    expect(perf.accesses).toBe(perf.iterations * vcpus * pagesPerVcpu);
    expect(perf.faults, `seed ${seed}`).toBeGreaterThanOrEqual(perf.accesses);
    expect(perf.series).toHaveLength(2 * passes);
    expect(perf.series.every((ms) => Number.isFinite(ms) && ms > 0), `seed ${seed}: ${perf.series}`).toBe(true);
    expect(r.counters.readSideFaults).toBe(r.counters.faults);
  });

  it('sim mode: deterministic, 6.2 on the read side', async () => {
    const seed = 23;
    const base = { ...defaultOptions(), mode: 'sim' as const, scenario: 'dirty-log-perf', vcpus: 2, guestMem: 2 * MIB, writePct: 100, ops: 3200, seed, quiet: true };
    const a = await run({ ...base, profile: '6.2', lock: 'rwlock' }, true);
    const b = await run({ ...base, profile: '6.2', lock: 'rwlock' }, true);
    for (const x of [a, b]) expect(x.r.result, `seed ${seed}: ${x.r.error ?? x.r.violations[0]?.message}`).toBe('pass');
    expect(b.r.schedule?.hash).toBe(a.r.schedule?.hash);
    expect(a.perf.warmup.iterations + a.perf.iterations, `seed ${seed}`).toBeGreaterThan(2);
    expect(a.r.counters.faults).toBeGreaterThan(0);
    expect(a.r.counters.readSideFaults).toBe(a.r.counters.faults);
  });
});
