/**
 * The migration thread, as QEMU drives KVM: turn logging on, copy every page,
 * harvest and copy dirty pages round after round, then pause the vCPUs,
 * harvest once more, copy, and compare (stop-and-copy); or cancel part-way
 * by turning logging off. The `selftest` mode is the kernel's dirty_log_test
 * instead: per-round checks of every page against the log.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { XorShift32 } from '../sync/sched.js';
import { CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV, INV } from '../check/names.js';
import {
  SLOTW,
  kvmClearDirtyLog,
  kvmCreateMemslot,
  kvmDeleteMemslot,
  kvmDisableDirtyLogging,
  kvmEnableDirtyLogging,
  kvmGetDirtyLog,
  kvmGetDirtyLogManual,
  kvmManualDirtyLogProtect,
  slotWord,
} from '../kvm/memslot.js';
import { copyAllPages, copyDirtyPages, copyDirtyPagesRange, compareDestination } from '../check/migration.js';
import { checkLoggingOnReturned } from '../check/invariants.js';
import { hostReadPage } from '../mm/hostfault.js';
import { RAM_SLOT } from '../vm.js';
import { bumpControl, runEnded, safePoint, tick } from './control.js';
import { type ActorParams, actorSeed } from './params.js';
import { vmTeardown } from './teardown.js';
import { PerfLog, perfDone, perfIteration, perfNow, perfStartWord } from './perflog.js';
import { ITS_TABLE_PAGES, dirtyRingEnabled, dirtyRingReap, ringBase, vgicItsSaveTables } from '../kvm/dirtyring.js';
import { RING } from '../shm/layout.js';

/** migration-equal kinds in the violation ring */
export const MIG_MISMATCH = 1;
export const MIG_MORE = 2;
/** selftest-dirty-log kinds */
export const ST_TRACKED_NOT_DIRTY = 1;
export const ST_DIRTY_WRONG_ITERATION = 2;
export const ST_FUTURE_VALUE = 3;

/** Pause every vCPU at a safe point and wait until they all are. */
export function pauseVcpus(kvm: Kvm, actor: Actor): boolean {
  const m = kvm.m;
  Atomics.store(m, CTRL.PAUSE_VCPUS, 1);
  bumpControl(m);
  kvm.trace(actor, EV.pause, 1);
  for (;;) {
    const paused = Atomics.load(m, CTRL.VCPUS_PAUSED);
    // A vCPU that returned at the end of the run counts as paused; the end
    // is set before any vCPU returns, so look at it after the count: a
    // count that includes a returned vCPU is never taken for a real pause.
    if (runEnded(kvm)) return false;
    if (paused >= kvm.layout.vcpus) return true;
    actor.sched.waitWhile(CTRL.VCPUS_PAUSED, paused, SITE.park);
  }
}

export function resumeVcpus(kvm: Kvm, actor: Actor): void {
  Atomics.store(kvm.m, CTRL.PAUSE_VCPUS, 0);
  bumpControl(kvm.m);
  kvm.trace(actor, EV.pause, 0);
}

/** QEMU's clear chunks: 64 pages (256 KiB, clear-bitmap-shift 6) to 2^18 pages (1 GiB, its default 18). */
export const CLEAR_CHUNK_MIN_PAGES = 64;
export const CLEAR_CHUNK_SHIFTS = 13;

/**
 * One harvest as QEMU does it, with the pages it reports copied:
 * - manual protect off: KVM_GET_DIRTY_LOG (clears and write-protects), then
 *   copy the dirty pages;
 * - manual protect on: KVM_GET_DIRTY_LOG (a copy of the bitmap), then per
 *   chunk of `chunkPages` (a multiple of 64 pages, as KVM requires) a
 *   KVM_CLEAR_DIRTY_LOG of the bits it reported in that chunk, each taking
 *   and dropping mmu_lock, and only then the chunk's pages copied
 *   (migration_clear_memory_region_dirty_bitmap before the pages are sent:
 *   a write after the copy must fault and be logged again).
 * `copy` false: the log only (the selftests look at the snapshot).
 */
