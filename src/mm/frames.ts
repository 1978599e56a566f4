/**
 * Host frames: refcount, flags and one content word each. Frames are handed
 * out in 2 MiB groups (512 aligned frames, for THP and hugetlb) or one by
 * one from a FIFO of free 4 KiB frames, so that a freed frame is reused as
 * late as possible (a quarantine, as KASAN keeps one) and a write into a
 * freed frame is caught before the frame has a new owner.
 *
 * What a frame's refcount is made of, when no fault or host operation is in
 * flight (a stopped world):
 * - an ordinary page: one reference per host entry that maps it (more than
 *   one only for a KSM page);
 * - a subpage of a compound THP (FRAME_THP): one, for the compound page,
 *   whether the host maps it by a PMD, by a PTE, or (since 4.5, after a
 *   partial unmap) not at all;
 * - the zero page (ZERO_PFN): 1 + the references KVM leaked
 *   (zeroPageExpectedRef()); its mappings take none;
 * - the huge zero page's frames: one each, never freed;
 * - device frames: not refcounted; free frames: 0.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { CTRL, FRAMES_PER_GROUP } from '../shm/layout.js';
import { LS } from '../sync/locksites.js';
import { SITE } from '../sync/sites.js';
import { CNT, INV } from '../check/names.js';
import { HPTE_FRAME_MASK, HPTE_HUGE, HPTE_PRESENT } from './hostpt.js';
import { KBUG } from '../kvm/pgtable.js';

/**
 * Part of a compound transparent huge page (PageTransCompound). Whether the
 * host maps it by a PMD or by PTEs is the host page table's business
 * (HPTE_HUGE); since Linux 4.5 a THP can be PTE-mapped and stay compound.
 * Each subpage frame holds one reference for its compound page, mapped or
 * not, until the compound page is split or freed (hostops.ts).
 */
export const FRAME_THP = 1 << 0;
/** Part of a hugetlbfs page. */
export const FRAME_HUGETLB = 1 << 1;
/** Device memory: no struct page, never refcounted (kvm_is_device_pfn). */
export const FRAME_DEVICE = 1 << 2;
/** A KSM page, shared read-only. */
export const FRAME_KSM = 1 << 3;
/** lock_page(): held by KSM while it makes the page stable (try_to_merge_one_page); do_wp_page() does not reuse a locked page. */
export const FRAME_LOCKED = 1 << 6;

/** Frees that must queue behind a freed frame before it is handed out again (while groups last). */
export const QUARANTINE_FRAMES = 256;

/** frame-conservation kinds in the violation ring (live). */
export const FC_POOL_EMPTY = 1;

export function frameRefIdx(kvm: Kvm, f: number): number {
  return kvm.layout.frameRef + f;
}

/** get_page() */
export function getPage(kvm: Kvm, f: number): void {
  Atomics.add(kvm.m, kvm.layout.frameRef + f, 1);
}

/** put_page(): the last reference frees the frame. */
export function putPage(kvm: Kvm, actor: Actor, f: number): void {
  const old = Atomics.sub(kvm.m, kvm.layout.frameRef + f, 1);
  if (old === 1) freeFrame(kvm, actor, f);
  else if (old < 1) kvm.violation(INV['kernel-bug'], actor.id, KBUG.FRAME_REF_UNDERFLOW, f, old - 1);
}

function freeFrame(kvm: Kvm, actor: Actor, f: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  Atomics.store(m, L.frameFlags + f, 0);
  kvm.zoneLock.lock(actor, LS.other);
  const tail = m[CTRL.FRAME_FIFO_TAIL];
  m[L.frameFifo + (tail % L.frames)] = f;
  m[CTRL.FRAME_FIFO_TAIL] = tail + 1;
  kvm.zoneLock.unlock(actor);
}

