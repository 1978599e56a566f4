/**
 * `s2stress bench --only dirty-log`: the kernel's dirty_log_perf_test
 * (tools/testing/selftests/kvm/dirty_log_perf_test.c) in the model, the old
 * design against the parallel one, side by side in one run: the same seed,
 * bytes per vCPU (the selftest's -b) and work for each profile at each vCPU
 * count, in threads mode, on a THP guest (the selftest's -s anonymous_thp).
 * A point is a run of a fixed number of passes (populate, logging on, the
 * scenario's iterations, logging off), set with --ops so that a slow point
 * does the same iterations as a fast one; the first pass is a warm-up (V8
 * compiles the fault path then) and is reported apart. Per point, from the
 * scenario's own record of its
 * iterations (src/actors/perflog.ts): the dirty memory time per iteration
 * (what the selftest prints: from the iteration's start until the last vCPU
 * has written its slice) and the faults per second of it; from lock_stat,
 * the faults' wait for mmu_lock (the fault, dissolve and block-map rows,
 * read and write side summed) per fault and the share of faults that
 * waited (contended acquisitions / acquisitions). Next to them, the
 * upstream figures of the Linux 6.2 parallel-fault work.
 */
import os from 'node:os';
import { ConfigError, MAX_VCPUS, PROFILES, type LockKind, type ProfileName, formatBytes } from '../src/config.js';
import { runThreads } from '../stress/run.js';
import { defaultOptions, profileLockKind, type RunOptions } from '../stress/options.js';
import type { Report } from '../stress/report.js';
import { WARMUP_PASSES, observePerfLogs, readPerfLog, type PerfSummary } from '../src/actors/perflog.js';
import { findScenario } from '../stress/scenarios.js';
import { PAGE_SIZE } from '../src/arch/stage2.js';

/** The scenario (stress/scenarios.ts BENCH_SCENARIOS). */
export const DIRTY_LOG_SCENARIO = 'dirty-log-perf';

/** The two sides: the 2014 line's last profile (a ticket spinlock, every fault exclusive) and 6.2 (every fault on the read side of the rwlock). */
export const DEFAULT_PROFILES: [ProfileName, ProfileName] = ['fixed', '6.2'];

/** lock_stat rows a fault's acquisition ends on (a fault that dissolves a block or maps one is re-tagged there). */
export const FAULT_SITES = ['fault', 'dissolve', 'block-map'] as const;

const MIB = 1024 * 1024;
/** Largest guest (MAX guest memory of the model). */
const MAX_GUEST = 16 * 1024 * MIB;

/**
 * Upstream: the Linux 6.2 parallel stage-2 fault series (Oliver Upton),
 * `dirty_log_perf_test -s anonymous_thp -b 4G -m 2`, dirty memory time per
 * iteration in seconds, 6.1-rc3 against 6.2 (docs/kernel-notes.md
 * section 3). 6.1-rc3's mmu_lock is already the 5.18 rwlock: a page-size
 * write-permission fault while logging took its read side, every other
 * fault its write side; the model's profile of that code is `5.18`.
 */
export const UPSTREAM = {
  command: 'dirty_log_perf_test -s anonymous_thp -b 4G -m 2',
  old: '6.1-rc3',
  new: '6.2',
  note: "6.1-rc3's mmu_lock is the 5.18 rwlock (page-size write-permission faults while logging on its read side, the rest on its write side), not the spinlock of the old profile; the model's profile of it is 5.18 (--profiles 5.18,6.2)",
  points: [
    { vcpus: 1, oldS: 0.87, newS: 0.93 },
    { vcpus: 4, oldS: 2.39, newS: 1.27 },
    { vcpus: 8, oldS: 5.01, newS: 1.39 },
    { vcpus: 16, oldS: 8.89, newS: 2.07 },
    { vcpus: 48, oldS: 32.1, newS: 6.23 },
  ],
} as const;

export interface DirtyLogOptions {
  vcpus: number[];
  /** Guest bytes per vCPU (the selftest's -b); the guest is vcpus x this. */
  vcpuMem: number;
  profiles: [ProfileName, ProfileName];
  /** Measured passes per point, after the warm-up. */
  passes: number;
  seed: number;
}

