/**
 * Scenarios: which actors run and how hard, as ActorParams. Each is a shape
 * of real life: a precopy migration, a cancelled one, a host under memory
 * pressure, the kernel's own dirty_log_test, and everything at once.
 */
import type { ActorParams, HostOpsWeights, MigratorMode, Pattern } from '../src/actors/params.js';
import { createPerfLog } from '../src/actors/perflog.js';
import { thpOpWeights } from '../src/actors/hostmm.js';

/**
 * The host-MM operation kinds (src/actors/hostmm.ts runHostMm): page
 * migration, THP split, collapse (khugepaged), KSM merge, MADV_DONTNEED zap,
 * and on THP memory split_huge_pmd, a partial zap, mprotect of part, the
 * deferred split. `--host-ops` names a subset.
 */
export const HOST_OP_KINDS = ['migrate', 'split', 'collapse', 'ksm', 'zap', 'splitPmd', 'thpZap', 'mprotect', 'deferredSplit'] as const;
export type HostOpKind = (typeof HOST_OP_KINDS)[number];

/** The weights with the operations on part of a THP resolved as runHostMm derives them on THP memory. */
function resolvedWeights(w: HostOpsWeights): Record<HostOpKind, number> {
  return { migrate: w.migrate, split: w.split, collapse: w.collapse, ksm: w.ksm, zap: w.zap, ...thpOpWeights(w, true) };
}

/** The host operation kinds a scenario draws (weight above 0; none when its host MM is idle), in HOST_OP_KINDS order. */
export function scenarioHostOpKinds(s: ScenarioSpec): HostOpKind[] {
  if (s.hostOpsPerSec === 0) return [];
  const w = resolvedWeights(s.hostOps);
  return HOST_OP_KINDS.filter((k) => w[k] > 0);
}

/**
 * The scenario's weights restricted to `kinds` (--host-ops): every other kind
 * weighs 0, the kept ones what they weighed (the THP-part ones resolved, so
 * that dropping split does not drop them too). Null: the weights unchanged.
 */
export function restrictHostOps(w: HostOpsWeights, kinds: readonly string[] | null | undefined): HostOpsWeights {
  if (kinds == null) return w;
  const r = resolvedWeights(w);
  const out = {} as Record<HostOpKind, number>;
  for (const k of HOST_OP_KINDS) out[k] = kinds.includes(k) ? r[k] : 0;
  return out;
}

export interface ScenarioSpec {
  name: string;
  description: string;
  migrator: MigratorMode;
  hostOpsPerSec: number;
  hostOps: HostOpsWeights;
  patterns: Pattern[];
  precopyRounds: number;
  migrationGapMs: number;
}

const ALL_HOST_OPS: HostOpsWeights = { migrate: 30, split: 10, collapse: 10, ksm: 20, zap: 10 };

