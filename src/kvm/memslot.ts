/**
 * Memslots, the dirty bitmap, and the three memslot-level operations of dirty
 * logging: turning it on (KVM_MEM_LOG_DIRTY_PAGES set), harvesting
 * (KVM_GET_DIRTY_LOG) and turning it off (migration cancelled).
 *
 * A slot's flags word is what the kernel's memslot pointer stands for: an
 * update builds the new value and publishes it with one store, then waits
 * for an SRCU grace period before acting on it (__kvm_set_memory_region ->
 * install_new_memslots -> synchronize_srcu -> kvm_arch_commit_memory_region).
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { MAX_MEMSLOTS, SLOT_WORDS } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { LS } from '../sync/locksites.js';
import { synchronizeSrcu } from '../sync/srcu.js';
import { kvmMmuSplitHugePages, splitCacheCount, splitCacheFree, stage2WpRange, unmapStage2Range } from './pgtable.js';
import { kvmFlushRemoteTlbs } from './tlb.js';
import { CNT, EV } from '../check/names.js';
import { markPageDirtyInSlotRing } from './dirtyring.js';

export const SLOTW = {
  BASE_GFN: 0,
  NPAGES: 1,
  HVA_BASE: 2,
  FLAGS: 3,
  /** LOG_OFF / LOG_ENABLING / LOG_ON / LOG_DISABLING, for the checks. */
  LOG_STATE: 4,
  /** Word index of the slot's dirty bitmap. */
  BITMAP: 5,
  ACTIVE: 6,
  /** The slot holds device memory (never logged, never migrated). */
  DEVICE: 7,
} as const;

export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
/** memslot->dirty_bitmap != NULL */
export const SLOT_HAS_DIRTY_BITMAP = 1 << 8;
/** KVM_MEMSLOT_INVALID: the slot is being deleted; notifiers still see it, faults do not. */
export const KVM_MEMSLOT_INVALID = 1 << 16;

export const LOG_OFF = 0;
/** Published, grace period or write-protect still to come. */
export const LOG_ENABLING = 1;
/** Logging-on returned: from here `no-block-while-logging` holds. */
export const LOG_ON = 2;
export const LOG_DISABLING = 3;

export function slotWord(kvm: Kvm, slot: number, w: number): number {
  return kvm.layout.slots + slot * SLOT_WORDS + w;
}

export function initMemslot(kvm: Kvm, slot: number, baseGfn: number, npages: number, bitmap: number, device: boolean): void {
  const m = kvm.m;
  m[slotWord(kvm, slot, SLOTW.BASE_GFN)] = baseGfn;
  m[slotWord(kvm, slot, SLOTW.NPAGES)] = npages;
  m[slotWord(kvm, slot, SLOTW.HVA_BASE)] = baseGfn;
  m[slotWord(kvm, slot, SLOTW.FLAGS)] = 0;
  m[slotWord(kvm, slot, SLOTW.LOG_STATE)] = LOG_OFF;
  m[slotWord(kvm, slot, SLOTW.BITMAP)] = bitmap;
  m[slotWord(kvm, slot, SLOTW.DEVICE)] = device ? 1 : 0;
  m[slotWord(kvm, slot, SLOTW.ACTIVE)] = 1;
}

/**
 * gfn_to_memslot(): the slot holding gfn, or -1. A slot being deleted
 * (KVM_MEMSLOT_INVALID) counts as none, as __gfn_to_hva_many() makes it
 * for the fault path (an MMIO exit).
 */
export function gfnToMemslot(kvm: Kvm, gfn: number): number {
  const m = kvm.m;
  for (let s = 0; s < MAX_MEMSLOTS; s++) {
    const base = kvm.layout.slots + s * SLOT_WORDS;
    if (m[base + SLOTW.ACTIVE] === 0 || (m[base + SLOTW.FLAGS] & KVM_MEMSLOT_INVALID) !== 0) continue;
    const b = m[base + SLOTW.BASE_GFN];
    if (gfn >= b && gfn < b + m[base + SLOTW.NPAGES]) return s;
  }
  return -1;
}