/** alloc_page(): a zeroed 4 KiB frame with refcount 1, or 0 when memory is exhausted. */
export function allocFrame(kvm: Kvm, actor: Actor): number {
  const m = kvm.m;
  const L = kvm.layout;
  actor.sched.point(SITE['frame.alloc']);
  kvm.zoneLock.lock(actor, LS.other);
  let head = m[CTRL.FRAME_FIFO_HEAD];
  let tail = m[CTRL.FRAME_FIFO_TAIL];
  if (tail - head < QUARANTINE_FRAMES) {
    // Break a free 2 MiB group into 4 KiB frames, so that a just-freed frame
    // waits behind at least QUARANTINE_FRAMES others before it is reused.
    const top = m[CTRL.GROUP_TOP];
    if (top > 0) {
      const g = m[L.groupStack + top - 1];
      m[CTRL.GROUP_TOP] = top - 1;
      for (let i = 0; i < FRAMES_PER_GROUP; i++) m[L.frameFifo + ((tail + i) % L.frames)] = g * FRAMES_PER_GROUP + i;
      tail += FRAMES_PER_GROUP;
      m[CTRL.FRAME_FIFO_TAIL] = tail;
    }
  }
  let f = 0;
  if (head !== tail) {
    f = m[L.frameFifo + (head % L.frames)];
    head++;
    m[CTRL.FRAME_FIFO_HEAD] = head;
  }
  kvm.zoneLock.unlock(actor);
  if (f === 0) {
    // The pool holds every guest page plus spare groups: more than any
    // operation needs at once. Running dry means frames leak (references
    // never put). Reported once, as frame-conservation.
    if (Atomics.compareExchange(m, CTRL.FRAME_POOL_EMPTY_REPORTED, 0, 1) === 0) {
      kvm.violation(INV['frame-conservation'], actor.id, FC_POOL_EMPTY, L.frames - FRAMES_PER_GROUP);
    }
    return 0;
  }
  Atomics.store(m, L.frameData + f, 0);
  Atomics.store(m, L.frameFlags + f, 0);
  Atomics.store(m, L.frameRef + f, 1);
  return f;
}

/** A free 2 MiB group (alloc_pages(order 9)): its first frame, or 0. Frames get refcount 1 each. */
export function allocGroup(kvm: Kvm, actor: Actor, flags: number): number {
  const m = kvm.m;
  const L = kvm.layout;
  kvm.zoneLock.lock(actor, LS.other);
  const top = m[CTRL.GROUP_TOP];
  let g = 0;
  if (top > 0) {
    g = m[L.groupStack + top - 1];
    m[CTRL.GROUP_TOP] = top - 1;
  }
  kvm.zoneLock.unlock(actor);
  if (g === 0) return 0;
  const base = g * FRAMES_PER_GROUP;
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    Atomics.store(m, L.frameData + base + i, 0);
    Atomics.store(m, L.frameFlags + base + i, flags);
    Atomics.store(m, L.frameRef + base + i, 1);
  }
  return base;
}

/** Free frames (FIFO + whole groups), for conservation checks and reports. */
export function freeFrameCount(kvm: Kvm): number {
  const m = kvm.m;
  return m[CTRL.FRAME_FIFO_TAIL] - m[CTRL.FRAME_FIFO_HEAD] + m[CTRL.GROUP_TOP] * FRAMES_PER_GROUP;
}

/**
 * The allocator's free lists: `free(f)` for every frame queued on the FIFO
 * and for every frame of every free group (a frame listed twice is passed
 * twice). For the conservation check, on a stopped world.
 */
export function forEachFreeFrame(kvm: Kvm, free: (f: number) => void): void {
  const m = kvm.m;
  const L = kvm.layout;
  const head = m[CTRL.FRAME_FIFO_HEAD];
  const tail = m[CTRL.FRAME_FIFO_TAIL];
  for (let i = head; i < tail && i - head < L.frames; i++) free(m[L.frameFifo + (i % L.frames)]);
  const top = m[CTRL.GROUP_TOP];
  for (let i = 0; i < top && i < L.groups; i++) {
    const base = m[L.groupStack + i] * FRAMES_PER_GROUP;
    for (let k = 0; k < FRAMES_PER_GROUP; k++) free(base + k);
  }
}
// ---------------------------------------------------------------- zero pages

/**
 * The shared zero page (ZERO_PAGE(), empty_zero_page): what a read fault on
 * untouched anonymous memory maps (do_anonymous_page), read-only, content
 * always 0. It is PageReserved, so KVM takes no reference it gives back
 * (see zeroPageExpectedRef).
 */
export const FRAME_ZERO = 1 << 4;
/** PageReserved(): never freed; kvm_is_reserved_pfn() is true for it. */
export const FRAME_RESERVED = 1 << 5;

/** The zero page is frame 1: group 0 is never handed out (frame 0 means "none"). */
export const ZERO_PFN = 1;

/**
 * The huge zero page (huge_zero_page, mm/huge_memory.c): a compound 2 MiB
 * page of zeros, mapped read-only by a PMD on a read fault of an untouched
 * THP range (do_huge_pmd_anonymous_page). The model keeps it in the last
 * 2 MiB group, set aside at VM creation (the kernel allocates it on first
 * use and keeps it while it is mapped). Its frames are FRAME_THP |
 * FRAME_ZERO, one reference each for the compound page, never freed; it is
 * not reserved, so KVM's references come back (kvm_release_pfn_clean).
 */
