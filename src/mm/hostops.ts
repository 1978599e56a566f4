/**
 * Host memory operations that change memory under the guest, each preserving
 * content and each telling KVM through MMU notifiers, as the kernel's mm
 * does: page migration (compaction), THP split and collapse (khugepaged),
 * KSM merge (through change_pte), and MADV_DONTNEED-style zap of a range;
 * and the operations on part of a THP that since Linux 4.5 leave it compound
 * and mapped by PTEs (split_huge_pmd, mprotect of part, the deferred split).
 *
 * Lock order: host PTE locks (ascending gfn) -> mmu_lock -> zone lock.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from '../check/names.js';
import { FRAMES_PER_GROUP } from '../shm/layout.js';
import {
  BACKING_ANON,
  BACKING_THP,
  HPTE_FRAME_MASK,
  HPTE_HUGE,
  HPTE_LOCKED,
  HPTE_MIGRATING,
  HPTE_PRESENT,
  HPTE_WRITE,
  hpteLock,
  hpteUnlock,
  lockPmdExpect,
  regionBacking,
  unlockPmdSet,
} from './hostpt.js';
import { FRAME_DEVICE, FRAME_HUGETLB, FRAME_KSM, FRAME_LOCKED, FRAME_THP, FRAME_ZERO, allocFrame, allocGroup, getPage, isHugeZeroFrame, isZeroPfn, putPage } from './frames.js';
import { setPteAtNotifyAndUnlock, splitHugeZeroPmd } from './hostfault.js';
import {
  kvmMmuNotifierInvalidateRangeEnd,
  kvmMmuNotifierInvalidateRangeStart,
} from '../kvm/notifier.js';

/** The guest gave this page away (balloon / DONTNEED): its content is not checked until written again. */
export const SHADOW_DISCARDED = -1;

function frameFlags(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameFlags + f);
}
function frameRef(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameRef + f);
}

/** migrate_pages() passes over a page that keeps failing with -EAGAIN (NR_MAX_MIGRATE_PAGES_RETRY). */
export const MIGRATE_PAGES_RETRY = 10;

/** migratePageOnce() results. */
export const MIGRATE_OK = 0;
/** The page could not be isolated or changed under us: not retried. */
export const MIGRATE_EBUSY = -16;
/** Someone else holds a reference (folio_ref_freeze() failed): migrate_pages() retries. */
export const MIGRATE_EAGAIN = -11;

/**
 * One pass of migrate_pages() over one 4 KiB anonymous page, in the kernel's
 * order (unmap_and_move -> __unmap_and_move):
 * - isolation: the page must be present, small, not KSM, device or hugetlb.
 *   Compaction also skips a page with an extra reference, a racy pre-check
 *   (isolate_migratepages_block: "migration will fail if an anonymous page
 *   is pinned"); NUMA balancing, which moves the pages a CPU is using right
 *   now, does not (`precheck` false);
 * - try_to_unmap(): inside an invalidate start/end pair, replace the PTE by
 *   a migration entry (lookups wait on it from here);
 * - move_to_new_page() -> folio_migrate_mapping(): freeze the refcount at
 *   the mapping's one reference; any other reference (a fault between its
 *   host lookup and the release of the page) fails the pass with -EAGAIN and
 *   remove_migration_ptes() puts the old page back;
 * - else copy into a new frame, map it, and free the old one.
 * So an in-flight fault makes the pass fail, but only after the notifier
 * pair ran: the fault must see mmu_notifier_retry() and retry.
 */