export function slotFlags(kvm: Kvm, slot: number): number {
  return Atomics.load(kvm.m, slotWord(kvm, slot, SLOTW.FLAGS));
}

/** memslot_is_logging() (v15 on): a dirty bitmap and not read-only. */
export function memslotIsLogging(flags: number): boolean {
  return (flags & SLOT_HAS_DIRTY_BITMAP) !== 0 && (flags & KVM_MEM_READONLY) === 0;
}

/** kvm_get_logging_state() of the v14 seed: `!!memslot->dirty_bitmap`. */
export function kvmGetLoggingState(flags: number): boolean {
  return (flags & SLOT_HAS_DIRTY_BITMAP) !== 0;
}

/**
 * mark_page_dirty(kvm, gfn): looks the slot up afresh (it may be newer than
 * the one the fault started with) and sets the bit if it has a bitmap.
 */
export function markPageDirty(kvm: Kvm, actor: Actor, gfn: number): void {
  const slot = gfnToMemslot(kvm, gfn);
  if (slot < 0) return;
  actor.sched.point(SITE['dirty.mark']);
  const flags = slotFlags(kvm, slot);
  if (kvm.layout.dirtyRingSize !== 0) return markPageDirtyInSlotRing(kvm, actor, slot, flags, gfn); // src/kvm/dirtyring.ts
  if ((flags & SLOT_HAS_DIRTY_BITMAP) === 0) return;
  const rel = gfn - kvm.m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  Atomics.or(kvm.m, kvm.m[slotWord(kvm, slot, SLOTW.BITMAP)] + (rel >>> 5), 1 << (rel & 31));
  kvm.count(actor, CNT.dirtyMarked);
  kvm.trace(actor, EV['dirty.mark'], gfn);
}

/**
 * kvm_mmu_wp_memory_region(): write-protect every present PMD block and PTE
 * of the slot under mmu_lock, then flush the whole VM's TLBs.
 */
export function kvmMmuWpMemoryRegion(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  const start = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const end = start + m[slotWord(kvm, slot, SLOTW.NPAGES)];
  // write_lock(&kvm->mmu_lock); the wp-under-read-lock bug takes the read side.
  const read = kvm.proto.wpUnderReadLock;
  if (read) kvm.mmuLock.readLock(actor, LS['wp-enable']);
  else kvm.mmuLock.lock(actor, LS['wp-enable']);
  stage2WpRange(kvm, actor, start, end);
  if (read) kvm.mmuReadUnlock(actor);
  else kvm.mmuLock.unlock(actor);
  kvmFlushRemoteTlbs(kvm, actor);
}

/**
 * Turn dirty logging on for a slot (KVM_SET_USER_MEMORY_REGION with
 * KVM_MEM_LOG_DIRTY_PAGES): allocate the bitmap, publish, wait for the grace
 * period, then write-protect (kvm_arch_commit_memory_region).
 */
