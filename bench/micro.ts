/**
 * Micro benchmarks (tinybench), each a ratio measured side by side in one
 * run (DESIGN.md section 7):
 * - mmu_lock acquire+release, uncontended, per lock kind (the rwlock's write
 *   side and read side each), statistics off / on (sampled holds, the
 *   default) / on (every hold timed), against a bare compare-exchange +
 *   store pair;
 * - a TLB-hit guest access (read and write) against the bare Atomics it
 *   performs;
 * - the 4 KiB fault path, single-threaded, logging on: faults per second.
 *
 * Each task runs a fixed number of operations per call (so that tinybench's
 * own overhead per call is negligible) and the bench runs every task once per
 * round; a ratio is the median over rounds of the per-round ratio, so that a
 * drift of the shared machine between rounds cancels out.
 */
import { Bench } from 'tinybench';
import { DEFAULT_MODEL, LOCK_KINDS, type LockKind, type ModelConfig } from '../src/config.js';
import { distFile, runWorker } from './workers.js';
import { createVm, RAM_SLOT } from '../src/vm.js';
import type { Kvm } from '../src/kvm/kvm.js';
import { Actor } from '../src/sync/actor.js';
import { FreeSched } from '../src/sync/sched.js';
import { LOCK_WORDS, ACTOR } from '../src/shm/layout.js';
import { createLock } from '../src/sync/locks.js';
import { LockStats, DEFAULT_HOLD_SAMPLE } from '../src/sync/lockstat.js';
import { LS } from '../src/sync/locksites.js';
import { guestAccess } from '../src/kvm/vcpu.js';
import { tlbPageSlot } from '../src/kvm/tlb.js';
import { kvmHandleGuestAbort } from '../src/kvm/mmu.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../src/kvm/memslot.js';
import { s2Lookup, unmapStage2Range } from '../src/kvm/pgtable.js';
import { CNT } from '../src/check/names.js';
import { descOa, descWritable, LEVEL_PTE } from '../src/arch/stage2.js';

export interface MicroOptions {
  /** tinybench time per task and round, ms. */
  timeMs: number;
  warmupMs: number;
  rounds: number;
}

interface MicroTask {
  name: string;
  /** Operations one call of fn performs (for ns per operation). */
  ops: number;
  /** Either does the work, or returns the time (ms) of the part to measure. */
  fn: () => unknown;
}

/** ns per operation of each task, one value per round. */
type RoundResults = Map<string, number[]>;