export function harvestDirtyLog(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array, chunkPages: number, copy = true): number {
  if (!kvmManualDirtyLogProtect(kvm)) {
    const n = kvmGetDirtyLog(kvm, actor, slot, snapshot);
    if (copy) copyDirtyPages(kvm, actor, slot, snapshot);
    return n;
  }
  const n = kvmGetDirtyLogManual(kvm, actor, slot, snapshot);
  const npages = kvm.m[slotWord(kvm, slot, SLOTW.NPAGES)];
  for (let first = 0; first < npages; first += chunkPages) {
    const num = Math.min(chunkPages, npages - first);
    let any = 0;
    for (let i = first >>> 5; i < Math.ceil((first + num) / 32); i++) any |= snapshot[i];
    if (any === 0) continue; // QEMU clears only chunks with dirty bits
    kvmClearDirtyLog(kvm, actor, slot, first, num, snapshot);
    if (copy) copyDirtyPagesRange(kvm, actor, slot, snapshot, first, first + num);
  }
  return n;
}

/** The clear chunk of a round (manual protect): 64 << k pages, k drawn; the whole slot otherwise. */
function clearChunk(kvm: Kvm, rng: XorShift32 | null): number {
  if (!kvmManualDirtyLogProtect(kvm) || rng === null) return 1 << 30;
  return CLEAR_CHUNK_MIN_PAGES << rng.below(CLEAR_CHUNK_SHIFTS);
}

/**
 * One precopy migration. Returns false if the run ended part-way. The
 * migrator parks (safe points) between rounds, with logging still on.
 * With manual protect each round's clears go chunk by chunk (the chunk
 * drawn from `rng`); stop-and-copy gets and clears everything.
 */
function migrateOnce(kvm: Kvm, actor: Actor, p: ActorParams, snapshot: Int32Array, complete: boolean, rng: XorShift32): boolean {
  if (dirtyRingEnabled(kvm)) return migrateOnceRing(kvm, actor, p, snapshot, complete);
  kvmEnableDirtyLogging(kvm, actor, RAM_SLOT);
  checkLoggingOnReturned(kvm, actor, RAM_SLOT);
  copyAllPages(kvm, actor, RAM_SLOT);
  for (let r = 0; r < p.precopyRounds; r++) {
    // Between rounds the guest runs on (a yield in sim mode, free in threads mode).
    actor.sched.idle(0);
    if (!safePoint(kvm, actor, false)) return false;
    harvestDirtyLog(kvm, actor, RAM_SLOT, snapshot, clearChunk(kvm, rng));
    kvm.count(actor, CNT.rounds);
  }
  actor.sched.idle(0);
  if (!safePoint(kvm, actor, false)) return false;
  if (!complete) {
    kvmDisableDirtyLogging(kvm, actor, RAM_SLOT);
    kvm.count(actor, CNT.cancels);
    return true;
  }
  // stop-and-copy
  if (!pauseVcpus(kvm, actor)) return false;
  kvm.trace(actor, EV['stop-and-copy'], 0);
  harvestDirtyLog(kvm, actor, RAM_SLOT, snapshot, clearChunk(kvm, null));
  verifyDestination(kvm, actor);
  resumeVcpus(kvm, actor);
  // The guest runs on here (in life the destination does): logging stops.
  kvmDisableDirtyLogging(kvm, actor, RAM_SLOT);
  return true;
}

/** Stop-and-copy's end: compare the destination with the source, count, and report every page that differs (migration-equal). */
function verifyDestination(kvm: Kvm, actor: Actor): void {
  const res = compareDestination(kvm, actor, RAM_SLOT);
  kvm.count(actor, CNT.verifiedPages, res.verified);
  kvm.count(actor, CNT.mismatches, res.mismatches);
  kvm.count(actor, CNT.migrations);
  for (const bad of res.bad) kvm.violation(INV['migration-equal'], actor.id, MIG_MISMATCH, bad[0], bad[1], bad[2]);
  if (res.mismatches > res.bad.length) kvm.violation(INV['migration-equal'], actor.id, MIG_MORE, res.mismatches - res.bad.length);
}