export function kvmEnableDirtyLogging(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  kvm.slotsLock.lock(actor, LS.other);
  const bitmap = m[slotWord(kvm, slot, SLOTW.BITMAP)];
  const npages = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const words = Math.ceil(npages / 32);
  // kvm_alloc_dirty_bitmap(); with KVM_DIRTY_LOG_INITIALLY_SET
  // (kvm_dirty_log_manual_protect_and_init_set) kvm_prepare_memory_region()
  // then does bitmap_set(new->dirty_bitmap, 0, new->npages): all ones.
  const initSet = kvmDirtyLogManualProtectAndInitSet(kvm);
  for (let i = 0; i < words; i++) Atomics.store(m, bitmap + i, initSet ? bitmapWordAllSet(npages, i) : 0);
  const cleared = clearedWord(kvm, slot, 0);
  for (let i = 0; i < words; i++) Atomics.store(m, cleared + i, 0);
  const flags = slotFlags(kvm, slot);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.LOG_STATE), LOG_ENABLING);
  actor.sched.point(SITE['memslot.publish']);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.FLAGS), flags | KVM_MEM_LOG_DIRTY_PAGES | SLOT_HAS_DIRTY_BITMAP);
  kvm.trace(actor, EV['log.on'], slot);
  actor.sched.point(SITE['memslot.published']); // faults that read the old slot are still running
  if (kvm.proto.wpBeforeGrace) {
    if (!kvm.proto.noWpOnEnable) kvmMmuWpMemoryRegion(kvm, actor, slot);
    synchronizeSrcu(kvm, actor);
  } else {
    synchronizeSrcu(kvm, actor);
    // kvm_arch_commit_memory_region(): with KVM_DIRTY_LOG_INITIALLY_SET
    // nothing is write-protected (nor split) here: CLEAR does it range by
    // range. Otherwise write-protect, then (6.5) kvm_mmu_split_memory_region().
    if (!initSet) {
      if (!kvm.proto.noWpOnEnable) kvmMmuWpMemoryRegion(kvm, actor, slot);
      if ((kvm.cfg.eagerSplitChunk ?? 0) > 0) kvmMmuSplitMemoryRegion(kvm, actor, slot);
    }
  }
  Atomics.store(m, slotWord(kvm, slot, SLOTW.LOG_STATE), LOG_ON);
  kvm.count(actor, CNT.loggingOn);
  kvm.slotsLock.unlock(actor);
}

/**
 * Turn dirty logging off (migration cancelled): publish the slot without the
 * flag and without a bitmap, wait for the grace period, free the bitmap.
 * Nothing is remapped eagerly; blocks come back on later faults.
 */
export function kvmDisableDirtyLogging(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  kvm.slotsLock.lock(actor, LS.other);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.LOG_STATE), LOG_DISABLING);
  const flags = slotFlags(kvm, slot);
  actor.sched.point(SITE['memslot.publish']);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.FLAGS), flags & ~(KVM_MEM_LOG_DIRTY_PAGES | SLOT_HAS_DIRTY_BITMAP));
  kvm.trace(actor, EV['log.off'], slot);
  actor.sched.point(SITE['memslot.published']);
  synchronizeSrcu(kvm, actor);
  // kvm_arch_commit_memory_region() with logging off (6.5): "Free any
  // leftovers from the eager page splitting cache"; the split-cache-leak bug
  // keeps them.
  if (splitCacheCount(kvm) > 0 && !kvm.proto.splitCacheLeak) splitCacheFree(kvm, actor);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.LOG_STATE), LOG_OFF);
  kvm.count(actor, CNT.loggingOff);
  kvm.slotsLock.unlock(actor);
}