function runRounds(tasks: MicroTask[], o: MicroOptions): RoundResults {
  const out: RoundResults = new Map(tasks.map((t) => [t.name, []]));
  for (let r = 0; r < o.rounds; r++) {
    const bench = new Bench({ time: o.timeMs, warmupTime: o.warmupMs, warmupIterations: 8, iterations: 8, throws: true });
    for (const t of tasks) bench.add(t.name, t.fn, { async: false });
    bench.runSync();
    for (const t of tasks) {
      const res = bench.getTask(t.name)!.result;
      if (res.state !== 'completed') throw new Error(`bench task '${t.name}' did not complete: ${res.state}`);
      out.get(t.name)!.push((res.latency.mean * 1e6) / t.ops);
    }
  }
  return out;
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Median over rounds of ns(task) / ns(baseline) in the same round. */
function ratio(res: RoundResults, task: string, baseline: string): number {
  const a = res.get(task)!;
  const b = res.get(baseline)!;
  return median(a.map((x, i) => x / b[i]));
}

export interface MicroRow {
  name: string;
  nsPerOp: number;
  /** Against the row's baseline (null for a baseline). */
  ratio: number | null;
  baseline: string | null;
}

function rowsOf(res: RoundResults, baselineOf: (name: string) => string | null): MicroRow[] {
  return [...res.keys()].map((name) => {
    const b = baselineOf(name);
    return { name, nsPerOp: median(res.get(name)!), ratio: b ? ratio(res, name, b) : null, baseline: b };
  });
}

// ------------------------------------------------------------------ lock

const LOCK_OPS = 2000;
export const BARE_PAIR = 'bare compareExchange + store';

/** Statistics setting of one lock configuration. */
export type LockStatsMode = 'off' | 'sampled' | 'every';
export interface LockConfig {
  kind: LockKind;
  /** rwlock: which side is taken (write_lock/write_unlock or read_lock/read_unlock); the spinlocks have one. */
  side?: 'write' | 'read';
  statistics: LockStatsMode;
}

/** "ticket", "rwlock write", "rwlock read". */
export function lockLabel(c: LockSubject): string {
  return c.side ? `${c.kind} ${c.side}` : c.kind;
}

export function lockConfigName(c: LockConfig): string {
  const st = c.statistics === 'off' ? 'statistics off' : c.statistics === 'sampled' ? `statistics on (holds sampled 1/${DEFAULT_HOLD_SAMPLE})` : 'statistics on (every hold timed)';
  return `${lockLabel(c)}, ${st}`;
}

/** What is measured: each spinlock kind, and each side of the rwlock. */
export type LockSubject = { kind: LockKind; side?: 'write' | 'read' };
export const LOCK_SUBJECTS: LockSubject[] = LOCK_KINDS.flatMap((kind): LockSubject[] =>
  kind === 'rwlock' ? (['write', 'read'] as const).map((side) => ({ kind, side })) : [{ kind }],
);

/** The configurations measured: each subject with statistics off, sampled (a run's default) and timing every hold. */
export const LOCK_CONFIGS: LockConfig[] = LOCK_SUBJECTS.flatMap((subject) => (['off', 'sampled', 'every'] as const).map((statistics) => ({ ...subject, statistics })));

function bareTask(): MicroTask {
  const w = new Int32Array(new SharedArrayBuffer(LOCK_WORDS * 4));
  return {
    name: BARE_PAIR,
    ops: LOCK_OPS,
    fn: () => {
      for (let i = 0; i < LOCK_OPS; i++) {
        if (Atomics.compareExchange(w, 0, 0, 1) !== 0) throw new Error('bare lock word taken');
        Atomics.store(w, 0, 0);
      }
    },
  };
}

function lockTask(c: LockConfig): MicroTask {
  // The lock block, then an rwlock's readers region (one actor).
  const m = new Int32Array(new SharedArrayBuffer((LOCK_WORDS + 1) * 4));
  const stats = c.statistics === 'off' ? null : new LockStats(c.statistics === 'every' ? 1 : DEFAULT_HOLD_SAMPLE, 1);
  const lock = createLock(c.kind, m, 0, stats, { base: LOCK_WORDS, n: 1 });
  const actor = new Actor(0, new FreeSched(m));
  const site = LS.fault;
  const fn =
    c.side === 'read'
      ? () => {
          for (let i = 0; i < LOCK_OPS; i++) {
            lock.readLock(actor, site);
            lock.readUnlock(actor);
          }
          if (lock.readers() !== 0) throw new Error('lock bench: the read side is still held');
        }
      : () => {
          for (let i = 0; i < LOCK_OPS; i++) {
            lock.lock(actor, site);
            lock.unlock(actor);
          }
          if (lock.owner() !== -1) throw new Error('lock bench: the lock is still held');
        };
  return { name: lockConfigName(c), ops: LOCK_OPS, fn };
}

/**
 * One configuration against the bare pair, side by side in this thread:
 * ns per operation of each, one value per round. Called in a worker thread
 * of its own (bench/lock-worker.ts).
 */
export function lockConfigRounds(c: LockConfig, o: MicroOptions): { bare: number[]; lock: number[] } {
  const bare = bareTask();
  const lock = lockTask(c);
  const res = runRounds([bare, lock], o);
  return { bare: res.get(bare.name)!, lock: res.get(lock.name)! };
}

/**
 * mmu_lock acquire+release, uncontended, against the bare pair. Each
 * configuration runs in a worker thread of its own, as in a run (one lock
 * kind and one statistics setting per thread: the JIT sees what a run's
 * thread sees, not the other kinds' code), and measures the bare pair in the
 * same thread, alternately with the lock, round by round. The bare row is
 * the median over the workers.
 */
export async function lockBench(o: MicroOptions): Promise<MicroRow[]> {
  const file = distFile('lock-worker.js');
  const rows: MicroRow[] = [];
  const bares: number[] = [];
  // One at a time: two would share the two cores with each other.
  for (const c of LOCK_CONFIGS) {
    const r = await runWorker<{ bare: number[]; lock: number[] }>(file, { config: c, options: o });
    bares.push(median(r.bare));
    rows.push({ name: lockConfigName(c), nsPerOp: median(r.lock), ratio: median(r.lock.map((x, i) => x / r.bare[i])), baseline: BARE_PAIR });
  }
  return [{ name: BARE_PAIR, nsPerOp: median(bares), ratio: null, baseline: null }, ...rows];
}

// ------------------------------------------------------------------- TLB

const TLB_OPS = 2000;

function vcpuWorld(cfg: Partial<ModelConfig>, stats: LockStats | null): { kvm: Kvm; vcpu: Actor; migrator: Actor; checker: Actor } {
  const kvm = createVm({ ...DEFAULT_MODEL, vcpus: 1, ...cfg }, stats);
  const sched = new FreeSched(kvm.m);
  return {
    kvm,
    vcpu: new Actor(0, sched),
    migrator: new Actor(kvm.layout.migrator, sched),
    checker: new Actor(kvm.layout.checker, sched),
  };
}

/** A TLB-hit guest access (read, write) against the bare Atomics it performs. */
export function tlbBench(o: MicroOptions): MicroRow[] {
  const { kvm, vcpu } = vcpuWorld({ guestMem: 8 * 1024 * 1024, backing: 'anon' }, new LockStats());
  const m = kvm.m;
  const L = kvm.layout;
  const gfn = 5;
  const value = (1 << 7) | vcpu.id;
  // Fault the page in writable and fill the TLB.
  guestAccess(kvm, vcpu, gfn, true, value);
  guestAccess(kvm, vcpu, gfn, true, value);
  const seq = kvm.actorWord(vcpu.id, ACTOR.ACCESS_SEQ);
  const pslot = tlbPageSlot(kvm, vcpu.id, gfn);
  const tag = gfn + 1;
  if (Atomics.load(m, pslot) !== tag || !descWritable(Atomics.load(m, pslot + 1))) throw new Error('TLB bench: the page is not in the TLB, writable');
  const hitsBefore = kvm.counter(CNT.tlbHits);
  let sink = 0;
  const tasks: MicroTask[] = [
    {
      name: 'guestAccess read, TLB hit',
      ops: TLB_OPS,
      fn: () => {
        for (let i = 0; i < TLB_OPS; i++) sink += guestAccess(kvm, vcpu, gfn, false, 0);
      },
    },
    {
      name: 'bare Atomics of a read hit',
      ops: TLB_OPS,
      fn: () => {
        // enter (odd), tag, descriptor, the frame's word, leave (even)
        for (let i = 0; i < TLB_OPS; i++) {
          Atomics.add(m, seq, 1);
          if (Atomics.load(m, pslot) === tag) {
            const d = Atomics.load(m, pslot + 1);
            sink += Atomics.load(m, L.frameData + descOa(d));
          }
          Atomics.add(m, seq, 1);
        }
      },
    },
    {
      name: 'guestAccess write, TLB hit',
      ops: TLB_OPS,
      fn: () => {
        for (let i = 0; i < TLB_OPS; i++) guestAccess(kvm, vcpu, gfn, true, value);
      },
    },
    {
      name: 'bare Atomics of a write hit',
      ops: TLB_OPS,
      fn: () => {
        // enter, tag, descriptor, store to the frame, its refcount (use-after-free check), the shadow, leave
        for (let i = 0; i < TLB_OPS; i++) {
          Atomics.add(m, seq, 1);
          if (Atomics.load(m, pslot) === tag) {
            const f = descOa(Atomics.load(m, pslot + 1));
            Atomics.store(m, L.frameData + f, value);
            if (Atomics.load(m, L.frameRef + f) <= 0) sink++;
            Atomics.store(m, L.shadow + gfn, value);
          }
          Atomics.add(m, seq, 1);
        }
      },
    },
  ];
  const res = runRounds(tasks, o);
  if (kvm.counter(CNT.tlbHits) - hitsBefore < TLB_OPS || sink === -1) throw new Error('TLB bench: accesses did not hit the TLB');
  return rowsOf(res, (n) => (n.startsWith('guestAccess read') ? 'bare Atomics of a read hit' : n.startsWith('guestAccess write') ? 'bare Atomics of a write hit' : null));
}

// ----------------------------------------------------------------- fault

/** Pages per measured batch: one PTE table. */
const FAULT_BATCH = 512;
const FAULT_GUEST = 256 * 1024 * 1024;

export interface FaultRow {
  name: string;
  statistics: boolean;
  nsPerFault: number;
  faultsPerSec: number;
}

/**
 * The 4 KiB fault path, one core, uncontended, logging on, driven directly
 * (kvm_handle_guest_abort for a write), in three shapes:
 * - first touch: the stage-2 entry is empty (the batch was unmapped before,
 *   outside the measurement, under mmu_lock), so the fault allocates the
 *   PTE table for the first page and maps every page writable, marking it dirty;
 * - write-protect fault: the page is mapped read-only by the last harvest
 *   (KVM_GET_DIRTY_LOG, outside the measurement): the dirty-logging fault
 *   of a migration's precopy rounds;
 * - faulting guest write: a guestAccess() that misses the TLB, walks,
 *   faults (first touch), walks again and writes.
 */
export function faultBench(o: MicroOptions): FaultRow[] {
  const tasks: MicroTask[] = [];
  const checks: (() => void)[] = [];
  const rows: { name: string; statistics: boolean }[] = [];
  for (const statistics of [true, false]) {
    const { kvm, vcpu, migrator, checker } = vcpuWorld({ guestMem: FAULT_GUEST, backing: 'thp', lockStats: statistics }, statistics ? new LockStats() : null);
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    const L = kvm.layout;
    // Batches 0 .. batches-2 are unmapped and faulted again; the last one is the write-protect batch.
    const batches = Math.floor(L.ramPages / FAULT_BATCH);
    const snapshot = new Int32Array(L.bitmapWords);
    const suffix = statistics ? '' : ', statistics off';
    let next = 0;
    const unmapBatch = (base: number): void => {
      kvm.mmuLock.lock(checker, LS.other);
      unmapStage2Range(kvm, checker, base, FAULT_BATCH);
      kvm.mmuLock.unlock(checker);
    };

    const firstTouch = `4 KiB write fault, first touch${suffix}`;
    tasks.push({
      name: firstTouch,
      ops: FAULT_BATCH,
      fn: () => {
        const base = (next++ % (batches - 1)) * FAULT_BATCH;
        unmapBatch(base);
        const t0 = performance.now();
        for (let g = base; g < base + FAULT_BATCH; g++) kvmHandleGuestAbort(kvm, vcpu, g, true, false);
        return { overriddenDuration: performance.now() - t0 };
      },
    });
    rows.push({ name: firstTouch, statistics });

    // One batch of its own, pre-faulted, write-protected by each harvest.
    const wpBase = (batches - 1) * FAULT_BATCH;
    const wp = `4 KiB write-protect fault after a harvest${suffix}`;
    tasks.push({
      name: wp,
      ops: FAULT_BATCH,
      fn: () => {
        kvmGetDirtyLog(kvm, migrator, RAM_SLOT, snapshot);
        const t0 = performance.now();
        for (let g = wpBase; g < wpBase + FAULT_BATCH; g++) kvmHandleGuestAbort(kvm, vcpu, g, true, true);
        return { overriddenDuration: performance.now() - t0 };
      },
    });
    rows.push({ name: wp, statistics });

    const access = `faulting guest write (miss, walk, fault, walk, write)${suffix}`;
    let value = 0;
    tasks.push({
      name: access,
      ops: FAULT_BATCH,
      fn: () => {
        const base = (next++ % (batches - 1)) * FAULT_BATCH;
        unmapBatch(base);
        const t0 = performance.now();
        for (let g = base; g < base + FAULT_BATCH; g++) {
          value = value >= 0x1ffffff ? 1 : value + 1;
          guestAccess(kvm, vcpu, g, true, (value << 7) | vcpu.id);
        }
        return { overriddenDuration: performance.now() - t0 };
      },
    });
    rows.push({ name: access, statistics });

    checks.push(() => {
      // The faults did what they claim: writable 4 KiB entries, dirty pages, nothing else.
      const r = s2Lookup(kvm, wpBase + 3);
      if (r.level !== LEVEL_PTE || !descWritable(r.desc)) throw new Error('fault bench: the write fault did not map a writable 4 KiB page');
      if (kvm.counter(CNT.blockMaps) !== 0 || kvm.counter(CNT.efaults) !== 0 || kvm.counter(CNT.faultRetries) !== 0) {
        throw new Error('fault bench: unexpected block maps, errors or retries');
      }
    });
  }
  const res = runRounds(tasks, o);
  for (const c of checks) c();
  return rows.map((r) => {
    const ns = median(res.get(r.name)!);
    return { ...r, nsPerFault: ns, faultsPerSec: 1e9 / ns };
  });
}
