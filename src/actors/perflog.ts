/**
 * The measurements of the `dirty-log-perf` scenario, the kernel's
 * tools/testing/selftests/kvm/dirty_log_perf_test.c: each vCPU writes every
 * page of its own slice of guest RAM once per iteration (memstress_guest_code(),
 * lib/memstress.c), the host waits until every vCPU has finished the
 * iteration, then collects the dirty log (KVM_GET_DIRTY_LOG, which
 * write-protects what it collects), so that the next iteration's writes
 * fault again. What the selftest prints per iteration, and what is recorded
 * here, is the "dirty memory time": from the host bumping the iteration
 * number until the last vCPU has written its last page.
 *
 * Synchronisation (shared region, CTRL.ITERATION): the migrator stores
 * `iteration << DONE_BITS` and bumps CONTROL_GEN; each vCPU, when its slice
 * is written, stores its finish time here and adds 1 to the word (the
 * selftest's vcpu_last_completed_iteration[]); the vCPU that makes the count
 * reach the number of vCPUs bumps CONTROL_GEN. Everybody waits on
 * CONTROL_GEN, which every stop-the-world and the end of the run bump too,
 * so a wait between iterations is an idle wait for the watchdog and never
 * keeps the world from stopping.
 *
 * The record is a SharedArrayBuffer handed to the actors in ActorParams
 * (perfLog) and read by the thread that started the run once the run is
 * over (readPerfLog): `s2stress bench` observes the logs created while it
 * runs a point (observePerfLogs). Times are read from the monotonic clock of
 * the process (process.hrtime: one clock for every thread; a worker's
 * performance.now() counts from the worker's own start).
 */
import { MAX_VCPUS } from '../config.js';

/** Low bits of CTRL.ITERATION: vCPUs done with the iteration (up to MAX_VCPUS). */
export const DONE_BITS = 7;
const DONE_MASK = (1 << DONE_BITS) - 1;
if (MAX_VCPUS > DONE_MASK) throw new Error(`perflog: ${DONE_BITS} bits cannot count ${MAX_VCPUS} vCPUs`);

/** The iteration number in a CTRL.ITERATION word. */
export function perfIteration(word: number): number {
  return word >>> DONE_BITS;
}

/** The vCPUs done with that iteration. */
export function perfDone(word: number): number {
  return word & DONE_MASK;
}

/** The word that starts iteration `iteration` (nobody done yet). */
export function perfStartWord(iteration: number): number {
  return (iteration << DONE_BITS) | 0;
}

/** Milliseconds on the process's monotonic clock (the same in every thread). */
export function perfNow(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}

/**
 * Passes of a run that are a warm-up, recorded apart: V8 compiles the fault
 * path while the first one runs (its iterations were measured at 10 to 30
 * times the later ones), which a compiled kernel does not know of.
 */
export const WARMUP_PASSES = 1;

/** Slots of one group of passes (the warm-up, the measured ones), Float64. */
const G = {
  /** Timed (dirty) iterations, and their dirty times, faults and guest accesses. */
  ITERATIONS: 0,
  DIRTY_MS: 1,
  FAULTS: 2,
  ACCESSES: 3,
  /** The first iteration after logging was turned on (the one that meets the blocks on a THP guest). */
  FIRST_N: 4,
  FIRST_MS: 5,
  FIRST_FAULTS: 6,
  /** Iteration 0 of each pass: populate, logging off. */
  POPULATES: 7,
  POPULATE_MS: 8,
  /** KVM_GET_DIRTY_LOG after each iteration. */
  HARVESTS: 9,
  HARVEST_MS: 10,
  /** Times logging was turned on, and off (a pass completed). */
  ENABLES: 11,
  ENABLE_MS: 12,
  PASSES: 13,
  DISABLE_MS: 14,
} as const;
const GROUP_SLOTS = 16;
/** vCPUs of the run (set by the migrator), then the two groups. */
const VCPUS = 0;
const GROUPS = 1;
/** Per vCPU: when it finished its slice of the current iteration (perfNow()). */
const FINISH = GROUPS + 2 * GROUP_SLOTS;
/** Timed iterations recorded in the series, and the dirty time of each of the first SERIES_CAP (warm-up first). */
const SERIES_N = FINISH + MAX_VCPUS;
const SERIES = SERIES_N + 1;
export const SERIES_CAP = 1024;
const SLOTS = SERIES + SERIES_CAP;