export function migratePageOnce(kvm: Kvm, actor: Actor, gfn: number, precheck: boolean): number {
  const m = kvm.m;
  const L = kvm.layout;
  actor.sched.point(SITE['host.op']);
  const v = hpteLock(kvm, actor, gfn);
  const f = v & HPTE_FRAME_MASK;
  hpteUnlock(kvm, gfn, v);
  if ((v & HPTE_PRESENT) === 0 || (v & (HPTE_HUGE | HPTE_MIGRATING)) !== 0 || (frameFlags(kvm, f) & (FRAME_DEVICE | FRAME_KSM | FRAME_HUGETLB | FRAME_THP | FRAME_ZERO)) !== 0) {
    return MIGRATE_EBUSY;
  }
  if (precheck && frameRef(kvm, f) !== 1) {
    kvm.count(actor, CNT.hostPinnedRefusals);
    return MIGRATE_EBUSY;
  }
  // try_to_unmap_one(): notifier pair around replacing the PTE by a migration entry
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, 1);
  const v2 = hpteLock(kvm, actor, gfn);
  if (v2 !== v) {
    hpteUnlock(kvm, gfn, v2);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
    return MIGRATE_EBUSY;
  }
  hpteUnlock(kvm, gfn, v | HPTE_MIGRATING);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
  actor.sched.point(SITE['host.op']);
  // folio_ref_freeze(): only the mapping's reference may be left
  if (frameRef(kvm, f) !== 1) {
    const v3 = hpteLock(kvm, actor, gfn);
    hpteUnlock(kvm, gfn, v3 & ~HPTE_MIGRATING); // remove_migration_ptes(old, old)
    kvm.count(actor, CNT.hostMigrationRetries);
    return MIGRATE_EAGAIN;
  }
  // move_to_new_page(): copy
  const nf = allocFrame(kvm, actor);
  const v3 = hpteLock(kvm, actor, gfn);
  if (nf === 0) {
    hpteUnlock(kvm, gfn, v3 & ~HPTE_MIGRATING);
    return MIGRATE_EBUSY;
  }
  actor.sched.point(SITE['host.op']);
  Atomics.store(m, L.frameData + nf, Atomics.load(m, L.frameData + f));
  // remove_migration_ptes()
  hpteUnlock(kvm, gfn, nf | HPTE_PRESENT | (v & HPTE_WRITE));
  putPage(kvm, actor, f);
  kvm.count(actor, CNT.hostMigrations);
  kvm.trace(actor, EV['host.migrate'], gfn, f, nf);
  return MIGRATE_OK;
}

/**
 * migrate_pages() of one page: passes while a pass fails with -EAGAIN, at
 * most MIGRATE_PAGES_RETRY (cond_resched() between passes). `precheck`:
 * compaction's racy skip of pinned pages (see migratePageOnce). Returns true
 * if migrated.
 */
export function migratePage(kvm: Kvm, actor: Actor, gfn: number, precheck = true): boolean {
  for (let pass = 0; pass < MIGRATE_PAGES_RETRY; pass++) {
    const r = migratePageOnce(kvm, actor, gfn, precheck);
    if (r !== MIGRATE_EAGAIN) return r === MIGRATE_OK;
    actor.sched.point(SITE['host.op']);
  }
  // Every pass met a reference beyond the mapping: a pinned page, for now.
  kvm.count(actor, CNT.hostPinnedRefusals);
  return false;
}

/** Lock the 512 host PTEs of a region, ascending (the PMD lock of a THP). */
function lockRegion(kvm: Kvm, actor: Actor, base: number, vals: Int32Array): void {
  for (let i = 0; i < FRAMES_PER_GROUP; i++) vals[i] = hpteLock(kvm, actor, base + i);
}
function unlockRegion(kvm: Kvm, base: number, vals: Int32Array): void {
  for (let i = FRAMES_PER_GROUP - 1; i >= 0; i--) hpteUnlock(kvm, base + i, vals[i]);
}

/**
 * split_huge_page() of the THP backing a region: the host PMD becomes 512
 * PTEs over the same frames; KVM is told through the notifier pair (its block
 * mapping, or its PTEs, go away and come back on later faults).
 */
export function splitHugePage(kvm: Kvm, actor: Actor, region: number, scratch: Int32Array): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  const base = region * FRAMES_PER_GROUP;
  if (regionBacking(kvm, base) !== BACKING_THP) return false;
  if ((Atomics.load(m, L.hpte + base) & HPTE_HUGE) === 0) return false;
  actor.sched.point(SITE['host.op']);
  lockRegion(kvm, actor, base, scratch);
  if ((scratch[0] & HPTE_HUGE) === 0 || isHugeZeroFrame(kvm, scratch[0] & HPTE_FRAME_MASK)) {
    unlockRegion(kvm, base, scratch);
    return false;
  }
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, FRAMES_PER_GROUP);
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const f = scratch[i] & HPTE_FRAME_MASK;
    Atomics.and(m, L.frameFlags + f, ~FRAME_THP);
    scratch[i] &= ~HPTE_HUGE;
  }
  unlockRegion(kvm, base, scratch);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, FRAMES_PER_GROUP);
  kvm.count(actor, CNT.thpSplits);
  kvm.trace(actor, EV['thp.split'], base);
  return true;
}