/** The faults' side of lock_stat in one run. */
export interface FaultLockStats {
  /** Acquisitions of mmu_lock by faults (FAULT_SITES rows), both sides, and each side's share of them. */
  acquisitions: number;
  readAcquisitions: number;
  writeAcquisitions: number;
  /** Of those, the acquisitions that waited (contended). */
  contentions: number;
  /** contentions / acquisitions: the share of faults that waited for mmu_lock. */
  waitedShare: number;
  /** Total wait of the faults, ns; per fault (over every acquisition) and per wait (over the contended ones). */
  waitNsTotal: number;
  waitNsPerFault: number;
  waitNsPerWait: number;
}

export interface DirtyLogPoint {
  side: 'old' | 'new';
  profile: ProfileName;
  lock: LockKind;
  vcpus: number;
  /** Guest memory of the run (vcpus x vcpuMem), e.g. "32M". */
  guestMem: string;
  result: 'pass' | 'fail';
  error: string | null;
  violations: string[];
  elapsedMs: number;
  /** The scenario's record of its iterations; null if the run made none. */
  perf: PerfSummary | null;
  /** mmu_lock as the faults met it (lock_stat's fault rows). */
  faultLock: FaultLockStats;
  counters: { faults: number; readSideFaults: number; lostRaces: number; relaxes: number; blockSplits: number; dissolves: number };
}

export interface DirtyLogRow {
  vcpus: number;
  /** Dirty memory time per iteration, ms, old and new side; old / new. */
  oldMs: number | null;
  newMs: number | null;
  ratio: number | null;
  /** The upstream figures at this vCPU count, seconds, and their ratio (null where upstream has none). */
  upstream: { oldS: number; newS: number; ratio: number } | null;
}

export interface DirtyLogResult {
  scenario: string;
  command: string;
  vcpuMem: string;
  /** Measured passes per point (after WARMUP_PASSES), timed iterations per pass. */
  passes: number;
  iterationsPerPass: number;
  warmupPasses: number;
  profiles: { old: { profile: ProfileName; lock: LockKind }; new: { profile: ProfileName; lock: LockKind } };
  cores: number;
  points: DirtyLogPoint[];
  rows: DirtyLogRow[];
  upstream: typeof UPSTREAM;
  notes: string[];
}

/** --vcpu-mem: a multiple of 2M (one stage-2 block per vCPU at least), the guest at most 16G. */
export function parseVcpuMem(flag: string, bytes: number): number {
  if (bytes < 2 * MIB || bytes % (2 * MIB) !== 0) {
    throw new ConfigError(flag, `${flag} takes guest bytes per vCPU, a multiple of 2M from 2M (the selftest's -b), got ${formatBytes(bytes)}`);
  }
  return bytes;
}

/** --profiles OLD,NEW: two profile names. */
export function parseProfilePair(flag: string, text: string): [ProfileName, ProfileName] {
  const parts = text.split(',');
  if (parts.length !== 2 || parts.some((p) => !(PROFILES as readonly string[]).includes(p))) {
    throw new ConfigError(flag, `${flag} takes two profiles, old and new, as OLD,NEW (each one of ${PROFILES.join('|')}), got '${text}'`);
  }
  return parts as [ProfileName, ProfileName];
}

/** Bad combinations, named by flag, before anything runs. */
export function checkDirtyLogOptions(o: DirtyLogOptions): void {
  const most = Math.max(...o.vcpus);
  if (most > MAX_VCPUS) throw new ConfigError('--vcpus', `--vcpus: at most ${MAX_VCPUS}, got ${most}`);
  if (!Number.isInteger(o.passes) || o.passes < 1) throw new ConfigError('--passes', `--passes takes a whole number of measured passes from 1, got ${o.passes}`);
  if (most * o.vcpuMem > MAX_GUEST) {
    throw new ConfigError('--vcpu-mem', `--vcpu-mem ${formatBytes(o.vcpuMem)} x ${most} vCPUs is ${formatBytes(most * o.vcpuMem)} of guest memory; the model takes at most 16G`);
  }
}

/** Timed iterations per pass, and guest accesses per vCPU per pass (every page of its slice, once per iteration and at populate). */
export function passShape(o: DirtyLogOptions): { iterations: number; accessesPerVcpu: number } {
  const s = findScenario(DIRTY_LOG_SCENARIO);
  if (!s) throw new Error(`scenario ${DIRTY_LOG_SCENARIO} is missing`);
  return { iterations: s.precopyRounds, accessesPerVcpu: (o.vcpuMem / PAGE_SIZE) * (1 + s.precopyRounds) };
}