function ctz32(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/**
 * KVM_GET_DIRTY_LOG (kvm_get_dirty_log_protect): under mmu_lock, for each
 * non-zero bitmap word, exchange it with 0, keep the old value in the
 * snapshot and write-protect the span from its lowest to its highest set bit
 * (kvm_mmu_write_protect_pt_masked). Then, if anything was dirty, flush the
 * whole VM's TLBs. Returns the number of dirty pages in the snapshot.
 */
export function kvmGetDirtyLog(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array): number {
  const m = kvm.m;
  kvm.slotsLock.lock(actor, LS.other);
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const bitmap = m[slotWord(kvm, slot, SLOTW.BITMAP)];
  const words = Math.ceil(m[slotWord(kvm, slot, SLOTW.NPAGES)] / 32);
  let dirty = 0;
  let isDirty = false;
  actor.sched.point(SITE['dirty.harvest']);
  kvm.mmuLock.lock(actor, LS.harvest);
  for (let i = 0; i < words; i++) {
    if (Atomics.load(m, bitmap + i) === 0) {
      snapshot[i] = 0;
      continue;
    }
    isDirty = true;
    const mask = Atomics.exchange(m, bitmap + i, 0);
    snapshot[i] = mask;
    if (mask !== 0) {
      dirty += popcount32(mask);
      if (!kvm.proto.harvestNoWp) {
        const start = base + i * 32 + ctz32(mask);
        // __fls(mask) + 1; the harvest-wp-short bug stops one page early
        const end = base + i * 32 + (31 - Math.clz32(mask)) + (kvm.proto.harvestWpShort ? 0 : 1);
        stage2WpRange(kvm, actor, start, end);
      }
    }
  }
  kvm.mmuLock.unlock(actor);
  if (isDirty && !kvm.proto.harvestNoFlush) kvmFlushRemoteTlbs(kvm, actor);
  kvm.count(actor, CNT.harvests);
  kvm.trace(actor, EV.harvest, slot, dirty);
  kvm.slotsLock.unlock(actor);
  return dirty;
}

export function popcount32(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/**
 * kvm_arch_flush_shadow_memslot(): unmap the slot's IPA range under
 * mmu_lock (unmap_stage2_range drops the lock every 1 GiB from 4.11).
 */
export function kvmArchFlushShadowMemslot(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const npages = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  kvm.mmuLock.lock(actor, LS.other);
  unmapStage2Range(kvm, actor, base, npages);
  kvm.mmuLock.unlock(actor);
}

/**
 * KVM_SET_USER_MEMORY_REGION with memory_size 0 (KVM_MR_DELETE), as
 * __kvm_set_memory_region() does it: the slot is marked
 * KVM_MEMSLOT_INVALID and the memslots published, a grace period lets every
 * fault that saw the slot finish (install_new_memslots -> synchronize_srcu),
 * then kvm_arch_flush_shadow_memslot() unmaps it, and the memslots without
 * it are published (another grace period). While it is invalid the MMU
 * notifiers still unmap its range; a fault finds no slot: an MMIO exit for
 * the kernel (-EFAULT in the model), and the guest re-executes until the
 * slot is back. The dirty bitmap goes with the slot. The slot's geometry
 * words stay for kvmCreateMemslot().
 */
export function kvmDeleteMemslot(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  kvm.slotsLock.lock(actor, LS.other);
  const flags = slotFlags(kvm, slot);
  actor.sched.point(SITE['memslot.publish']);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.FLAGS), flags | KVM_MEMSLOT_INVALID);
  kvm.trace(actor, EV['memslot.delete'], slot);
  synchronizeSrcu(kvm, actor);
  kvmArchFlushShadowMemslot(kvm, actor, slot);
  actor.sched.point(SITE['memslot.publish']);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.ACTIVE), 0);
  synchronizeSrcu(kvm, actor);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.FLAGS), 0);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.LOG_STATE), LOG_OFF);
  kvm.count(actor, CNT.memslotDeletes);
  kvm.slotsLock.unlock(actor);
}

/**
 * KVM_SET_USER_MEMORY_REGION (KVM_MR_CREATE) of the slot with the geometry
 * it had, logging off: publish, then the grace period install_new_memslots()
 * always waits for. Faults map it again on demand.
 */
export function kvmCreateMemslot(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  kvm.slotsLock.lock(actor, LS.other);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.FLAGS), 0);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.LOG_STATE), LOG_OFF);
  actor.sched.point(SITE['memslot.publish']);
  Atomics.store(m, slotWord(kvm, slot, SLOTW.ACTIVE), 1);
  kvm.trace(actor, EV['memslot.create'], slot);
  synchronizeSrcu(kvm, actor);
  kvm.slotsLock.unlock(actor);
}

// ------------------------------------ manual-protect dirty logging (5.0 on)

/** kvm->manual_dirty_log_protect: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled. */
export function kvmManualDirtyLogProtect(kvm: Kvm): boolean {
  return (kvm.cfg.manualProtect ?? 'off') !== 'off';
}