/** One run's record, seen from any thread. */
export class PerfLog {
  private readonly f: Float64Array;
  /** Base slot of the group the current pass is counted in. */
  private g = GROUPS;
  constructor(sab: SharedArrayBuffer) {
    this.f = new Float64Array(sab);
  }
  /** vCPU side: its slice of the current iteration is written (before it counts itself done). */
  finished(vcpu: number, at: number): void {
    this.f[FINISH + vcpu] = at;
  }
  /** When the last of `vcpus` vCPUs finished (after every one counted itself done). */
  lastFinish(vcpus: number): number {
    let t = -Infinity;
    for (let v = 0; v < vcpus; v++) t = Math.max(t, this.f[FINISH + v]);
    return t;
  }
  setVcpus(n: number): void {
    this.f[VCPUS] = n;
  }
  /** Migrator side: pass `pass` (from 0) begins; the first WARMUP_PASSES are counted apart. */
  beginPass(pass: number): void {
    this.g = GROUPS + (pass < WARMUP_PASSES ? 0 : GROUP_SLOTS);
  }
  populate(ms: number): void {
    this.f[this.g + G.POPULATES]++;
    this.f[this.g + G.POPULATE_MS] += ms;
  }
  enabled(ms: number): void {
    this.f[this.g + G.ENABLES]++;
    this.f[this.g + G.ENABLE_MS] += ms;
  }
  /** A timed iteration: its dirty time, the faults and guest accesses in it; `first`: the first one of its pass. */
  iteration(first: boolean, ms: number, faults: number, accesses: number): void {
    const f = this.f;
    const g = this.g;
    const n = f[SERIES_N]++;
    if (n < SERIES_CAP) f[SERIES + n] = ms;
    f[g + G.ITERATIONS]++;
    f[g + G.DIRTY_MS] += ms;
    f[g + G.FAULTS] += faults;
    f[g + G.ACCESSES] += accesses;
    if (first) {
      f[g + G.FIRST_N]++;
      f[g + G.FIRST_MS] += ms;
      f[g + G.FIRST_FAULTS] += faults;
    }
  }
  harvested(ms: number): void {
    this.f[this.g + G.HARVESTS]++;
    this.f[this.g + G.HARVEST_MS] += ms;
  }
  /** Logging turned off: the pass is over. */
  passDone(disableMs: number): void {
    this.f[this.g + G.PASSES]++;
    this.f[this.g + G.DISABLE_MS] += disableMs;
  }
}

/** Observers of the logs created in this thread (s2stress bench). */
const observers = new Set<(log: SharedArrayBuffer) => void>();

/** Call `cb` with every perf log created from now on in this thread; returns the function that stops it. */
export function observePerfLogs(cb: (log: SharedArrayBuffer) => void): () => void {
  observers.add(cb);
  return () => {
    observers.delete(cb);
  };
}

/** A new, empty log for one run (stress/scenarios.ts actorParams()). */
export function createPerfLog(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(SLOTS * 8);
  for (const cb of observers) cb(sab);
  return sab;
}

/** Per iteration means of some of the iterations (0 when there were none). */
export interface PerfIterations {
  iterations: number;
  dirtyMsPerIteration: number;
  faultsPerIteration: number;
}

/** What a group of passes measured, as dirty_log_perf_test prints it, plus the faults. */
export interface PerfGroupSummary {
  /** Passes completed (populate, logging on, iterations, logging off) and timed iterations (logging on). */
  passes: number;
  iterations: number;
  /** Mean dirty memory time per iteration, ms: from the iteration's start until the last vCPU finished its slice. */
  dirtyMsPerIteration: number;
  dirtyMsTotal: number;
  /** Stage-2 faults in the timed iterations, and per second of dirty memory time. */
  faults: number;
  faultsPerSec: number;
  /** Guest accesses in the timed iterations (every page of every slice once per iteration). */
  accesses: number;
  /** The first iteration after logging was turned on (block splits on a THP guest), and the others. */
  first: PerfIterations;
  rest: PerfIterations;
  /** Means: iteration 0 (populate, logging off) per pass; turning logging on, and off, per pass; KVM_GET_DIRTY_LOG per iteration. */
  populateMs: number;
  enableMs: number;
  disableMs: number;
  getDirtyLogMs: number;
}

/** A run's record: the passes after the warm-up (the figures), the warm-up apart. */
export interface PerfSummary extends PerfGroupSummary {
  vcpus: number;
  warmupPasses: number;
  warmup: PerfGroupSummary;
  /** Dirty time of each timed iteration, ms, in order (the warm-up's first), the first SERIES_CAP. */
  series: number[];
}

const per = (x: number, n: number): number => (n > 0 ? x / n : 0);

function groupSummary(f: Float64Array, g: number): PerfGroupSummary {
  const at = (k: number): number => f[g + k];
  const n = at(G.ITERATIONS);
  const firstN = at(G.FIRST_N);
  return {
    passes: at(G.PASSES),
    iterations: n,
    dirtyMsPerIteration: per(at(G.DIRTY_MS), n),
    dirtyMsTotal: at(G.DIRTY_MS),
    faults: at(G.FAULTS),
    faultsPerSec: per(at(G.FAULTS), at(G.DIRTY_MS) / 1000),
    accesses: at(G.ACCESSES),
    first: { iterations: firstN, dirtyMsPerIteration: per(at(G.FIRST_MS), firstN), faultsPerIteration: per(at(G.FIRST_FAULTS), firstN) },
    rest: {
      iterations: n - firstN,
      dirtyMsPerIteration: per(at(G.DIRTY_MS) - at(G.FIRST_MS), n - firstN),
      faultsPerIteration: per(at(G.FAULTS) - at(G.FIRST_FAULTS), n - firstN),
    },
    populateMs: per(at(G.POPULATE_MS), at(G.POPULATES)),
    enableMs: per(at(G.ENABLE_MS), at(G.ENABLES)),
    disableMs: per(at(G.DISABLE_MS), at(G.PASSES)),
    getDirtyLogMs: per(at(G.HARVEST_MS), at(G.HARVESTS)),
  };
}

export function readPerfLog(sab: SharedArrayBuffer): PerfSummary {
  const f = new Float64Array(sab);
  return {
    vcpus: f[VCPUS],
    ...groupSummary(f, GROUPS + GROUP_SLOTS),
    warmupPasses: WARMUP_PASSES,
    warmup: groupSummary(f, GROUPS),
    series: Array.from(f.subarray(SERIES, SERIES + Math.min(f[SERIES_N], SERIES_CAP))),
  };
}
