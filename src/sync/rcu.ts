/**
 * RCU for stage-2 table pages (arm64, Linux 6.2 on): a shared walk runs
 * inside rcu_read_lock() (kvm_pgtable_walk_begin()), and a table a walker
 * unlinked is freed by an RCU callback (call_rcu() in
 * stage2_free_unlinked_table(), arch/arm64/kvm/mmu.c) only after every
 * read section that could still be inside it has ended.
 *
 * The shape of the SRCU model (src/sync/srcu.ts): a word per actor, here 0
 * outside a read section and (section number << 1) | 1 inside one (a new
 * number each section, so that a grace period never mistakes a later
 * section for the one it waits for). Callbacks queue on a ring
 * (CTRL.RCU_MID..RCU_TAIL). A grace period starts by moving the queued
 * callbacks to [RCU_HEAD, RCU_MID) and taking a snapshot of the readers'
 * words; it ends when every reader that was inside a section then has left
 * it. Nobody waits for it: whoever passes rcuProcessCallbacks() (every
 * rcu_read_unlock() while callbacks are queued, the write side's walks)
 * advances it, as the RCU softirq would, and runs the callbacks of a grace
 * period that ended. A section that begins after the snapshot cannot reach
 * a table unlinked before the callback was queued.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from './actor.js';
import { CTRL } from '../shm/layout.js';
import { SITE } from './sites.js';
import { LS } from './locksites.js';
import { CNT, EV } from '../check/names.js';
import { TABLE_RCU, kvmPgtableStage2FreeUnlinked } from '../kvm/pgtable.js';

/** rcu_read_lock() */
export function rcuReadLock(kvm: Kvm, actor: Actor): void {
  actor.sched.point(SITE['rcu.read']);
  actor.rcuSection = (actor.rcuSection + 1) & 0x3fffffff;
  Atomics.store(kvm.m, kvm.layout.rcuReaders + actor.id, (actor.rcuSection << 1) | 1);
}

/** rcu_read_unlock(); then, if callbacks wait, move the grace-period machinery on. */
export function rcuReadUnlock(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  Atomics.store(m, kvm.layout.rcuReaders + actor.id, 0);
  if (Atomics.load(m, CTRL.RCU_TAIL) !== Atomics.load(m, CTRL.RCU_HEAD)) rcuProcessCallbacks(kvm, actor);
}

/** call_rcu(&page->rcu_head, stage2_free_unlinked_table_rcu_cb): the unlinked table waits for a grace period. */
export function callRcuFreeTable(kvm: Kvm, actor: Actor, table: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  Atomics.store(m, L.tableState + table, TABLE_RCU);
  kvm.tableLock.lock(actor, LS.other);
  const tail = m[CTRL.RCU_TAIL];
  m[L.rcuList + (tail % L.tables)] = table;
  Atomics.store(m, CTRL.RCU_TAIL, tail + 1);
  kvm.tableLock.unlock(actor);
  kvm.trace(actor, EV['rcu.free'], table, 0);
}

/**
 * The RCU core's part: end the grace period in progress if every reader it
 * waits for has left its section (then free its tables), and start one for
 * queued callbacks. Never blocks.
 */
export function rcuProcessCallbacks(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  const L = kvm.layout;
  actor.sched.point(SITE['rcu.callback']);
  let done: number[] | null = null;
  kvm.tableLock.lock(actor, LS.other);
  let head = m[CTRL.RCU_HEAD];
  const mid = m[CTRL.RCU_MID];
  if (head !== mid) {
    let ended = true;
    for (let a = 0; a < L.nActors && ended; a++) {
      const snap = m[L.rcuSnap + a];
      if ((snap & 1) !== 0 && Atomics.load(m, L.rcuReaders + a) === snap) ended = false;
    }
    if (ended) {
      done = [];
      for (; head !== mid; head++) done.push(m[L.rcuList + (head % L.tables)]);
      Atomics.store(m, CTRL.RCU_HEAD, head);
    }
  }
  if (head === m[CTRL.RCU_MID] && m[CTRL.RCU_MID] !== m[CTRL.RCU_TAIL]) {
    // Start a grace period for everything queued.
    for (let a = 0; a < L.nActors; a++) m[L.rcuSnap + a] = Atomics.load(m, L.rcuReaders + a);
    Atomics.add(m, CTRL.RCU_GP, 1);
    Atomics.store(m, CTRL.RCU_MID, m[CTRL.RCU_TAIL]);
  }
  kvm.tableLock.unlock(actor);
  if (done === null) return;
  for (const t of done) {
    kvmPgtableStage2FreeUnlinked(kvm, actor, t);
    kvm.count(actor, CNT.rcuTablesFreed);
  }
}

/** Table pages waiting for a grace period now (checks: accounted, not leaked). */
export function rcuPendingTables(kvm: Kvm): number[] {
  const m = kvm.m;
  const out: number[] = [];
  for (let i = m[CTRL.RCU_HEAD]; i !== m[CTRL.RCU_TAIL]; i++) out.push(m[kvm.layout.rcuList + (i % kvm.layout.tables)]);
  return out;
}
