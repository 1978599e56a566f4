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
import { HPTE_FRAME_MASK, HPTE_PRESENT, hpteLock, hpteUnlock } from '../mm/hostpt.js';
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

/** The pages of [first, end) (slot-relative) a snapshot says are dirty, copied (a chunk of a round, manual protect). */
export function copyDirtyPagesRange(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array, first: number, end: number): number {
  const base = kvm.m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  let copied = 0;
  for (let i = first; i < end; i++) {
    if ((snapshot[i >>> 5] >>> (i & 31)) & 1) {
      copyPageToDest(kvm, actor, base + i);
      copied++;
    }
  }
  kvm.trace(actor, EV['copy.round'], slot, copied);
  return copied;
}

/**
 * migration-equal: after stop-and-copy (vCPUs paused), every destination page
 * equals the source. Pages the guest gave away (DONTNEED) are not compared;
 * each page is read under its host PTE lock, so a concurrent zap is seen
 * either wholly before or wholly after. `bad` lists up to MAX_LISTED
 * mismatches as [gfn, destination, source].
 */
export function compareDestination(kvm: Kvm, actor: Actor, slot: number): { verified: number; mismatches: number; bad: number[][] } {
  const m = kvm.m;
  const L = kvm.layout;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const bad: number[][] = [];
  let verified = 0;
  let mismatches = 0;
  for (let gfn = base; gfn < base + n; gfn++) {
    const h = hpteLock(kvm, actor, gfn);
    const discarded = Atomics.load(m, L.shadow + gfn) === SHADOW_DISCARDED;
    const src = (h & HPTE_PRESENT) !== 0 ? Atomics.load(m, L.frameData + (h & HPTE_FRAME_MASK)) : 0;
    hpteUnlock(kvm, gfn, h);
    if (discarded) continue;
    const dst = Atomics.load(m, L.dest + gfn);
    verified++;
    if (src !== dst) {
      mismatches++;
      if (bad.length < MAX_LISTED) bad.push([gfn, dst, src]);
    }
  }
  return { verified, mismatches, bad };
}

/** Render compareDestination() mismatches as violations (single-threaded callers). */
export function mismatchViolations(bad: number[][], mismatches: number): Violation[] {
  const out: Violation[] = bad.map(([gfn, dst, src]) => ({
    invariant: 'migration-equal' as const,
    message: migrationMismatchMessage(gfn, dst, src),
    actor: 'migrator',
    gfn,
  }));
  if (mismatches > bad.length) out.push({ invariant: 'migration-equal', message: `... and ${mismatches - bad.length} more pages differ`, actor: 'migrator' });
  return out;
}

export function migrationMismatchMessage(gfn: number, dst: number, src: number): string {
  return `gfn ${gfn}: after stop-and-copy the destination holds ${fmtValue(dst)} but the source holds ${fmtValue(src)}: a write was never reported dirty`;
}