export const SCENARIOS: readonly ScenarioSpec[] = [
  {
    name: 'mixed',
    description: 'every actor at once: vCPUs, host MM churn, migrations completed and cancelled',
    migrator: 'mixed',
    hostOpsPerSec: 2000,
    hostOps: ALL_HOST_OPS,
    patterns: ['uniform', 'hot', 'sweep'],
    precopyRounds: 3,
    migrationGapMs: 2,
  },
  {
    name: 'migrate',
    description: 'precopy migrations to the end (stop-and-copy and compare), light host MM',
    migrator: 'migrate',
    hostOpsPerSec: 200,
    hostOps: { migrate: 40, split: 10, collapse: 10, ksm: 20, zap: 0 },
    patterns: ['uniform', 'hot'],
    precopyRounds: 4,
    migrationGapMs: 2,
  },
  {
    name: 'cancel',
    description: 'migrations cancelled part-way: logging on, rounds, logging off; huge mappings come back',
    migrator: 'cancel',
    hostOpsPerSec: 200,
    hostOps: { migrate: 40, split: 5, collapse: 20, ksm: 20, zap: 0 },
    patterns: ['hot', 'uniform', 'sweep'],
    precopyRounds: 2,
    migrationGapMs: 2,
  },
  {
    name: 'notifier-storm',
    description: 'the host MM as fast as it can (migration, THP, KSM, zaps) under running migrations',
    migrator: 'mixed',
    hostOpsPerSec: -1,
    hostOps: ALL_HOST_OPS,
    patterns: ['hot', 'uniform'],
    precopyRounds: 3,
    migrationGapMs: 2,
  },
  {
    name: 'log-toggle',
    description: 'dirty logging switched on and off in quick succession (as QEMU does for display framebuffers), faults racing each switch',
    migrator: 'cancel',
    hostOpsPerSec: 0,
    hostOps: ALL_HOST_OPS,
    patterns: ['hot', 'uniform'],
    precopyRounds: 0,
    migrationGapMs: 0,
  },
  {
    name: 'selftest-dirty-log',
    description: "the kernel's dirty_log_test: per-round log collection and per-page checks",
    migrator: 'selftest',
    hostOpsPerSec: 0,
    hostOps: ALL_HOST_OPS,
    patterns: ['uniform'],
    precopyRounds: 0,
    migrationGapMs: 3,
  },
  {
    name: 'fault-storm',
    description: 'fault-heavy, for lock contention and scaling (s2stress bench): logging on, harvests back to back so that writes keep faulting, no host MM',
    migrator: 'cancel',
    hostOpsPerSec: 0,
    hostOps: ALL_HOST_OPS,
    patterns: ['uniform'],
    precopyRounds: 64,
    migrationGapMs: 0,
  },
  {
    name: 'thp-churn',
    description:
      'the host reshapes THPs under a running guest, no migration: split_huge_pmd, MADV_DONTNEED and mprotect of part of a THP, deferred splits, khugepaged (with --backing thp: the 4.5 block over a THP mapped by PTEs)',
    migrator: 'idle',
    hostOpsPerSec: -1,
    hostOps: { migrate: 10, split: 10, collapse: 20, ksm: 10, zap: 10, splitPmd: 20, thpZap: 30, mprotect: 20, deferredSplit: 10 },
    patterns: ['hot', 'uniform'],
    precopyRounds: 0,
    migrationGapMs: 0,
  },
  {
    name: 'teardown',
    description:
      'VM lives: a migration and a memslot deleted and re-created per life, then the vCPUs stop and exit_mmap (MMU notifier release) races the last VM fd close (kvm_destroy_vm); then a new VM',
    migrator: 'teardown',
    hostOpsPerSec: 2000,
    hostOps: ALL_HOST_OPS,
    patterns: ['uniform', 'hot', 'sweep'],
    precopyRounds: 1,
    migrationGapMs: 1,
  },
];

/**
 * Scenarios made to measure rather than to hunt races (s2stress bench).
 * Kept out of SCENARIOS, which the soak's seeds and the test matrices run
 * over (one more scenario there would change what every soak seed means);
 * `--scenario NAME` finds them all the same.
 */
export const BENCH_SCENARIOS: readonly ScenarioSpec[] = [
  {
    name: 'dirty-log-perf',
    description:
      "the kernel's dirty_log_perf_test (s2stress bench --only dirty-log): vCPU i owns the i-th of --vcpus equal slices of guest RAM and writes each of its pages once per iteration (--write-pct of them; the selftest writes all); between iterations the host collects the dirty log (write-protecting it) and times each iteration until the last vCPU is done; passes of populate, logging on, 2 iterations, logging off; no host MM",
    migrator: 'perf',
    hostOpsPerSec: 0,
    hostOps: ALL_HOST_OPS,
    patterns: ['sweep'],
    precopyRounds: 2,
    migrationGapMs: 0,
  },
];

/** Every scenario `--scenario` takes (what `list scenarios` would show). */
export const ALL_SCENARIOS: readonly ScenarioSpec[] = [...SCENARIOS, ...BENCH_SCENARIOS];

export function findScenario(name: string): ScenarioSpec | undefined {
  return ALL_SCENARIOS.find((s) => s.name === name);
}

export function actorParams(s: ScenarioSpec, o: { seed: number; writePct: number; opsPerVcpu: number; chaos: number; hostOps?: readonly string[] | null }): ActorParams {
  return {
    seed: o.seed,
    writePct: o.writePct,
    patterns: s.patterns,
    opsPerVcpu: o.opsPerVcpu,
    hostOpsPerSec: s.hostOpsPerSec,
    hostOps: restrictHostOps(s.hostOps, o.hostOps),
    migrator: s.migrator,
    precopyRounds: s.precopyRounds,
    migrationGapMs: s.migrationGapMs,
    chaos: o.chaos,
    devicePct: 1,
    // A fresh record of the iterations for the dirty_log_perf_test scenario.
    perfLog: s.migrator === 'perf' ? createPerfLog() : null,
  };
}
