/**
 * The migration oracle: what QEMU's precopy does with the dirty log, reduced
 * to its essence. Pages are copied from the source (read through the host
 * mapping) into a destination image in shared memory; after stop-and-copy
 * every destination page must equal its source page (`migration-equal`).
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from './names.js';
import { hostReadPage } from '../mm/hostfault.js';
import { SLOTW, slotWord } from '../kvm/memslot.js';
import { SHADOW_DISCARDED } from '../mm/hostops.js';
import { HPTE_FRAME_MASK, HPTE_PRESENT } from '../mm/hostpt.js';
import { fmtValue, type Violation, MAX_LISTED } from './invariants.js';

export function copyPageToDest(kvm: Kvm, actor: Actor, gfn: number): void {
  actor.sched.point(SITE['migrate.copy']);
  Atomics.store(kvm.m, kvm.layout.dest + gfn, hostReadPage(kvm, actor, gfn));
  kvm.count(actor, CNT.pagesCopied);
}

/** The first full pass of precopy: every page of the slot. */
export function copyAllPages(kvm: Kvm, actor: Actor, slot: number): number {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  for (let i = 0; i < n; i++) copyPageToDest(kvm, actor, base + i);
  kvm.trace(actor, EV['copy.round'], slot, n);
  return n;
}

/** One precopy round: copy the pages a GET_DIRTY_LOG snapshot says are dirty. */
export function copyDirtyPages(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array): number {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  let copied = 0;
  for (let w = 0; w * 32 < n; w++) {
    let mask = snapshot[w];
    while (mask !== 0) {
      const bit = 31 - Math.clz32(mask & -mask);
      mask &= mask - 1;
      copyPageToDest(kvm, actor, base + w * 32 + bit);
      copied++;
    }
  }
  kvm.trace(actor, EV['copy.round'], slot, copied);
  return copied;
}

/**
 * migration-equal: after stop-and-copy (vCPUs paused), every destination page
 * equals the source. Pages the guest gave away (DONTNEED) are not compared.
 */
export function compareDestination(kvm: Kvm, slot: number): { violations: Violation[]; verified: number; mismatches: number } {
  const m = kvm.m;
  const L = kvm.layout;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const violations: Violation[] = [];
  let verified = 0;
  let mismatches = 0;
  for (let gfn = base; gfn < base + n; gfn++) {
    if (Atomics.load(m, L.shadow + gfn) === SHADOW_DISCARDED) continue;
    const h = Atomics.load(m, L.hpte + gfn);
    const src = (h & HPTE_PRESENT) !== 0 ? Atomics.load(m, L.frameData + (h & HPTE_FRAME_MASK)) : 0;
    const dst = Atomics.load(m, L.dest + gfn);
    verified++;
    if (src !== dst) {
      mismatches++;
      if (violations.length < MAX_LISTED) {
        violations.push({
          invariant: 'migration-equal',
          message: `gfn ${gfn}: destination holds ${fmtValue(dst)} but the source holds ${fmtValue(src)}: a write was never reported dirty`,
          actor: 'migrator',
          gfn,
        });
      }
    }
  }
  if (mismatches > MAX_LISTED) {
    violations.push({ invariant: 'migration-equal', message: `... and ${mismatches - MAX_LISTED} more pages differ`, actor: 'migrator' });
  }
  return { violations, verified, mismatches };
}
