/**
 * Threads-mode benchmarks through the real orchestrator (runThreads):
 * - scaling: accesses/s and faults/s against the number of vCPUs, per lock
 *   kind, with mmu_lock's contention ratio (the shape of the Linux 6.2
 *   dirty_log_perf_test table in KERNEL-FACTS.md section 3);
 * - statistics overhead: the same contended run with lock statistics on and
 *   off, in alternating pairs, as a throughput ratio.
 *
 * A run's elapsed time includes starting the workers and stopping them
 * (a few hundred ms on a loaded 2-core machine, more with more workers, and
 * varying from run to run). Accesses/s and faults/s are therefore counted
 * over a steady window: from the first poll after a quarter of the run at
 * which the vCPUs have started (start-up and the JIT's first compiles are
 * over) to the last poll before it stops, from the live counters; a run
 * too short for such a window is counted over its elapsed time less the
 * start-up + shutdown cost below. mmu_lock acquisitions are only known at
 * the end of a run: their rate is counted over the elapsed time less the
 * start-up + shutdown cost, measured per vCPU count with runs whose vCPUs do
 * one access each.
 */
import type { LockKind } from '../src/config.js';
import { runThreads } from '../stress/run.js';
import { defaultOptions, type RunOptions } from '../stress/options.js';
import type { Report } from '../stress/report.js';
import { median } from './micro.js';
import { XorShift32 } from '../src/sync/sched.js';

/** The fault-heavy scenario (stress/scenarios.ts). */
export const SCALING_SCENARIO = 'fault-storm';

export interface ScalingOptions {
  vcpus: number[];
  locks: LockKind[];
  durationMs: number;
  guestMem: number;
  seed: number;
  writePct: number;
}

export interface RunPoint {
  lock: LockKind;
  vcpus: number;
  statistics: boolean;
  result: 'pass' | 'fail';
  error: string | null;
  violations: string[];
  elapsedMs: number;
  /** elapsedMs less the start-up and shutdown cost of a run of this size (the time rates are counted over). */
  activeMs: number;
  accessesPerSec: number;
  faultsPerSec: number;
  /** mmu_lock acquisitions per second (statistics on only). */
  lockAcqPerSec: number | null;
  /** contentions / acquisitions (statistics on only). */
  contentionRatio: number | null;
  /** Mean wait of a contended acquisition, ns (statistics on only). */
  waitAvgNs: number | null;
  waitP99Ns: number | null;
}

export function benchRunOptions(s: ScalingOptions, lock: LockKind, vcpus: number, statistics: boolean): RunOptions {
  return {
    ...defaultOptions(),
    scenario: SCALING_SCENARIO,
    vcpus,
    lock,
    guestMem: s.guestMem,
    backing: 'thp',
    writePct: s.writePct,
    durationMs: s.durationMs,
    ops: null,
    seed: s.seed,
    quiet: true,
    lockStats: statistics,
    // Throughput runs: no periodic stop-the-world (the final check still runs).
    checkEveryMs: 1e9,
  };
}

/** Live counters at the two ends of a run's steady window. */
class Window {
  t0 = -1;
  a0 = 0;
  f0 = 0;
  t1 = -1;
  a1 = 0;
  f1 = 0;
  constructor(private readonly fromMs: number) {}
  tick(t: number, accesses: number, faults: number): void {
    // From a quarter of the run on, once the vCPUs have started (a loaded
    // machine can take longer than that to start the workers).
    if (t < this.fromMs || accesses === 0) return;
    if (this.t0 < 0) {
      this.t0 = t;
      this.a0 = accesses;
      this.f0 = faults;
    } else {
      this.t1 = t;
      this.a1 = accesses;
      this.f1 = faults;
    }
  }
  /** Seconds covered, 0 when the run ended before a window with accesses in it formed (rates then come from the whole run). */
  secs(): number {
    return this.t0 >= 0 && this.t1 > this.t0 && this.a1 > this.a0 ? (this.t1 - this.t0) / 1000 : 0;
  }
}

function pointOf(r: Report, lock: LockKind, vcpus: number, statistics: boolean, fixedMs: number, w: Window): RunPoint {
  const activeMs = Math.max(r.elapsedMs - fixedMs, r.elapsedMs / 2);
  const secs = activeMs / 1000;
  const wsecs = w.secs();
  const l = r.lock;
  const on = statistics && l.enabled && l.acquisitions > 0;
  return {
    lock,
    vcpus,
    statistics,
    result: r.result,
    error: r.error,
    violations: r.violations.map((v) => `[${v.invariant}] ${v.message}`),
    elapsedMs: r.elapsedMs,
    activeMs,
    accessesPerSec: wsecs > 0 ? (w.a1 - w.a0) / wsecs : r.counters.accesses / secs,
    faultsPerSec: wsecs > 0 ? (w.f1 - w.f0) / wsecs : r.counters.faults / secs,
    lockAcqPerSec: on ? l.acquisitions / secs : null,
    contentionRatio: on ? l.contentions / l.acquisitions : null,
    waitAvgNs: on ? l.waitNs.avg : null,
    waitP99Ns: on ? l.waitNs.p99 : null,
  };
}

