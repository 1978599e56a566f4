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
import { stage2WpRange, unmapStage2Range } from './pgtable.js';
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
  const words = Math.ceil(m[slotWord(kvm, slot, SLOTW.NPAGES)] / 32);
  for (let i = 0; i < words; i++) Atomics.store(m, bitmap + i, 0);
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
    if (!kvm.proto.noWpOnEnable) kvmMmuWpMemoryRegion(kvm, actor, slot);
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