/**
 * collapse_huge_page() (khugepaged): copy the 512 small pages of a THP
 * region into a fresh 2 MiB group and map it huge. Needs every page present,
 * private (refcount 1) and not under migration.
 */
export function collapseHugePage(kvm: Kvm, actor: Actor, region: number, scratch: Int32Array): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  const base = region * FRAMES_PER_GROUP;
  if (regionBacking(kvm, base) !== BACKING_THP) return false;
  if ((Atomics.load(m, L.hpte + base) & HPTE_HUGE) !== 0) return false;
  actor.sched.point(SITE['host.op']);
  lockRegion(kvm, actor, base, scratch);
  let ok = true;
  let used = 0;
  for (let i = 0; i < FRAMES_PER_GROUP && ok; i++) {
    const v = scratch[i];
    const f = v & HPTE_FRAME_MASK;
    if (noneOrZero(v)) continue; // khugepaged_max_ptes_none (default 511): collapsed as zeros
    used++;
    if ((v & HPTE_PRESENT) === 0 || (v & (HPTE_HUGE | HPTE_MIGRATING)) !== 0 || (frameFlags(kvm, f) & (FRAME_KSM | FRAME_THP)) !== 0) ok = false;
  }
  if (used === 0) ok = false;
  if (!ok) {
    unlockRegion(kvm, base, scratch);
    return false;
  }
  // collapse_huge_page(): the notifier pair opens before the pages are
  // isolated; __collapse_huge_page_isolate() then fails on a page with an
  // extra reference (an in-flight fault's), after KVM has been told.
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, FRAMES_PER_GROUP);
  for (let i = 0; i < FRAMES_PER_GROUP && ok; i++) {
    if (noneOrZero(scratch[i]) || frameRef(kvm, scratch[i] & HPTE_FRAME_MASK) === 1) continue;
    ok = false;
    kvm.count(actor, CNT.hostPinnedRefusals);
  }
  const g = ok ? allocGroup(kvm, actor, FRAME_THP) : 0;
  if (g === 0) {
    unlockRegion(kvm, base, scratch);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, FRAMES_PER_GROUP);
    return false;
  }
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const f = scratch[i] & HPTE_FRAME_MASK;
    if (!noneOrZero(scratch[i])) Atomics.store(m, L.frameData + g + i, Atomics.load(m, L.frameData + f));
  }
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const old = noneOrZero(scratch[i]) ? 0 : scratch[i] & HPTE_FRAME_MASK;
    scratch[i] = (g + i) | HPTE_PRESENT | HPTE_WRITE | HPTE_HUGE;
    // the old frame's reference moves to the caller below
    scratch[FRAMES_PER_GROUP + i] = old;
  }
  unlockRegion(kvm, base, scratch);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, FRAMES_PER_GROUP);
  for (let i = 0; i < FRAMES_PER_GROUP; i++) if (scratch[FRAMES_PER_GROUP + i] !== 0) putPage(kvm, actor, scratch[FRAMES_PER_GROUP + i]);
  kvm.count(actor, CNT.thpCollapses);
  kvm.trace(actor, EV['thp.collapse'], base, g);
  return true;
}

/** KSM scans anonymous VMAs, THP ones included (a split THP's pages merge like any others). */
function ksmRegion(backing: number): boolean {
  return backing === BACKING_ANON || backing === BACKING_THP;
}

function ksmCandidate(kvm: Kvm, v: number): boolean {
  const f = v & HPTE_FRAME_MASK;
  return (v & HPTE_PRESENT) !== 0 && (v & (HPTE_HUGE | HPTE_MIGRATING)) === 0 && (frameFlags(kvm, f) & (FRAME_DEVICE | FRAME_HUGETLB | FRAME_THP | FRAME_ZERO)) === 0;
}

