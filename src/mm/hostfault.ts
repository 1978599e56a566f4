/**
 * gfn_to_pfn_prot() and the host faults behind it (get_user_pages ->
 * handle_mm_fault): look up the frame backing a guest page, faulting it in
 * (do_anonymous_page: the zero page for a read, a new page for a write;
 * do_huge_pmd_anonymous_page: the huge zero page or a new THP), breaking
 * copy-on-write (do_wp_page, which goes through change_pte inside an
 * invalidate start/end pair; do_huge_pmd_wp_page), and waiting while the
 * page is under migration (migration_entry_wait).
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from '../check/names.js';
import {
  BACKING_THP,
  HPTE_FRAME_MASK,
  HPTE_HUGE,
  HPTE_LOCKED,
  HPTE_MIGRATING,
  HPTE_PRESENT,
  HPTE_WRITE,
  PTES_PER_PMD,
  hpteLock,
  hpteSetLocked,
  hpteUnlock,
  lockPmdExpect,
  regionBacking,
  regionPmdNone,
  unlockPmdSet,
} from './hostpt.js';
import {
  FRAME_DEVICE,
  FRAME_KSM,
  FRAME_LOCKED,
  FRAME_THP,
  ZERO_PFN,
  allocFrame,
  allocGroup,
  getPage,
  hugeZeroPfn,
  isHugeZeroFrame,
  isZeroPfn,
  putPage,
} from './frames.js';
import {
  kvmMmuNotifierChangePte,
  kvmMmuNotifierInvalidateRangeEnd,
  kvmMmuNotifierInvalidateRangeStart,
} from '../kvm/notifier.js';

/**
 * gfn_to_pfn_prot(kvm, gfn, write_fault, &writable): the frame with a
 * reference taken (none for device memory), or 0 on failure; whether the
 * host mapping is writable goes to `actor.writable`. A read fault reports the
 * mapping writable whenever the host PTE is (hva_to_pfn tries a writable
 * lookup first). On untouched memory a read fault maps the zero page, which
 * is never writable, so the lookup reports it read-only; get_user_pages()
 * takes a reference on the zero page too (follow_page_pte(), FOLL_GET).
 */
export function gfnToPfnProt(kvm: Kvm, actor: Actor, gfn: number, writeFault: boolean): number {
  const m = kvm.m;
  for (;;) {
    let v = hpteLock(kvm, actor, gfn);
    if ((v & HPTE_MIGRATING) !== 0) {
      hpteUnlock(kvm, gfn, v);
      actor.sched.waitWhile(kvm.layout.hpte + gfn, v, SITE['hostpt.migrating']);
      continue;
    }
    if ((v & HPTE_PRESENT) === 0) {
      // __handle_mm_fault(): a THP VMA whose PMD is none takes the huge
      // fault first; it falls back to the PTE fault when no huge page can
      // be allocated.
      if (regionBacking(kvm, gfn) === BACKING_THP && regionPmdNone(kvm, gfn & ~(PTES_PER_PMD - 1))) {
        hpteUnlock(kvm, gfn, v);
        if (doHugePmdAnonymousPage(kvm, actor, gfn, writeFault)) continue;
        v = hpteLock(kvm, actor, gfn);
        if ((v & (HPTE_PRESENT | HPTE_MIGRATING)) !== 0) {
          hpteUnlock(kvm, gfn, v);
          continue;
        }
      }
      v = doAnonymousPage(kvm, actor, gfn, writeFault);
      if (v === 0) {
        hpteUnlock(kvm, gfn, v);
        return 0;
      }
      hpteSetLocked(kvm, gfn, v);
      kvm.count(actor, CNT.hostFaults);
    }
    const f = v & HPTE_FRAME_MASK;
    if ((m[kvm.layout.frameFlags + f] & FRAME_DEVICE) !== 0) {
      actor.writable = (v & HPTE_WRITE) !== 0;
      hpteUnlock(kvm, gfn, v);
      return f;
    }
    if (writeFault && (v & HPTE_WRITE) === 0) {
      hpteUnlock(kvm, gfn, v);
      if (!doWpPage(kvm, actor, gfn, v)) return 0; // VM_FAULT_OOM
      continue;
    }
    getPage(kvm, f);
    actor.writable = (v & HPTE_WRITE) !== 0;
    hpteUnlock(kvm, gfn, v);
    return f;
  }
}

/**
 * do_anonymous_page() with the entry locked and none: the new entry (not yet
 * stored), or 0 when memory is exhausted. "Use the zero-page for reads":
 * a read fault maps the shared zero page read-only (a special PTE: no
 * reference, no rmap; mm_forbids_zeropage() is false on arm and arm64); a
 * write fault allocates a zeroed page, mapped writable.
 */