/**
 * kvm_dirty_log_manual_protect_and_init_set(): manual protect with
 * KVM_DIRTY_LOG_INITIALLY_SET.
 */
export function kvmDirtyLogManualProtectAndInitSet(kvm: Kvm): boolean {
  return kvm.cfg.manualProtect === 'initially-set';
}

/** Bitmap word i of a slot of npages pages with every page's bit set. */
function bitmapWordAllSet(npages: number, i: number): number {
  const left = npages - i * 32;
  return left >= 32 ? -1 : (1 << left) - 1;
}

/** Word index of the cleared-since-logging-on bits of `slot`, word i (laid out as its dirty bitmap). */
export function clearedWord(kvm: Kvm, slot: number, i: number): number {
  return kvm.layout.clearedBitmap + (kvm.m[slotWord(kvm, slot, SLOTW.BITMAP)] - kvm.layout.bitmaps) + i;
}

/**
 * Whether a KVM_CLEAR_DIRTY_LOG write-protected any page of [gfn, end) of
 * `slot` since logging went on. Without INITIALLY_SET every page counts as
 * write-protected (logging-on did it).
 */
export function rangeWriteProtectedSinceLogging(kvm: Kvm, slot: number, gfn: number, end: number): boolean {
  if (!kvmDirtyLogManualProtectAndInitSet(kvm)) return true;
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const lo = Math.max(gfn, base) - base;
  const hi = Math.min(end, base + n) - base;
  for (let i = lo; i < hi; i++) if ((Atomics.load(m, clearedWord(kvm, slot, i >>> 5)) >>> (i & 31)) & 1) return true;
  return false;
}

/**
 * kvm_mmu_split_memory_region() (arch/arm64/kvm/mmu.c, 6.5): split the
 * slot's blocks under the write side of mmu_lock (kvm_mmu_split_huge_pages
 * drops it between chunks).
 */
export function kvmMmuSplitMemoryRegion(kvm: Kvm, actor: Actor, slot: number): void {
  const m = kvm.m;
  const start = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const end = start + m[slotWord(kvm, slot, SLOTW.NPAGES)];
  kvm.mmuLock.lock(actor, LS['wp-enable']);
  kvmMmuSplitHugePages(kvm, actor, start, end);
  kvm.mmuLock.unlock(actor);
}

/**
 * KVM_GET_DIRTY_LOG with manual protect (kvm_get_dirty_log_protect, the
 * `kvm->manual_dirty_log_protect` branch): copy the bitmap to userspace as
 * it is; nothing is cleared, write-protected or flushed (that is
 * KVM_CLEAR_DIRTY_LOG's job). Returns the number of dirty pages.
 */
export function kvmGetDirtyLogManual(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array): number {
  const m = kvm.m;
  kvm.slotsLock.lock(actor, LS.other);
  const bitmap = m[slotWord(kvm, slot, SLOTW.BITMAP)];
  const words = Math.ceil(m[slotWord(kvm, slot, SLOTW.NPAGES)] / 32);
  actor.sched.point(SITE['dirty.harvest']);
  let dirty = 0;
  for (let i = 0; i < words; i++) {
    const w = Atomics.load(m, bitmap + i);
    snapshot[i] = w;
    if (w !== 0) dirty += popcount32(w);
  }
  kvm.count(actor, CNT.harvests);
  kvm.trace(actor, EV.harvest, slot, dirty);
  kvm.slotsLock.unlock(actor);
  return dirty;
}

/**
 * kvm_arch_mmu_enable_log_dirty_pt_masked() (arch/arm64/kvm/mmu.c; the
 * 2014 line's kvm_mmu_write_protect_pt_masked): write-protect the pages of
 * the mask, from its lowest to its highest set bit (stage2_wp_range); with
 * INITIALLY_SET (6.5) also kvm_mmu_split_huge_pages() on that range, where
 * eager splitting was not done at logging-on. Caller holds the write side
 * of mmu_lock. The initially-set-skips-wp bug leaves the pages writable.
 */