/**
 * write_protect_page(): make the host PTE read-only inside a notifier pair.
 * A page with a reference besides its mapping and KSM's own (a fault holding
 * it) is left alone, as the kernel's `page_mapcount + 1 + swapped !=
 * page_count` test does (a KSM page is shared by design: its references are
 * its mappings and the scanner's).
 */
function writeProtectPage(kvm: Kvm, actor: Actor, gfn: number, f: number): number {
  const v = hpteLock(kvm, actor, gfn);
  hpteUnlock(kvm, gfn, v);
  if (!ksmCandidate(kvm, v) || (v & HPTE_FRAME_MASK) !== f) return 0;
  if ((v & HPTE_WRITE) === 0) return v;
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, 1);
  const v2 = hpteLock(kvm, actor, gfn);
  const pinned = (frameFlags(kvm, f) & FRAME_KSM) === 0 && frameRef(kvm, f) !== 2;
  const res = v2 === v && !pinned ? v & ~HPTE_WRITE : 0;
  hpteUnlock(kvm, gfn, res !== 0 ? res : v2);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
  return res;
}

/**
 * The scanner's lookup of a page (follow_page(FOLL_GET) in
 * scan_get_next_rmap_item() and get_mergeable_page()): under the entry's
 * lock, a reference on the frame it maps, or 0 if it maps no candidate.
 */
function ksmGetPage(kvm: Kvm, actor: Actor, gfn: number): number {
  const v = hpteLock(kvm, actor, gfn);
  const f = ksmCandidate(kvm, v) ? v & HPTE_FRAME_MASK : 0;
  if (f !== 0) getPage(kvm, f);
  hpteUnlock(kvm, gfn, v);
  return f;
}

/**
 * KSM: merge page `b` into the frame of page `a` when their contents are
 * equal (cmp_and_merge_page() -> try_to_merge_two_pages()): the scanner
 * holds a reference on both pages from its lookups to the end; it locks
 * the page that becomes the stable KSM page, write-protects both, compares,
 * then replace_page(): b's PTE, still what it write-protected, switches to
 * a's frame with set_pte_at_notify() (change_pte) inside a notifier pair.
 * As in the kernel, a's mapping is not looked at again: KSM's reference
 * keeps the frame alive if a is unmapped or copied meanwhile.
 */
export function ksmMerge(kvm: Kvm, actor: Actor, a: number, b: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  if (a === b || !ksmRegion(regionBacking(kvm, a)) || !ksmRegion(regionBacking(kvm, b))) return false;
  actor.sched.point(SITE['host.op']);
  const fa = ksmGetPage(kvm, actor, a);
  if (fa === 0) return false;
  const fb = ksmGetPage(kvm, actor, b);
  // lock_page() on the page that becomes the stable KSM page, for the whole
  // merge: do_wp_page() may not reuse it in place meanwhile (the kernel's
  // trylock_page() fails, it waits, then finds PageKsm and copies).
  const locked = fb !== 0 && fb !== fa && (Atomics.or(m, L.frameFlags + fa, FRAME_LOCKED) & FRAME_LOCKED) === 0;
  try {
    return locked && ksmMergeLocked(kvm, actor, a, b, fa, fb);
  } finally {
    if (locked) Atomics.and(m, L.frameFlags + fa, ~FRAME_LOCKED);
    if (fb !== 0) putPage(kvm, actor, fb);
    putPage(kvm, actor, fa);
  }
}

function ksmMergeLocked(kvm: Kvm, actor: Actor, a: number, b: number, fa: number, fb: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  if (writeProtectPage(kvm, actor, a, fa) === 0) return false;
  const vb = writeProtectPage(kvm, actor, b, fb);
  if (vb === 0) return false;
  // pages_identical(): both are read-only now, their content is stable
  if (Atomics.load(m, L.frameData + fa) !== Atomics.load(m, L.frameData + fb)) return false;
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, b, 1);
  const vb2 = hpteLock(kvm, actor, b);
  if (vb2 !== vb) {
    hpteUnlock(kvm, b, vb2);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, b, 1);
    return false;
  }
  getPage(kvm, fa);
  Atomics.or(m, L.frameFlags + fa, FRAME_KSM);
  const nv = fa | HPTE_PRESENT;
  setPteAtNotifyAndUnlock(kvm, actor, b, nv);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, b, 1);
  putPage(kvm, actor, fb);
  kvm.count(actor, CNT.ksmMerges);
  kvm.trace(actor, EV['host.ksm'], a, b, fa);
  return true;
}

