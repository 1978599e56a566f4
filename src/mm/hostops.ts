/**
 * Host memory operations that change memory under the guest, each preserving
 * content and each telling KVM through MMU notifiers, as the kernel's mm
 * does: page migration (compaction), THP split and collapse (khugepaged),
 * KSM merge (through change_pte), and MADV_DONTNEED-style zap of a range.
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
  HPTE_MIGRATING,
  HPTE_PRESENT,
  HPTE_WRITE,
  hpteLock,
  hpteUnlock,
  regionBacking,
} from './hostpt.js';
import { FRAME_DEVICE, FRAME_HUGETLB, FRAME_KSM, FRAME_THP, allocFrame, allocGroup, getPage, putPage } from './frames.js';
import { setPteAtNotifyAndUnlock } from './hostfault.js';
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

/**
 * migrate_pages() of one 4 KiB anonymous page: try_to_unmap() (which runs the
 * invalidate start/end pair and leaves a migration entry), copy, then
 * remove_migration_ptes(). Fails (-EAGAIN) when someone else holds a
 * reference, as migrate_page_move_mapping() does. Returns true if migrated.
 */
export function migratePage(kvm: Kvm, actor: Actor, gfn: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  actor.sched.point(SITE['host.op']);
  const v = hpteLock(kvm, actor, gfn);
  const f = v & HPTE_FRAME_MASK;
  const movable = (v & HPTE_PRESENT) !== 0 && (v & (HPTE_HUGE | HPTE_MIGRATING)) === 0 && (frameFlags(kvm, f) & (FRAME_DEVICE | FRAME_KSM | FRAME_HUGETLB)) === 0;
  if (!movable || frameRef(kvm, f) !== 1) {
    hpteUnlock(kvm, gfn, v);
    if (movable) kvm.count(actor, CNT.hostPinnedRefusals);
    return false;
  }
  hpteUnlock(kvm, gfn, v);
  // try_to_unmap_one(): notifier pair around replacing the PTE by a migration entry
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, 1);
  const v2 = hpteLock(kvm, actor, gfn);
  if (v2 !== v || frameRef(kvm, f) !== 1) {
    if (v2 === v) kvm.count(actor, CNT.hostPinnedRefusals);
    hpteUnlock(kvm, gfn, v2);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
    return false;
  }
  hpteUnlock(kvm, gfn, v | HPTE_MIGRATING);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
  // move_to_new_page(): copy
  const nf = allocFrame(kvm, actor);
  const v3 = hpteLock(kvm, actor, gfn);
  if (nf === 0) {
    hpteUnlock(kvm, gfn, v3 & ~HPTE_MIGRATING);
    return false;
  }
  actor.sched.point(SITE['host.op']);
  Atomics.store(m, L.frameData + nf, Atomics.load(m, L.frameData + f));
  // remove_migration_ptes()
  hpteUnlock(kvm, gfn, nf | HPTE_PRESENT | (v & HPTE_WRITE));
  putPage(kvm, actor, f);
  kvm.count(actor, CNT.hostMigrations);
  kvm.trace(actor, EV['host.migrate'], gfn, f, nf);
  return true;
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
  if ((scratch[0] & HPTE_HUGE) === 0) {
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
  for (let i = 0; i < FRAMES_PER_GROUP && ok; i++) {
    const v = scratch[i];
    const f = v & HPTE_FRAME_MASK;
    if ((v & HPTE_PRESENT) === 0 || (v & (HPTE_HUGE | HPTE_MIGRATING)) !== 0 || frameRef(kvm, f) !== 1 || (frameFlags(kvm, f) & FRAME_KSM) !== 0) {
      ok = false;
      if ((v & HPTE_PRESENT) !== 0 && (v & (HPTE_HUGE | HPTE_MIGRATING)) === 0 && (frameFlags(kvm, f) & FRAME_KSM) === 0) kvm.count(actor, CNT.hostPinnedRefusals);
    }
  }
  if (!ok) {
    unlockRegion(kvm, base, scratch);
    return false;
  }
  const g = allocGroup(kvm, actor, FRAME_THP);
  if (g === 0) {
    unlockRegion(kvm, base, scratch);
    return false;
  }
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, base, FRAMES_PER_GROUP);
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const f = scratch[i] & HPTE_FRAME_MASK;
    Atomics.store(m, L.frameData + g + i, Atomics.load(m, L.frameData + f));
  }
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    const old = scratch[i] & HPTE_FRAME_MASK;
    scratch[i] = (g + i) | HPTE_PRESENT | HPTE_WRITE | HPTE_HUGE;
    // the old frame's reference moves to the caller below
    scratch[FRAMES_PER_GROUP + i] = old;
  }
  unlockRegion(kvm, base, scratch);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, base, FRAMES_PER_GROUP);
  for (let i = 0; i < FRAMES_PER_GROUP; i++) putPage(kvm, actor, scratch[FRAMES_PER_GROUP + i]);
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
  return (v & HPTE_PRESENT) !== 0 && (v & (HPTE_HUGE | HPTE_MIGRATING)) === 0 && (frameFlags(kvm, f) & (FRAME_DEVICE | FRAME_HUGETLB | FRAME_THP)) === 0;
}