/**
 * One precopy migration with dirty rings (--dirty-log ring), as QEMU with
 * `dirty-ring-size` does it: logging on, copy every page, then per round
 * reap every vCPU's ring (kvm_dirty_ring_reap: collect, then
 * KVM_RESET_DIRTY_RINGS) and copy what was collected, after the reset (a
 * page collected and written again before the reset carries no new entry).
 * Between rounds the host saves a vgic/ITS table page into guest RAM
 * without a running vCPU (backup bitmap). Stop-and-copy: the vCPUs stop,
 * the VM-stop handler saves every ITS table page (QEMU's
 * vm_change_state_handler), the rings are reaped, then the backup bitmap
 * is collected with KVM_GET_DIRTY_LOG (KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP:
 * only then, with the vCPUs stopped and the rings empty), the pages are
 * copied and compared. After logging goes off the rings are reaped once
 * more and dropped, so that no vCPU waits on a ring nobody collects.
 */
export function migrateOnceRing(kvm: Kvm, actor: Actor, p: ActorParams, snapshot: Int32Array, complete: boolean): boolean {
  const backup = new Int32Array(snapshot.length);
  kvmEnableDirtyLogging(kvm, actor, RAM_SLOT);
  checkLoggingOnReturned(kvm, actor, RAM_SLOT);
  copyAllPages(kvm, actor, RAM_SLOT);
  for (let r = 0; r < p.precopyRounds; r++) {
    actor.sched.idle(0);
    if (!safePoint(kvm, actor, false)) return false;
    dirtyRingReap(kvm, actor, RAM_SLOT, snapshot);
    copyDirtyPages(kvm, actor, RAM_SLOT, snapshot);
    kvm.count(actor, CNT.rounds);
    vgicItsSaveTables(kvm, actor, r, 1);
  }
  actor.sched.idle(0);
  if (!safePoint(kvm, actor, false)) return false;
  if (!complete) {
    kvmDisableDirtyLogging(kvm, actor, RAM_SLOT);
    dirtyRingReap(kvm, actor, RAM_SLOT, snapshot);
    kvm.count(actor, CNT.cancels);
    return true;
  }
  if (!pauseVcpus(kvm, actor)) return false;
  kvm.trace(actor, EV['stop-and-copy'], 0);
  vgicItsSaveTables(kvm, actor, 0, ITS_TABLE_PAGES);
  dirtyRingReap(kvm, actor, RAM_SLOT, snapshot);
  if (!kvm.proto.backupBitmapNotCollected) {
    kvmGetDirtyLog(kvm, actor, RAM_SLOT, backup);
    for (let i = 0; i < snapshot.length; i++) snapshot[i] |= backup[i];
  }
  copyDirtyPages(kvm, actor, RAM_SLOT, snapshot);
  verifyDestination(kvm, actor);
  resumeVcpus(kvm, actor);
  kvmDisableDirtyLogging(kvm, actor, RAM_SLOT);
  dirtyRingReap(kvm, actor, RAM_SLOT, snapshot);
  return true;
}

/**
 * The selftest's log collection: KVM_GET_DIRTY_LOG, or with dirty rings
 * (dirty_log_test -M dirty-ring: dirty_ring_collect_dirty_pages()) every
 * vCPU's ring collected, then KVM_RESET_DIRTY_RINGS.
 */
function selftestCollect(kvm: Kvm, actor: Actor, snapshot: Int32Array): void {
  if (dirtyRingEnabled(kvm)) dirtyRingReap(kvm, actor, RAM_SLOT, snapshot);
  else harvestDirtyLog(kvm, actor, RAM_SLOT, snapshot, clearChunk(kvm, null), false);
}

/**
 * dirty_log_test's dirty_ring_last_page: the page of the access a vCPU
 * re-executes after a KVM_EXIT_DIRTY_RING_FULL, or -1. Its entry may have
 * been collected before its write landed, so a dirty page with an old
 * value is no error there (the selftest skips that page's check).
 */
function ringLastPage(kvm: Kvm, gfn: number): boolean {
  if (!dirtyRingEnabled(kvm)) return false;
  for (let v = 0; v < kvm.layout.vcpus; v++) if (Atomics.load(kvm.m, ringBase(kvm, v) + RING.LAST_PAGE) === gfn + 1) return true;
  return false;
}

/**
 * dirty_log_test.c, per round: collect the log while the vCPUs run, stop
 * them at a sync point, check every page, bump the iteration, resume.
 */