/**
 * MADV_DONTNEED (zap_page_range) of [gfn, gfn + npages), which may cross into
 * the next 2 MiB region (an unaligned range over two PMDs), over anon or THP
 * regions. A huge PMD is split first (zap_pmd_range(): split_huge_pmd() since
 * Linux 4.5, so the THP stays compound and its zapped subpages stay allocated
 * in it; split_huge_page_pmd(), which splits the page, before). The guest
 * gave the pages away (balloon), so their shadow becomes SHADOW_DISCARDED,
 * set while the notifier pair keeps every fault on them retrying. Refaults
 * map the zero page (a read) or fresh zeroed frames (a write).
 */
export function zapRange(kvm: Kvm, actor: Actor, gfn: number, npages: number, scratch: Int32Array): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  if (npages < 1 || npages > FRAMES_PER_GROUP || gfn + npages > L.ramPages) return false;
  const first = gfn >>> 9;
  const last = (gfn + npages - 1) >>> 9;
  for (let r = first; r <= last; r++) {
    const backing = regionBacking(kvm, r << 9);
    if (backing !== BACKING_ANON && backing !== BACKING_THP) return false;
  }
  for (let r = first; r <= last; r++) {
    if ((Atomics.load(m, L.hpte + (r << 9)) & HPTE_HUGE) !== 0) splitHugePmdOrPage(kvm, actor, r, scratch);
  }
  actor.sched.point(SITE['host.op']);
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, npages);
  for (let i = 0; i < npages; i++) {
    const v = hpteLock(kvm, actor, gfn + i);
    if ((v & HPTE_MIGRATING) !== 0 || (v & HPTE_HUGE) !== 0) {
      hpteUnlock(kvm, gfn + i, v);
      scratch[i] = 0;
      continue;
    }
    Atomics.store(m, L.shadow + gfn + i, SHADOW_DISCARDED);
    hpteUnlock(kvm, gfn + i, 0);
    scratch[i] = zapPteFrame(kvm, v);
  }
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, npages);
  for (let i = 0; i < npages; i++) if (scratch[i] > 0) putPage(kvm, actor, scratch[i]);
  for (let i = 0; i < npages; i++) if (scratch[i] < 0 && (i === npages - 1 || ((gfn + i + 1) & 511) === 0 || scratch[i + 1] !== scratch[i] - 1)) freeIfUnmappedCompound(kvm, actor, (gfn + i) & ~511, -scratch[i] & ~511);
  kvm.count(actor, CNT.zaps);
  kvm.trace(actor, EV['host.zap'], gfn, npages);
  return true;
}

// ------------------------------------------- THP mapped by PTEs (Linux 4.5)

/** A none entry, or one that maps the zero page: khugepaged's none_or_zero. */
function noneOrZero(v: number): boolean {
  return (v & HPTE_PRESENT) === 0 ? (v & HPTE_MIGRATING) === 0 : isZeroPfn(v & HPTE_FRAME_MASK);
}

/**
 * zap_pte_range() of one entry, decided under its lock: the frame whose
 * reference the unmap gives back (> 0), nothing (0), or minus the frame of a
 * compound THP's subpage (< 0). The zero page has no reference to give back
 * (vm_normal_page() is NULL for it). A compound subpage is only unmapped
 * (page_remove_rmap(); the THP goes on the deferred split queue): it stays
 * allocated, with its reference, as part of the compound page until that
 * page is split (deferredSplitHugePage) or wholly unmapped
 * (freeIfUnmappedCompound).
 */