/** write_protect_page(): make the host PTE read-only inside a notifier pair. */
function writeProtectPage(kvm: Kvm, actor: Actor, gfn: number): number {
  const v = hpteLock(kvm, actor, gfn);
  hpteUnlock(kvm, gfn, v);
  if (!ksmCandidate(kvm, v)) return 0;
  if ((v & HPTE_WRITE) === 0) return v;
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, 1);
  const v2 = hpteLock(kvm, actor, gfn);
  const res = v2 === v ? v & ~HPTE_WRITE : 0;
  hpteUnlock(kvm, gfn, v2 === v ? res : v2);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
  return res;
}

/**
 * KSM: merge page `b` into the frame of page `a` when their contents are
 * equal: write-protect both, compare, then replace_page(): switch b's PTE
 * with set_pte_at_notify() (change_pte) inside a notifier pair.
 */
export function ksmMerge(kvm: Kvm, actor: Actor, a: number, b: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  if (a === b || !ksmRegion(regionBacking(kvm, a)) || !ksmRegion(regionBacking(kvm, b))) return false;
  actor.sched.point(SITE['host.op']);
  const va = writeProtectPage(kvm, actor, a);
  if (va === 0) return false;
  const vb = writeProtectPage(kvm, actor, b);
  if (vb === 0) return false;
  const fa = va & HPTE_FRAME_MASK;
  const fb = vb & HPTE_FRAME_MASK;
  if (fa === fb) return false;
  // pages_identical(): both are read-only now, their content is stable
  if (Atomics.load(m, L.frameData + fa) !== Atomics.load(m, L.frameData + fb)) return false;
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, b, 1);
  const vb2 = hpteLock(kvm, actor, b);
  const va2 = Atomics.load(m, L.hpte + a);
  if (vb2 !== vb || va2 !== va) {
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
 * regions (a THP is split first). The guest gave the pages away (balloon),
 * so their shadow becomes SHADOW_DISCARDED, set while the notifier pair keeps
 * every fault on them retrying. Refaults allocate fresh zeroed frames.
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
    if ((Atomics.load(m, L.hpte + (r << 9)) & HPTE_HUGE) !== 0) splitHugePage(kvm, actor, r, scratch);
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
    scratch[i] = (v & HPTE_PRESENT) !== 0 ? v & HPTE_FRAME_MASK : 0;
  }
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, npages);
  for (let i = 0; i < npages; i++) if (scratch[i] !== 0) putPage(kvm, actor, scratch[i]);
  kvm.count(actor, CNT.zaps);
  kvm.trace(actor, EV['host.zap'], gfn, npages);
  return true;
}
