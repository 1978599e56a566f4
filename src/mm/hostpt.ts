/**
 * The host page table: one word per hva page (hva page index == gfn in this
 * model), with a per-entry lock bit standing for the split page-table lock
 * (ptl), and a migration state: a page under migration has a migration
 * entry, and lookups wait for it to go away (migration_entry_wait).
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';

export const HPTE_FRAME_MASK = (1 << 24) - 1;
export const HPTE_PRESENT = 1 << 24;
export const HPTE_WRITE = 1 << 25;
/** A migration entry: the page is being migrated or collapsed. */
export const HPTE_MIGRATING = 1 << 26;
/** The ptl, held. */
export const HPTE_LOCKED = 1 << 27;
/** Mapped by a host PMD (THP or hugetlb). */
export const HPTE_HUGE = 1 << 28;

/** Backing of each 2 MiB region (the VMA kind). */
export const BACKING_ANON = 0;
export const BACKING_THP = 1;
export const BACKING_HUGETLB = 2;
export const BACKING_DEVICE = 3;
export const BACKING_NAMES = ['anon', 'thp', 'hugetlb', 'device'];

export function hpteIdx(kvm: Kvm, gfn: number): number {
  return kvm.layout.hpte + gfn;
}

/** pte_offset_map_lock(): take the entry's lock; returns its value (without the lock bit). */
export function hpteLock(kvm: Kvm, actor: Actor, gfn: number): number {
  const m = kvm.m;
  const idx = kvm.layout.hpte + gfn;
  actor.sched.point(SITE['hostpt.lock']);
  for (;;) {
    const v = Atomics.load(m, idx);
    if ((v & HPTE_LOCKED) !== 0) {
      actor.sched.waitWhile(idx, v, SITE['hostpt.lock']);
      continue;
    }
    if (Atomics.compareExchange(m, idx, v, v | HPTE_LOCKED) === v) return v;
  }
}

/** Change the entry while holding its lock (set_pte_at under ptl). */
export function hpteSetLocked(kvm: Kvm, gfn: number, v: number): void {
  Atomics.store(kvm.m, kvm.layout.hpte + gfn, v | HPTE_LOCKED);
}

/** pte_unmap_unlock(): store the final value and drop the lock. */
export function hpteUnlock(kvm: Kvm, gfn: number, v: number): void {
  Atomics.store(kvm.m, kvm.layout.hpte + gfn, v & ~HPTE_LOCKED);
}

export function regionBacking(kvm: Kvm, gfn: number): number {
  return kvm.m[kvm.layout.regionBacking + (gfn >>> 9)];
}