export function dirtyLogRunOptions(o: DirtyLogOptions, profile: ProfileName, vcpus: number): RunOptions {
  return {
    ...defaultOptions(),
    scenario: DIRTY_LOG_SCENARIO,
    profile,
    lock: profileLockKind(profile),
    vcpus,
    guestMem: vcpus * o.vcpuMem,
    backing: 'thp',
    // memstress writes every page unless told otherwise
    writePct: 100,
    // The warm-up and the measured passes, then the vCPUs stop (a quota is looked at between iterations only).
    durationMs: null,
    ops: vcpus * passShape(o).accessesPerVcpu * (WARMUP_PASSES + o.passes),
    seed: o.seed,
    quiet: true,
    lockStats: true,
    // No periodic stop-the-world: a check inside an iteration would be timed with it (the final check still runs).
    checkEveryMs: 1e9,
  };
}

/** The faults' rows of a run's lock_stat, both sides summed. */
export function faultLockStats(r: Report): FaultLockStats {
  let acq = 0;
  let read = 0;
  let cont = 0;
  let wait = 0;
  for (const s of r.lock.sites) {
    if (!(FAULT_SITES as readonly string[]).includes(s.site)) continue;
    acq += s.acquisitions;
    if (s.side === 'read') read += s.acquisitions;
    cont += s.contentions;
    wait += s.waitNs.total;
  }
  return {
    acquisitions: acq,
    readAcquisitions: read,
    writeAcquisitions: acq - read,
    contentions: cont,
    waitedShare: acq > 0 ? cont / acq : 0,
    waitNsTotal: wait,
    waitNsPerFault: acq > 0 ? wait / acq : 0,
    waitNsPerWait: cont > 0 ? wait / cont : 0,
  };
}

/** A threads run of the dirty-log-perf scenario, with the records of its iterations (one per run). */
export async function runWithPerfLogs(ro: RunOptions): Promise<{ r: Report; logs: SharedArrayBuffer[] }> {
  const logs: SharedArrayBuffer[] = [];
  const stop = observePerfLogs((l) => logs.push(l));
  try {
    return { r: await runThreads(ro), logs };
  } finally {
    stop();
  }
}

export async function runDirtyLogPoint(o: DirtyLogOptions, side: 'old' | 'new', vcpus: number): Promise<DirtyLogPoint> {
  const profile = o.profiles[side === 'old' ? 0 : 1];
  const ro = dirtyLogRunOptions(o, profile, vcpus);
  const { r, logs } = await runWithPerfLogs(ro);
  if (logs.length !== 1) throw new Error(`a ${DIRTY_LOG_SCENARIO} run made ${logs.length} records of its iterations, expected 1`);
  const perf = readPerfLog(logs[0]);
  const c = r.counters;
  return {
    side,
    profile,
    lock: ro.lock,
    vcpus,
    guestMem: formatBytes(ro.guestMem),
    result: r.result,
    error: r.error,
    violations: r.violations.map((v) => `[${v.invariant}] ${v.message}`),
    elapsedMs: r.elapsedMs,
    perf: perf.iterations > 0 ? perf : null,
    faultLock: faultLockStats(r),
    counters: {
      faults: c.faults,
      readSideFaults: c.readSideFaults,
      lostRaces: c.lostRaces,
      relaxes: c.relaxes,
      blockSplits: c.blockSplits,
      dissolves: c.dissolves,
    },
  };
}

export function dirtyLogRows(points: DirtyLogPoint[], vcpus: number[]): DirtyLogRow[] {
  return vcpus.map((v) => {
    const at = (side: 'old' | 'new'): number | null => points.find((p) => p.side === side && p.vcpus === v)?.perf?.dirtyMsPerIteration ?? null;
    const oldMs = at('old');
    const newMs = at('new');
    const up = UPSTREAM.points.find((p) => p.vcpus === v);
    return {
      vcpus: v,
      oldMs,
      newMs,
      ratio: oldMs !== null && newMs !== null && newMs > 0 ? oldMs / newMs : null,
      upstream: up ? { oldS: up.oldS, newS: up.newS, ratio: up.oldS / up.newS } : null,
    };
  });
}