function zapPteFrame(kvm: Kvm, v: number): number {
  if ((v & HPTE_PRESENT) === 0) return 0;
  const f = v & HPTE_FRAME_MASK;
  if (isZeroPfn(f)) return 0;
  if ((frameFlags(kvm, f) & FRAME_THP) !== 0) return -f;
  return f;
}

/**
 * Take over the end (split or free) of the compound page at `head`: clear
 * the head's FRAME_THP. Exactly one caller wins.
 */
function claimCompound(kvm: Kvm, head: number): boolean {
  return Atomics.compareExchange(kvm.m, kvm.layout.frameFlags + head, FRAME_THP, 0) === FRAME_THP;
}

/**
 * The last unmap of a compound THP frees it whole (free_compound_page()):
 * when no entry of its region maps any of its subpages, every subpage's
 * reference (held for the compound page) goes. Subpage i can only be mapped
 * at base + i, and an entry that stopped mapping a compound subpage never
 * maps one again, so a compound seen wholly unmapped stays so.
 */
function freeIfUnmappedCompound(kvm: Kvm, actor: Actor, base: number, head: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const v = Atomics.load(m, L.hpte + base + i);
    if ((v & HPTE_PRESENT) !== 0 && (v & HPTE_FRAME_MASK) === head + i) return;
  }
  if (!claimCompound(kvm, head)) return;
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    Atomics.and(m, L.frameFlags + head + i, ~FRAME_THP);
    putPage(kvm, actor, head + i);
  }
}

/**
 * The compound THP of a region the host maps by PTEs: its head frame, or 0.
 * A region holds at most one (khugepaged does not collapse over a compound
 * page), and its subpage i can only be mapped at base + i.
 */
function pteMappedCompound(kvm: Kvm, base: number): number {
  const m = kvm.m;
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const v = Atomics.load(m, kvm.layout.hpte + base + i);
    if ((v & HPTE_PRESENT) === 0 || (v & HPTE_HUGE) !== 0) continue;
    const f = v & HPTE_FRAME_MASK;
    if ((frameFlags(kvm, f) & (FRAME_THP | FRAME_ZERO)) === FRAME_THP && f % FRAMES_PER_GROUP === i) return f - i;
  }
  return 0;
}

/**
 * split_huge_pmd() (Linux 4.5, __split_huge_pmd()): the host PMD of a THP
 * becomes 512 PTEs over the same subpages, each with the PMD's permission
 * (__split_huge_pmd_locked()), inside invalidate_range_start/end of the
 * 2 MiB; the page stays compound. The huge zero page's PMD becomes PTEs of
 * the small zero page. Returns true if the PMD was split.
 */
export function splitHugePmd(kvm: Kvm, actor: Actor, region: number): boolean {
  const m = kvm.m;
  const base = region * FRAMES_PER_GROUP;
  if (regionBacking(kvm, base) !== BACKING_THP) return false;
  const v = Atomics.load(m, kvm.layout.hpte + base) & ~HPTE_LOCKED;
  if ((v & HPTE_PRESENT) === 0 || (v & HPTE_HUGE) === 0) return false;
  const head = v & HPTE_FRAME_MASK;
  if (isHugeZeroFrame(kvm, head)) return splitHugeZeroPmd(kvm, actor, base);
  const flags = v & ~HPTE_FRAME_MASK;
  actor.sched.point(SITE['host.op']);
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, FRAMES_PER_GROUP);
  const ok = lockPmdExpect(kvm, actor, base, head, flags);
  if (ok) unlockPmdSet(kvm, base, head, flags & ~HPTE_HUGE);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, FRAMES_PER_GROUP);
  if (ok) {
    kvm.count(actor, CNT.thpPmdSplits);
    kvm.trace(actor, EV['thp.split_pmd'], base, head);
  }
  return ok;
}

/**
 * What an operation on part of a PMD-mapped THP does to it first: since
 * Linux 4.5 split_huge_pmd() (the page stays compound, mapped by PTEs);
 * before, split_huge_page_pmd(), which splits the page itself
 * (split_huge_page()). Either way a huge zero PMD becomes zero-page PTEs.
 */
