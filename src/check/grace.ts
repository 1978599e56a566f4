/**
 * grace-period, checked live where synchronize_srcu() returns, as rcutorture
 * checks RCU: every read section that was open when the grace period began
 * has ended by the time it returns. A reader that outlives the grace period
 * may still use the memslot the update replaced (a fault that read the slot
 * before logging was on, mapping after the write-protect).
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { INV } from './names.js';

/** The read-side words of every actor, as synchronize_srcu() begins (reused: grace periods do not nest). */
let open = new Int32Array(0);

/** At the start of a grace period: remember which read sections are open. */
export function graceBegin(kvm: Kvm): void {
  const L = kvm.layout;
  if (open.length < L.nActors) open = new Int32Array(L.nActors);
  for (let a = 0; a < L.nActors; a++) open[a] = Atomics.load(kvm.m, L.srcuReaders + a);
}

/**
 * As the grace period returns: a section open at its start (odd word) and
 * still the same section (word unchanged) is a violation. Returns how many.
 */
export function graceEnd(kvm: Kvm, actor: Actor): number {
  const L = kvm.layout;
  let found = 0;
  for (let a = 0; a < L.nActors; a++) {
    if (a === actor.id || (open[a] & 1) === 0) continue;
    if (Atomics.load(kvm.m, L.srcuReaders + a) !== open[a]) continue;
    found++;
    kvm.violation(INV['grace-period'], actor.id, 1, a, open[a]);
  }
  return found;
}