export function kvmArchMmuEnableLogDirtyPtMasked(kvm: Kvm, actor: Actor, slot: number, gfnOffset: number, mask: number): void {
  const base = kvm.m[slotWord(kvm, slot, SLOTW.BASE_GFN)] + gfnOffset;
  const start = base + ctz32(mask);
  const end = base + (31 - Math.clz32(mask)) + 1;
  const initSet = kvmDirtyLogManualProtectAndInitSet(kvm);
  if (!(initSet && kvm.proto.initiallySetSkipsWp)) stage2WpRange(kvm, actor, start, end);
  if (initSet) kvmMmuSplitHugePages(kvm, actor, start, end);
}

/** -EINVAL of KVM_CLEAR_DIRTY_LOG: a range the ioctl refuses. */
export class ClearDirtyLogError extends Error {}

/**
 * KVM_CLEAR_DIRTY_LOG (kvm_clear_dirty_log_protect): for the 64-page
 * aligned range [first, first + num) of the slot (num a multiple of 64
 * unless it reaches the slot's end, else -EINVAL), under the write side of
 * mmu_lock taken once for the call: for each bitmap word, clear the bits of
 * `mask` (the userspace bitmap, indexed from the slot's start) that are
 * set (atomic_long_fetch_andnot) and write-protect those pages
 * (kvm_arch_mmu_enable_log_dirty_pt_masked); after the unlock, if anything
 * was cleared, flush the VM's TLBs (kvm_flush_remote_tlbs_memslot). The
 * clear-no-flush bug skips the flush. Under slots_lock, as
 * kvm_vm_ioctl_clear_dirty_log() takes it. Returns the pages cleared.
 */
export function kvmClearDirtyLog(kvm: Kvm, actor: Actor, slot: number, first: number, num: number, mask: Int32Array): number {
  const m = kvm.m;
  const npages = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  if (first % 64 !== 0) throw new ClearDirtyLogError(`KVM_CLEAR_DIRTY_LOG: first_page ${first} is not a multiple of 64 (-EINVAL)`);
  if (first > npages || num > npages - first || (num < npages - first && num % 64 !== 0)) {
    throw new ClearDirtyLogError(`KVM_CLEAR_DIRTY_LOG: pages ${first}+${num} of a ${npages}-page slot (-EINVAL)`);
  }
  kvm.slotsLock.lock(actor, LS.other);
  const bitmap = m[slotWord(kvm, slot, SLOTW.BITMAP)];
  let flush = false;
  let cleared = 0;
  actor.sched.point(SITE['dirty.harvest']);
  kvm.mmuLock.lock(actor, LS.harvest);
  for (let i = first >>> 5, n = Math.ceil(num / 32); n > 0; n--, i++) {
    let bits = mask[i];
    if (bits === 0) continue;
    bits &= Atomics.and(m, bitmap + i, ~bits);
    if (bits === 0) continue;
    flush = true;
    cleared += popcount32(bits);
    // For the checks: the span the arch code write-protects from here on.
    const lo = ctz32(bits);
    const hi = 31 - Math.clz32(bits);
    Atomics.or(m, clearedWord(kvm, slot, i), hi === 31 ? ~((1 << lo) - 1) : ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1));
    kvmArchMmuEnableLogDirtyPtMasked(kvm, actor, slot, i * 32, bits);
  }
  kvm.mmuLock.unlock(actor);
  if (flush && !kvm.proto.clearNoFlush) kvmFlushRemoteTlbs(kvm, actor);
  kvm.count(actor, CNT.dirtyLogClears);
  kvm.trace(actor, EV['log.clear'], first, num, cleared);
  kvm.slotsLock.unlock(actor);
  return cleared;
}