export function dirtyLogNotes(o: DirtyLogOptions, cores: number): string[] {
  const [oldP, newP] = o.profiles;
  return [
    `this machine has ${cores} core(s): real parallelism stops at ${cores} vCPU(s); beyond that the vCPU threads time-share the cores, so the dirty time per iteration grows with the vCPUs for either design (each vCPU brings its own ${formatBytes(o.vcpuMem)} slice: with a core per vCPU the ideal is a flat line, here it is at best ${cores > 1 ? `t(1) x vCPUs / ${cores}` : 't(1) x vCPUs'} past ${cores} vCPU(s))`,
    `the shape past ${cores} vCPU(s) is in the wait per fault and the share of faults that waited: ${oldP}'s ${profileLockKind(oldP) === 'rwlock' ? 'faults on the write side of its rwlock' : `faults (${profileLockKind(oldP)} spinlock, all exclusive)`} wait for each other; ${newP}'s${profileLockKind(newP) === 'rwlock' ? ' on the read side wait only for the write side (the dirty-log harvest between iterations, and faults that still take it)' : ` (${profileLockKind(newP)}) wait for each other too`}`,
    ...(profileLockKind(oldP) === 'ticket'
      ? [
          `with more vCPUs than cores the FIFO ticket lock hands mmu_lock to waiters that are not running (lock-waiter preemption), so ${oldP}'s times at those points are inflated beyond what a machine with a core per vCPU shows; read the ratios there as the direction, not the size`,
        ]
      : []),
    `upstream: ${UPSTREAM.note}`,
    `each point is ${WARMUP_PASSES} warm-up pass(es) and ${o.passes} measured one(s) of populate, logging on, ${passShape(o).iterations} iterations, logging off; the warm-up is left out (V8 compiles the fault path while it runs: its iterations were 10 to 30 times slower)`,
    `the model's iterations are small (${formatBytes(o.vcpuMem)} per vCPU against upstream's 4G; a dirty-log harvest with write-protection, the selftest's -g) and its times are of a JavaScript model, not of hardware: compare ratios and shapes, not seconds`,
  ];
}

export async function dirtyLogBench(o: DirtyLogOptions, progress: (line: string) => void): Promise<DirtyLogResult> {
  checkDirtyLogOptions(o);
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const points: DirtyLogPoint[] = [];
  // Side by side: both profiles at a vCPU count, then the next count; which
  // side runs first alternates from one count to the next, so that a drift
  // of the machine's load does not always favour the same side.
  for (const [k, v] of o.vcpus.entries()) {
    for (const side of k % 2 === 0 ? (['old', 'new'] as const) : (['new', 'old'] as const)) {
      const p = await runDirtyLogPoint(o, side, v);
      const ms = p.perf ? `${p.perf.dirtyMsPerIteration.toFixed(1)} ms/iteration over ${p.perf.iterations} iteration(s)` : 'no iteration';
      progress(`  dirty-log: ${p.profile} (${p.lock}) ${v} vCPU(s): ${ms}, ${(p.faultLock.waitedShare * 100).toFixed(1)}% of faults waited, ${p.result}${p.error ? ` (${p.error.split('\n')[0]})` : ''}`);
      points.push(p);
    }
  }
  const lockOf = (p: ProfileName): LockKind => profileLockKind(p);
  // In the JSON, old side first at every count, whatever the order they ran in.
  points.sort((a, b) => a.vcpus - b.vcpus || (a.side === 'old' ? -1 : 1));
  return {
    scenario: DIRTY_LOG_SCENARIO,
    command: `s2stress run --scenario ${DIRTY_LOG_SCENARIO} --backing thp --write-pct 100 --vcpus N --guest-mem <N x ${formatBytes(o.vcpuMem)}> --ops <N x ${passShape(o).accessesPerVcpu * (WARMUP_PASSES + o.passes)}> --profile P --seed ${o.seed} --check-every 1h`,
    vcpuMem: formatBytes(o.vcpuMem),
    passes: o.passes,
    iterationsPerPass: passShape(o).iterations,
    warmupPasses: WARMUP_PASSES,
    profiles: { old: { profile: o.profiles[0], lock: lockOf(o.profiles[0]) }, new: { profile: o.profiles[1], lock: lockOf(o.profiles[1]) } },
    cores,
    points,
    rows: dirtyLogRows(points, o.vcpus),
    upstream: UPSTREAM,
    notes: dirtyLogNotes(o, cores),
  };
}
