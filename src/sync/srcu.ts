/**
 * kvm->srcu: the read side held by faults (and notifiers) while they use a
 * memslot, and synchronize_srcu() for memslot updates.
 *
 * Each actor has a read-side sequence word: odd while inside a read section.
 * A grace period waits, for every actor inside a section when it starts, until
 * that section ends. Sections that begin later see the newly published slot
 * (the slot is published before the grace period starts, and a reader reads
 * the slot after marking itself), so they need no waiting.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from './actor.js';
import { SITE } from './sites.js';
import { graceBegin, graceEnd } from '../check/grace.js';

/** srcu_read_lock(&kvm->srcu); sections nest (a CoW inside a fault notifies). */
export function srcuReadLock(kvm: Kvm, actor: Actor): void {
  if (actor.srcuDepth++ === 0) Atomics.add(kvm.m, kvm.layout.srcuReaders + actor.id, 1);
  actor.sched.point(SITE['srcu.read']);
}

export function srcuReadUnlock(kvm: Kvm, actor: Actor): void {
  if (--actor.srcuDepth === 0) Atomics.add(kvm.m, kvm.layout.srcuReaders + actor.id, 1);
}

/** synchronize_srcu(&kvm->srcu) */
export function synchronizeSrcu(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  actor.sched.point(SITE['srcu.sync']);
  graceBegin(kvm);
  for (let a = 0; a < kvm.layout.nActors; a++) {
    if (a === actor.id) continue;
    // The srcu-skips-reader bug never waits for the last vCPU's section.
    if (kvm.proto.srcuSkipsReader && a === kvm.layout.vcpus - 1) continue;
    const idx = kvm.layout.srcuReaders + a;
    const seq = Atomics.load(m, idx);
    if ((seq & 1) === 0) continue;
    // waitWhile may return spuriously (the Sched contract): re-check until the section ended.
    while (Atomics.load(m, idx) === seq) actor.sched.waitWhile(idx, seq, SITE['srcu.sync']);
  }
  graceEnd(kvm, actor);
}
