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
/**
 * Mapped by a host PMD (THP or hugetlb): all 512 entries of the region carry
 * it, each with its own subpage. Without it an entry is a PTE, which since
 * Linux 4.5 may map a subpage of a THP that is still compound (FRAME_THP).
 */
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

// ------------------------------------------------- PMD-level views (2 MiB)

/** The host entries of one 2 MiB region stand for its PMD: PTES_PER_PMD of them. */
export const PTES_PER_PMD = 512;

/**
 * pmd_none(): no entry of the 2 MiB region maps anything (no PTE, no huge
 * PMD, no migration entry). The model keeps no separate PTE-table page, so
 * a region whose PTEs were all zapped counts as pmd_none too (the kernel
 * keeps the empty table until munmap).
 */
export function regionPmdNone(kvm: Kvm, base: number): boolean {
  const m = kvm.m;
  const at = kvm.layout.hpte + base;
  for (let i = 0; i < PTES_PER_PMD; i++) if ((Atomics.load(m, at + i) & ~HPTE_LOCKED) !== 0) return false;
  return true;
}

/** The value entry i of a region holds when `head` is mapped there with `flags` (0 for pmd_none). */
function pmdEntry(head: number, flags: number, i: number): number {
  return head === 0 ? 0 : (head + i) | flags;
}

/**
 * pmd_lock() and a pmd_same() check: lock the region's entries in ascending
 * order (the lock order), each expected to map `head + i` with exactly
 * `flags` (head 0: every entry none). Returns false, with nothing left
 * locked, at the first entry that differs.
 */
export function lockPmdExpect(kvm: Kvm, actor: Actor, base: number, head: number, flags: number): boolean {
  for (let i = 0; i < PTES_PER_PMD; i++) {
    const v = hpteLock(kvm, actor, base + i);
    if (v !== pmdEntry(head, flags, i)) {
      hpteUnlock(kvm, base + i, v);
      for (let j = i - 1; j >= 0; j--) hpteUnlock(kvm, base + j, pmdEntry(head, flags, j));
      return false;
    }
  }
  return true;
}

/** Store the region's new entries (`head + i` with `flags`, or none) and drop the locks, descending. */
export function unlockPmdSet(kvm: Kvm, base: number, head: number, flags: number): void {
  for (let i = PTES_PER_PMD - 1; i >= 0; i--) hpteUnlock(kvm, base + i, pmdEntry(head, flags, i));
}