/**
 * Start-up + shutdown cost of a run with `vcpus` vCPUs, ms: the elapsed time
 * of runs whose vCPUs do one access each (the least of two).
 */
export async function fixedCost(s: ScalingOptions, lock: LockKind, vcpus: number): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 2; i++) {
    const r = await runThreads({ ...benchRunOptions(s, lock, vcpus, true), durationMs: null, ops: vcpus });
    if (r.result !== 'pass') throw new Error(`calibration run (${lock}, ${vcpus} vCPUs) failed: ${r.error ?? r.violations[0]?.message}`);
    best = Math.min(best, r.elapsedMs);
  }
  return best;
}

const fixedCosts = new Map<number, number>();

/** fixedCost() per vCPU count, measured once per process. */
export async function fixedCostOf(s: ScalingOptions, vcpus: number): Promise<number> {
  let c = fixedCosts.get(vcpus);
  if (c === undefined) {
    c = await fixedCost(s, s.locks[0] ?? 'ticket', vcpus);
    fixedCosts.set(vcpus, c);
  }
  return c;
}

export async function runPoint(s: ScalingOptions, lock: LockKind, vcpus: number, statistics: boolean): Promise<RunPoint> {
  const fixed = await fixedCostOf(s, vcpus);
  const w = new Window(s.durationMs / 4);
  const r = await runThreads(benchRunOptions(s, lock, vcpus, statistics), { onTick: (t, a, f) => w.tick(t, a, f) });
  return pointOf(r, lock, vcpus, statistics, fixed, w);
}

export async function scalingBench(s: ScalingOptions, progress: (line: string) => void): Promise<RunPoint[]> {
  const out: RunPoint[] = [];
  for (const v of s.vcpus) {
    const c = await fixedCostOf(s, v);
    progress(`  start-up + shutdown of a ${v}-vCPU run: ${Math.round(c)} ms (taken off the elapsed time)`);
  }
  for (const lock of s.locks) {
    for (const v of s.vcpus) {
      const p = await runPoint(s, lock, v, true);
      progress(`  scaling: ${lock} ${v} vCPU(s): ${Math.round(p.accessesPerSec)} accesses/s, ${Math.round(p.faultsPerSec)} faults/s, ${p.result}`);
      out.push(p);
    }
  }
  return out;
}

export interface OverheadResult {
  lock: LockKind;
  vcpus: number;
  pairs: { on: RunPoint; off: RunPoint }[];
  /** Median over pairs of (throughput with statistics) / (throughput without). */
  accessesRatio: number;
  faultsRatio: number;
  /** 95% confidence intervals of those medians, [low, high] (seeded bootstrap over the pairs). */
  accessesRatioCi: [number, number];
  faultsRatioCi: [number, number];
  /** Median contention ratio of the runs with statistics: how contended the run was. */
  contentionRatio: number;
}

/**
 * 95% confidence interval of the median of `xs`: percentile bootstrap,
 * 2000 resamples, seeded (the same pairs give the same interval).
 */
export function bootstrapMedianCi(xs: number[], seed = 12345): [number, number] {
  if (xs.length === 0) return [NaN, NaN];
  const rng = new XorShift32(seed);
  const meds: number[] = [];
  for (let i = 0; i < 2000; i++) meds.push(median(xs.map(() => xs[rng.below(xs.length)])));
  meds.sort((a, b) => a - b);
  return [meds[50], meds[1949]];
}

/**
 * The cost of lock statistics on a contended run: same seed and
 * configuration, statistics on and off, `pairs` times, the order alternating
 * (on-off, off-on, ...) so that a drift of the machine cancels out.
 */
export async function overheadBench(s: ScalingOptions, lock: LockKind, vcpus: number, pairs: number, progress: (line: string) => void): Promise<OverheadResult> {
  const res: { on: RunPoint; off: RunPoint }[] = [];
  for (let i = 0; i < pairs; i++) {
    const order = i % 2 === 0 ? [true, false] : [false, true];
    const got: Record<string, RunPoint> = {};
    for (const st of order) got[st ? 'on' : 'off'] = await runPoint(s, lock, vcpus, st);
    res.push({ on: got.on, off: got.off });
    progress(
      `  statistics overhead, pair ${i + 1}/${pairs}: on ${Math.round(got.on.faultsPerSec)} faults/s, off ${Math.round(got.off.faultsPerSec)} faults/s`,
    );
  }
  const acc = res.map((p) => p.on.accessesPerSec / p.off.accessesPerSec);
  const flt = res.map((p) => p.on.faultsPerSec / p.off.faultsPerSec);
  return {
    lock,
    vcpus,
    pairs: res,
    accessesRatio: median(acc),
    faultsRatio: median(flt),
    accessesRatioCi: bootstrapMedianCi(acc),
    faultsRatioCi: bootstrapMedianCi(flt),
    contentionRatio: median(res.map((p) => p.on.contentionRatio ?? 0)),
  };
}