export function splitHugePmdOrPage(kvm: Kvm, actor: Actor, region: number, scratch: Int32Array): boolean {
  if (kvm.proto.thpPteMappedCompound) return splitHugePmd(kvm, actor, region);
  const base = region * FRAMES_PER_GROUP;
  if (isHugeZeroFrame(kvm, Atomics.load(kvm.m, kvm.layout.hpte + base) & HPTE_FRAME_MASK)) return splitHugeZeroPmd(kvm, actor, base);
  return splitHugePage(kvm, actor, region, scratch);
}

/**
 * split_huge_page() of a compound THP the host maps by PTEs, as the deferred
 * split shrinker does under memory pressure (deferred_split_scan(), Linux
 * 4.5): inside invalidate_range_start/end of the 2 MiB (freeze_page() puts
 * migration entries in place of the mapped subpages), the mapped subpages
 * become ordinary pages and the unmapped ones are freed. Before 4.5 no THP
 * is mapped by PTEs, so there is nothing to do.
 */
export function deferredSplitHugePage(kvm: Kvm, actor: Actor, region: number, scratch: Int32Array): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  const base = region * FRAMES_PER_GROUP;
  if (regionBacking(kvm, base) !== BACKING_THP) return false;
  if (pteMappedCompound(kvm, base) === 0) return false;
  actor.sched.point(SITE['host.op']);
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, FRAMES_PER_GROUP);
  lockRegion(kvm, actor, base, scratch);
  const head = pteMappedCompound(kvm, base);
  let freed = 0;
  if (head !== 0 && claimCompound(kvm, head)) {
    for (let i = 0; i < FRAMES_PER_GROUP; i++) {
      Atomics.and(m, L.frameFlags + head + i, ~FRAME_THP);
      const v = scratch[i];
      if ((v & HPTE_PRESENT) === 0 || (v & HPTE_FRAME_MASK) !== head + i) scratch[FRAMES_PER_GROUP + freed++] = head + i;
    }
  }
  unlockRegion(kvm, base, scratch);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, FRAMES_PER_GROUP);
  if (head === 0) return false;
  for (let i = 0; i < freed; i++) putPage(kvm, actor, scratch[FRAMES_PER_GROUP + i]);
  kvm.count(actor, CNT.thpDeferredSplits);
  kvm.trace(actor, EV['thp.deferred_split'], base, head, freed);
  return true;
}

/**
 * mprotect(PROT_READ) of [gfn, gfn + npages), then mprotect(PROT_READ |
 * PROT_WRITE) back, within one 2 MiB region of anon or THP memory. A range
 * that does not cover a huge PMD splits it first (vma_adjust_trans_huge()
 * at the new VMA's edges, change_pmd_range(): split_huge_pmd() since 4.5,
 * split_huge_page_pmd() before). change_protection() write-protects the
 * PTEs inside invalidate_range_start/end of the range. Making the range
 * writable again leaves private anonymous PTEs read-only (no
 * dirty_accountable): the next write fault reuses each page in place
 * (do_wp_page() -> wp_page_reuse()).
 */
export function mprotectRange(kvm: Kvm, actor: Actor, gfn: number, npages: number, scratch: Int32Array): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  if (npages < 1 || npages >= FRAMES_PER_GROUP || (gfn & 511) + npages > FRAMES_PER_GROUP || gfn + npages > L.ramPages) return false;
  const backing = regionBacking(kvm, gfn);
  if (backing !== BACKING_ANON && backing !== BACKING_THP) return false;
  if ((Atomics.load(m, L.hpte + (gfn & ~511)) & HPTE_HUGE) !== 0) splitHugePmdOrPage(kvm, actor, gfn >>> 9, scratch);
  actor.sched.point(SITE['host.op']);
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, npages);
  for (let i = 0; i < npages; i++) {
    const v = hpteLock(kvm, actor, gfn + i);
    const keep = (v & HPTE_PRESENT) === 0 || (v & (HPTE_HUGE | HPTE_MIGRATING)) !== 0;
    hpteUnlock(kvm, gfn + i, keep ? v : v & ~HPTE_WRITE);
  }
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, npages);
  kvm.count(actor, CNT.mprotects);
  kvm.trace(actor, EV['host.mprotect'], gfn, npages);
  return true;
}