function doAnonymousPage(kvm: Kvm, actor: Actor, gfn: number, writeFault: boolean): number {
  if (!writeFault) {
    kvm.count(actor, CNT.zeroPageFaults);
    kvm.trace(actor, EV['host.zero'], gfn, ZERO_PFN);
    return ZERO_PFN | HPTE_PRESENT;
  }
  const f = allocFrame(kvm, actor);
  return f === 0 ? 0 : f | HPTE_PRESENT | HPTE_WRITE;
}

/**
 * do_huge_pmd_anonymous_page(): the first fault on an untouched THP range.
 * A read fault maps the huge zero page by a read-only PMD (set_huge_zero_page;
 * transparent_hugepage_use_zero_page() is on by default); a write fault
 * allocates a THP (order 9, zeroed) and maps it writable by a PMD
 * (__do_huge_pmd_anonymous_page). Nothing was mapped, so no notifier runs.
 * Returns false for VM_FAULT_FALLBACK (no free 2 MiB group): the caller
 * takes the PTE fault instead. Also returns true when the PMD is no longer
 * none (someone else faulted it in): the caller looks again.
 */
export function doHugePmdAnonymousPage(kvm: Kvm, actor: Actor, gfn: number, writeFault: boolean): boolean {
  const base = gfn & ~(PTES_PER_PMD - 1);
  let head: number;
  let flags = HPTE_PRESENT | HPTE_HUGE;
  if (!writeFault) {
    head = hugeZeroPfn(kvm);
  } else {
    head = allocGroup(kvm, actor, FRAME_THP);
    if (head === 0) return false;
    flags |= HPTE_WRITE;
  }
  if (!lockPmdExpect(kvm, actor, base, 0, 0)) {
    if (writeFault) freeGroupFrames(kvm, actor, head);
    return true;
  }
  unlockPmdSet(kvm, base, head, flags);
  kvm.count(actor, writeFault ? CNT.hostFaults : CNT.zeroPageFaults);
  if (!writeFault) kvm.trace(actor, EV['host.zero'], gfn, head);
  return true;
}

/** put_page() of every frame of a compound page nobody maps (its only references are its own). */
function freeGroupFrames(kvm: Kvm, actor: Actor, head: number): void {
  for (let i = 0; i < PTES_PER_PMD; i++) {
    Atomics.and(kvm.m, kvm.layout.frameFlags + head + i, ~FRAME_THP);
    putPage(kvm, actor, head + i);
  }
}

/**
 * do_wp_page(): a write fault on a present, read-only host PTE. An anonymous
 * page that is not KSM and mapped once is reused: made writable in place
 * (wp_page_reuse(); no notifier: nothing is taken away from KVM). A KSM page
 * or the zero page is copied: wp_page_copy() allocates a new page (zeroed for
 * the zero page, a copy otherwise) and switches the PTE with
 * ptep_clear_flush_notify() + set_pte_at_notify() (change_pte), all inside
 * invalidate_range_start/end, as every kernel from the seed's (3.18, where
 * the clear was a plain ptep_clear_flush()) to 5.1 did; the invalidate_range
 * it calls does nothing for KVM on arm (kvm_arch_mmu_notifier_invalidate_range()
 * is x86's only), so KVM hears start, change_pte and end. The
 * zero page gives no reference back (vm_normal_page() is NULL for it).
 * A huge PMD goes to do_huge_pmd_wp_page(). Returns false when no page
 * could be allocated (VM_FAULT_OOM), true otherwise (the caller looks again).
 */
export function doWpPage(kvm: Kvm, actor: Actor, gfn: number, seen: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  if ((seen & HPTE_HUGE) !== 0) {
    doHugePmdWpPage(kvm, actor, gfn, seen);
    return true;
  }
  const old = seen & HPTE_FRAME_MASK;
  const zero = isZeroPfn(old);
  // wp_page_reuse() for an anonymous page that is not KSM, and not locked
  // (trylock_page(): KSM holds the lock while it makes the page stable; the
  // kernel then waits and finds PageKsm, so it copies).
  if (!zero && (Atomics.load(m, L.frameFlags + old) & (FRAME_KSM | FRAME_LOCKED)) === 0) {
    const v = hpteLock(kvm, actor, gfn);
    hpteUnlock(kvm, gfn, v === seen ? v | HPTE_WRITE : v);
    return true;
  }
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, 1);
  const v = hpteLock(kvm, actor, gfn);
  if (v !== seen) {
    hpteUnlock(kvm, gfn, v);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
    return true;
  }
  const nf = allocFrame(kvm, actor);
  if (nf === 0) {
    hpteUnlock(kvm, gfn, v);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
    return false;
  }
  Atomics.store(m, L.frameData + nf, zero ? 0 : Atomics.load(m, L.frameData + old));
  const nv = nf | HPTE_PRESENT | HPTE_WRITE;
  setPteAtNotifyAndUnlock(kvm, actor, gfn, nv);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
  if (!zero) putPage(kvm, actor, old);
  kvm.count(actor, CNT.cowBreaks);
  kvm.trace(actor, EV['host.cow'], gfn, old, nf);
  return true;
}