function selftestLoop(kvm: Kvm, actor: Actor, p: ActorParams, snapshot: Int32Array): void {
  const m = kvm.m;
  const L = kvm.layout;
  const track = new Uint8Array(L.ramPages);
  // As dirty_log_test does, logging is on before the guest writes iteration
  // numbers: until then the vCPUs write iteration 0, which no rule checks.
  // The iteration changes only while the vCPUs are stopped (sync point).
  kvmEnableDirtyLogging(kvm, actor, RAM_SLOT);
  checkLoggingOnReturned(kvm, actor, RAM_SLOT);
  if (!pauseVcpus(kvm, actor)) return;
  selftestCollect(kvm, actor, snapshot);
  Atomics.store(m, CTRL.ITERATION, 1);
  resumeVcpus(kvm, actor);
  let reported = 0;
  while (safePoint(kvm, actor, false)) {
    actor.sched.idle(p.migrationGapMs);
    selftestCollect(kvm, actor, snapshot);
    if (!pauseVcpus(kvm, actor)) return;
    const iter = Atomics.load(m, CTRL.ITERATION);
    for (let gfn = 0; gfn < L.ramPages; gfn++) {
      const v = hostReadPage(kvm, actor, gfn);
      const valIter = v === 0 ? 0 : v >>> 7;
      const dirty = (snapshot[gfn >>> 5] & (1 << (gfn & 31))) !== 0;
      let bad = 0;
      if (track[gfn] && !dirty) bad = ST_TRACKED_NOT_DIRTY;
      if (dirty) {
        if (valIter !== iter && valIter !== iter - 1 && !ringLastPage(kvm, gfn)) bad = ST_DIRTY_WRONG_ITERATION;
        track[gfn] = 0;
      } else if (valIter > iter) {
        bad = ST_FUTURE_VALUE;
      } else if (valIter === iter) {
        track[gfn] = 1; // written after this log was collected: must be dirty next round
      }
      if (bad !== 0) {
        track[gfn] = 0;
        if (reported++ < 8) kvm.violation(INV['selftest-dirty-log'], actor.id, bad, gfn, v, iter);
      }
    }
    kvm.count(actor, CNT.selftestRounds);
    kvm.count(actor, CNT.selftestPagesChecked, L.ramPages);
    Atomics.store(m, CTRL.ITERATION, iter + 1);
    resumeVcpus(kvm, actor);
    tick(kvm, actor);
  }
}

/**
 * The `teardown` scenario's VMM (src/actors/teardown.ts): per VM life, a
 * migration completed or cancelled, the RAM memslot deleted and re-created
 * while the vCPUs run, then the end of the VM racing the MMU notifier's
 * release, and a new VM.
 */
function teardownLoop(kvm: Kvm, actor: Actor, p: ActorParams, snapshot: Int32Array, rng: XorShift32): void {
  while (safePoint(kvm, actor, false)) {
    if (!migrateOnce(kvm, actor, p, snapshot, rng.below(2) === 0, rng)) return;
    tick(kvm, actor);
    actor.sched.idle(p.migrationGapMs);
    if (!safePoint(kvm, actor, false)) return;
    kvmDeleteMemslot(kvm, actor, RAM_SLOT);
    kvmCreateMemslot(kvm, actor, RAM_SLOT);
    tick(kvm, actor);
    actor.sched.idle(p.migrationGapMs);
    if (!safePoint(kvm, actor, false)) return;
    if (!vmTeardown(kvm, actor)) return;
    tick(kvm, actor);
    actor.sched.idle(p.migrationGapMs);
  }
}

/**
 * dirty_log_perf_test.c's run_test(), pass after pass until the run ends:
 * iteration 0 populates guest RAM (logging off), logging is turned on
 * (kvm_vm_get_dirty_log's memslot flag), then `precopyRounds` iterations,
 * each timed from its start until the last vCPU finished its slice (the
 * selftest's "dirty memory time") and followed by KVM_GET_DIRTY_LOG, which
 * write-protects what it collects (the selftest without
 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, its -g), so that every iteration's
 * writes fault again; then logging is turned off, counted as a cancel
 * (logging on, rounds, logging off). Each pass starts from blocks again on
 * a THP guest: with logging off the populate faults map blocks. The times
 * go to the perf log (src/actors/perflog.ts), the first pass's apart (a
 * warm-up). When the vCPUs' --ops quota is spent, the pass ends and the
 * migrator idles.
 */
