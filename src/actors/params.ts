/**
 * What an actor needs to know about the run, as plain data (it crosses into
 * worker threads). Resolved by stress/scenarios.ts from the CLI flags.
 */
import seedrandom from 'seedrandom';

export type Pattern = 'uniform' | 'hot' | 'sweep';
/**
 * `perf`: the kernel's dirty_log_perf_test (src/actors/perflog.ts): each vCPU
 * writes its own slice of guest RAM once per iteration, the host harvests
 * the dirty log between iterations and times them.
 */
export type MigratorMode = 'migrate' | 'cancel' | 'mixed' | 'selftest' | 'idle' | 'teardown' | 'perf';

export interface HostOpsWeights {
  migrate: number;
  split: number;
  collapse: number;
  ksm: number;
  zap: number;
  /**
   * Operations on part of a THP, which since Linux 4.5 leave it mapped by
   * PTEs and still compound (src/mm/hostops.ts): split_huge_pmd() alone, a
   * MADV_DONTNEED of part of it, mprotect() of part of it, and the deferred
   * split of such a THP. Absent: derived from `split` and `zap`
   * (src/actors/hostmm.ts). Drawn only when the guest has THP memory.
   */
  splitPmd?: number;
  thpZap?: number;
  mprotect?: number;
  deferredSplit?: number;
}

export interface ActorParams {
  seed: number;
  /** Percentage of vCPU accesses that are writes. */
  writePct: number;
  /** Access pattern per vCPU (index = vcpu id modulo length). */
  patterns: Pattern[];
  /** Guest accesses each vCPU performs before it stops (0 = until the run ends). */
  opsPerVcpu: number;
  /** Host-MM operations per second (0 = host-MM actor idle, -1 = as fast as it can). */
  hostOpsPerSec: number;
  hostOps: HostOpsWeights;
  migrator: MigratorMode;
  /** Precopy rounds before stop-and-copy (or before cancel). */
  precopyRounds: number;
  /** Pause between migrations, ms (a rate, not a synchronisation). */
  migrationGapMs: number;
  /** Scheduling-point chaos probability (threads mode). */
  chaos: number;
  /** Fraction of accesses that go to the device slot (mixed backing). */
  devicePct: number;
  /**
   * Migrator `perf` only: where the migrator and the vCPUs record the
   * iterations (src/actors/perflog.ts), shared with the thread that started
   * the run. Absent or null for every other scenario.
   */
  perfLog?: SharedArrayBuffer | null;
}

/**
 * One host-MM operation in HINT_EVERY aims at the page a vCPU is using right
 * now (memory pressure hits hot pages), the rest at uniformly drawn pages.
 */
export const HINT_EVERY = 4;

/**
 * One guest access in EDGE_EVERY aims at an edge: the first or last page of
 * the slot, of a dirty-bitmap word (32 pages) or of a 2 MiB region, or the
 * page a host operation is working on. Defects at one edge page (an
 * off-by-one at a range end) are otherwise met by chance only.
 */
export const EDGE_EVERY = 8;

/** A per-actor seed derived from the run seed (seedrandom's ARC4 stream). */
export function actorSeed(runSeed: number, actorId: number): number {
  const rng = seedrandom(`s2stress:${runSeed}:${actorId}`);
  return rng.int32() | 1;
}