/**
 * do_huge_pmd_wp_page() on a read-only huge PMD. For the huge zero page
 * (the only read-only huge PMD of this model) Linux 3.15 to 5.7 allocate a
 * THP, clear it, and under invalidate_range_start/end of the 2 MiB replace
 * the PMD (pmdp_huge_clear_flush_notify() + set_pmd_at(): no change_pte for
 * a PMD). With no THP to allocate, split_huge_pmd() turns the PMD into 512
 * PTEs of the small zero page and the fault falls back to the PTE path
 * (VM_FAULT_FALLBACK): the caller looks again and copies the zero page.
 * Any other read-only THP PMD is mapped once: reused in place.
 */
function doHugePmdWpPage(kvm: Kvm, actor: Actor, gfn: number, seen: number): void {
  const base = gfn & ~(PTES_PER_PMD - 1);
  const old = (seen & HPTE_FRAME_MASK) - (gfn - base);
  const oldFlags = seen & ~HPTE_FRAME_MASK;
  if (!isHugeZeroFrame(kvm, old)) {
    if (lockPmdExpect(kvm, actor, base, old, oldFlags)) unlockPmdSet(kvm, base, old, oldFlags | HPTE_WRITE);
    return;
  }
  const g = allocGroup(kvm, actor, FRAME_THP);
  if (g === 0) {
    splitHugeZeroPmd(kvm, actor, base);
    return;
  }
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, PTES_PER_PMD);
  if (!lockPmdExpect(kvm, actor, base, old, oldFlags)) {
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, PTES_PER_PMD);
    freeGroupFrames(kvm, actor, g);
    return;
  }
  unlockPmdSet(kvm, base, g, HPTE_PRESENT | HPTE_WRITE | HPTE_HUGE);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, PTES_PER_PMD);
  kvm.count(actor, CNT.cowBreaks);
  kvm.trace(actor, EV['host.cow'], base, old, g);
}

/**
 * __split_huge_zero_page_pmd() under split_huge_pmd() (split_huge_page_pmd()
 * before 4.5, the same here): the huge zero PMD becomes 512 read-only PTEs
 * of the small zero page, inside invalidate_range_start/end of the 2 MiB.
 * Returns false if the region is not (or no longer) mapped by the huge zero page.
 */
export function splitHugeZeroPmd(kvm: Kvm, actor: Actor, base: number): boolean {
  const hz = hugeZeroPfn(kvm);
  const flags = HPTE_PRESENT | HPTE_HUGE;
  if ((Atomics.load(kvm.m, kvm.layout.hpte + base) & ~HPTE_LOCKED) !== (hz | flags)) return false;
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, PTES_PER_PMD);
  const ok = lockPmdExpect(kvm, actor, base, hz, flags);
  if (ok) {
    for (let i = PTES_PER_PMD - 1; i >= 0; i--) hpteUnlock(kvm, base + i, ZERO_PFN | HPTE_PRESENT);
  }
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, PTES_PER_PMD);
  if (ok) {
    kvm.count(actor, CNT.thpPmdSplits);
    kvm.trace(actor, EV['thp.split_pmd'], base, hz);
  }
  return ok;
}

/**
 * set_pte_at_notify() under the held host PTE lock, then unlock: the new
 * entry is installed and KVM hears of it through change_pte (which takes
 * mmu_lock: the ptl -> mmu_lock order). From 6.10 there is no change_pte:
 * set_pte_at() alone.
 */
export function setPteAtNotifyAndUnlock(kvm: Kvm, actor: Actor, gfn: number, nv: number): void {
  hpteSetLocked(kvm, gfn, nv);
  if (kvm.proto.changePteNotifier) kvmMmuNotifierChangePte(kvm, actor, gfn, nv & HPTE_FRAME_MASK);
  hpteUnlock(kvm, gfn, nv);
}

/**
 * What the host (QEMU, the migration thread) reads at a guest page through
 * its own mapping: the frame's content, or 0 for a page not present.
 */
export function hostReadPage(kvm: Kvm, actor: Actor, gfn: number): number {
  for (;;) {
    const v = hpteLock(kvm, actor, gfn);
    if ((v & HPTE_MIGRATING) !== 0) {
      hpteUnlock(kvm, gfn, v);
      actor.sched.waitWhile(kvm.layout.hpte + gfn, v, SITE['hostpt.migrating']);
      continue;
    }
    const data = (v & HPTE_PRESENT) !== 0 ? Atomics.load(kvm.m, kvm.layout.frameData + (v & HPTE_FRAME_MASK)) : 0;
    hpteUnlock(kvm, gfn, v);
    return data;
  }
}