export function hugeZeroPfn(kvm: Kvm): number {
  return (kvm.layout.groups - 1) * FRAMES_PER_GROUP;
}

/** is_zero_pfn() */
export function isZeroPfn(f: number): boolean {
  return f === ZERO_PFN;
}

/** is_huge_zero_page() of the compound page holding frame f. */
export function isHugeZeroFrame(kvm: Kvm, f: number): boolean {
  return f - (f % FRAMES_PER_GROUP) === hugeZeroPfn(kvm);
}

/**
 * Set both zero pages up (createVm). The huge zero page's group must already
 * be kept out of the group stack (createVm pushes groups 1 .. groups-2).
 */
export function initZeroPages(kvm: Kvm): void {
  const m = kvm.m;
  const L = kvm.layout;
  Atomics.store(m, L.frameData + ZERO_PFN, 0);
  Atomics.store(m, L.frameFlags + ZERO_PFN, FRAME_ZERO | FRAME_RESERVED);
  Atomics.store(m, L.frameRef + ZERO_PFN, 1);
  const hz = hugeZeroPfn(kvm);
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    Atomics.store(m, L.frameData + hz + i, 0);
    Atomics.store(m, L.frameFlags + hz + i, FRAME_THP | FRAME_ZERO);
    Atomics.store(m, L.frameRef + hz + i, 1);
  }
}

/**
 * The zero page's refcount, exactly, when no fault is in flight (a stopped
 * world): 1 for the reservation, plus one for every time KVM looked it up.
 * get_user_pages() takes a reference on the zero page (follow_page_pte(),
 * FOLL_GET), but kvm_release_pfn_clean() skips reserved pfns, so every fault
 * that met the zero page leaked one reference: every kernel this model
 * profiles did (it overflowed in practice once KSM could merge into the zero
 * page, 4.11), until 7df003c85218 "KVM: fix overflow of zero page refcount
 * with ksm running" (Linux 5.5). Mapping the zero page takes no reference
 * (a special PTE, no rmap): countZeroPageMappings() counts those.
 */
export function zeroPageExpectedRef(kvm: Kvm): number {
  return 1 + kvm.counter(CNT.zeroPageRefsLeaked);
}

/** Host PTEs that map the zero page (they hold no reference on it). */
export function countZeroPageMappings(kvm: Kvm): number {
  const m = kvm.m;
  const L = kvm.layout;
  let n = 0;
  for (let gfn = 0; gfn < L.pages; gfn++) {
    const v = Atomics.load(m, L.hpte + gfn);
    if ((v & HPTE_PRESENT) !== 0 && (v & HPTE_FRAME_MASK) === ZERO_PFN) n++;
  }
  return n;
}

/** kvm_is_reserved_pfn(): device memory (no struct page) and PageReserved pages. */
export function kvmIsReservedPfn(kvm: Kvm, f: number): boolean {
  return (Atomics.load(kvm.m, kvm.layout.frameFlags + f) & (FRAME_DEVICE | FRAME_RESERVED)) !== 0;
}

// ------------------------------------------------------------ compound pages

/** PageTransCompound(): the frame is part of a compound THP (the huge zero page included). */
export function pageTransCompound(kvm: Kvm, f: number): boolean {
  return (Atomics.load(kvm.m, kvm.layout.frameFlags + f) & FRAME_THP) !== 0;
}

/**
 * PageTransCompoundMap() (include/linux/page-flags.h, 127393fbe597): the
 * frame is part of a compound THP and its own _mapcount is -1, i.e. no PTE
 * maps this subpage: the primary MMU maps the whole compound page through a
 * huge PMD. One process maps guest memory in this model, and a compound
 * subpage is only ever mapped at its own hva, so that is: the host entry at
 * `gfn` maps the frame through the PMD. Only meaningful where split_huge_pmd()
 * cannot run from under the caller (mmu_notifier_retry() passed, mmu_lock held).
 */
export function pageTransCompoundMap(kvm: Kvm, gfn: number, f: number): boolean {
  if (!pageTransCompound(kvm, f)) return false;
  const v = Atomics.load(kvm.m, kvm.layout.hpte + gfn);
  return (v & HPTE_PRESENT) !== 0 && (v & HPTE_HUGE) !== 0 && (v & HPTE_FRAME_MASK) === f;
}