function perfLoop(kvm: Kvm, actor: Actor, p: ActorParams, snapshot: Int32Array): void {
  const m = kvm.m;
  const V = kvm.layout.vcpus;
  const log = p.perfLog ? new PerfLog(p.perfLog) : null;
  log?.setVcpus(V);
  let iter = perfIteration(Atomics.load(m, CTRL.ITERATION));
  const ENDED = -1;
  const SPENT = -2;
  /** Run one iteration: its dirty time (ms), ENDED if the run ended, SPENT if the vCPUs' quota is. */
  const iterate = (): number => {
    if (Atomics.load(m, CTRL.VCPUS_DONE) > 0) return SPENT;
    iter++;
    const t0 = perfNow();
    Atomics.store(m, CTRL.ITERATION, perfStartWord(iter));
    bumpControl(m);
    for (;;) {
      const gen = Atomics.load(m, CTRL.CONTROL_GEN);
      if (perfDone(Atomics.load(m, CTRL.ITERATION)) >= V) break;
      if (!safePoint(kvm, actor, false)) return ENDED;
      actor.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['actor.loop']);
    }
    return (log ? log.lastFinish(V) : perfNow()) - t0;
  };
  let spent = false;
  for (let pass = 0; !spent && safePoint(kvm, actor, false); pass++) {
    log?.beginPass(pass);
    const populate = iterate();
    if (populate === ENDED) return;
    if (populate === SPENT) break;
    log?.populate(populate);
    tick(kvm, actor);
    if (!safePoint(kvm, actor, false)) return;
    let t = perfNow();
    kvmEnableDirtyLogging(kvm, actor, RAM_SLOT);
    log?.enabled(perfNow() - t);
    checkLoggingOnReturned(kvm, actor, RAM_SLOT);
    for (let r = 0; r < p.precopyRounds; r++) {
      if (!safePoint(kvm, actor, false)) return;
      const faults = kvm.counter(CNT.faults);
      const accesses = kvm.counter(CNT.accesses);
      const ms = iterate();
      if (ms === ENDED) return;
      if (ms === SPENT) {
        spent = true;
        break;
      }
      // Every vCPU waits for the next iteration: the counters stand still.
      log?.iteration(r === 0, ms, kvm.counter(CNT.faults) - faults, kvm.counter(CNT.accesses) - accesses);
      t = perfNow();
      harvestDirtyLog(kvm, actor, RAM_SLOT, snapshot, clearChunk(kvm, null), false);
      log?.harvested(perfNow() - t);
      kvm.count(actor, CNT.rounds);
      tick(kvm, actor);
    }
    if (!safePoint(kvm, actor, false)) return;
    t = perfNow();
    kvmDisableDirtyLogging(kvm, actor, RAM_SLOT);
    log?.passDone(perfNow() - t);
    kvm.count(actor, CNT.cancels);
    tick(kvm, actor);
  }
  // The quota is spent: nothing more to time. Pace until the run ends
  // rather than block: with every vCPU done and the host MM idle, a block
  // here would leave nobody to run, which sim mode reports as a deadlock
  // before its next end-of-run check (it ends the run at a scheduling step).
  while (safePoint(kvm, actor, false)) actor.sched.idle(1);
}

export function runMigrator(kvm: Kvm, actor: Actor, p: ActorParams): void {
  const m = kvm.m;
  const rng = new XorShift32(actorSeed(p.seed, actor.id));
  const snapshot = new Int32Array(kvm.layout.bitmapWords);
  if (p.migrator === 'selftest') {
    selftestLoop(kvm, actor, p, snapshot);
    return;
  }
  if (p.migrator === 'teardown') {
    teardownLoop(kvm, actor, p, snapshot, rng);
    return;
  }
  if (p.migrator === 'perf') {
    perfLoop(kvm, actor, p, snapshot);
    return;
  }
  while (safePoint(kvm, actor, false)) {
    if (p.migrator === 'idle') {
      const gen = Atomics.load(m, CTRL.CONTROL_GEN);
      actor.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['actor.loop']);
      continue;
    }
    const complete = p.migrator === 'migrate' || (p.migrator === 'mixed' && rng.below(2) === 0);
    if (!migrateOnce(kvm, actor, p, snapshot, complete, rng)) return;
    tick(kvm, actor);
    actor.sched.idle(p.migrationGapMs);
  }
}
