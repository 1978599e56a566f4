/**
 * The dirty ring (`--dirty-log ring`, arm64 from Linux 6.2): a ring of
 * dirtied gfns per vCPU in memory userspace maps, with the acquire/release
 * protocol of KVM_CAP_DIRTY_LOG_RING_ACQ_REL, and the backup bitmap of
 * KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP for pages dirtied without a running
 * vCPU (the vgic/ITS table saves arm64 needs it for).
 *
 * Kernel side (virt/kvm/dirty_ring.c, virt/kvm/kvm_main.c):
 * - kvm_dirty_ring_push(): write the entry's slot and offset, then set its
 *   DIRTY flag (smp_wmb(): a release); past the soft limit
 *   (size - KVM_DIRTY_RING_RSVD_ENTRIES) request KVM_REQ_DIRTY_RING_SOFT_FULL.
 * - kvm_dirty_ring_check_request(): before re-entering the guest, a vCPU
 *   whose ring is soft-full exits with KVM_EXIT_DIRTY_RING_FULL; it cannot
 *   run again until userspace has collected and reset its ring.
 * - kvm_vm_ioctl_reset_dirty_pages() / kvm_dirty_ring_reset(): under
 *   slots_lock, walk each ring from reset_index over the entries userspace
 *   marked RESET, coalesce neighbours into a mask, and write-protect them
 *   (kvm_reset_dirty_gfn -> kvm_arch_mmu_enable_log_dirty_pt_masked under
 *   the write side of mmu_lock); then flush the TLBs.
 *
 * Userspace side (QEMU's kvm_dirty_ring_reap_one(), dirty_log_test.c's
 * dirty_ring_collect_one()): from its fetch index, read DIRTY (acquire),
 * then slot and offset, then store RESET (release).
 *
 * Atomics are sequentially consistent, stronger than release/acquire: the
 * model keeps the order of the stores and puts a scheduling point between
 * the entry's data and its flag, so that a push that publishes too early
 * (the `ring-publish-before-offset` defect) is seen by a collector.
 *
 * The model's masks are 32 bits wide (BITS_PER_LONG is 64 in the kernel),
 * as its dirty-bitmap words are.
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { CTRL, MAX_MEMSLOTS, N_COUNTERS, RING, RING_ENTRY_WORDS, RING_HDR_WORDS, KVM_DIRTY_GFN_F_DIRTY, KVM_DIRTY_GFN_F_RESET } from '../shm/layout.js';
import { KVM_DIRTY_RING_RSVD_ENTRIES } from '../config.js';
import { SITE } from '../sync/sites.js';
import { LS } from '../sync/locksites.js';
import { CNT, EV, INV } from '../check/names.js';
import { KVM_MEM_LOG_DIRTY_PAGES, SLOT_HAS_DIRTY_BITMAP, SLOTW, markPageDirty, slotWord } from './memslot.js';
import { KBUG, stage2WpRange } from './pgtable.js';
import { kvmFlushRemoteTlbs } from './tlb.js';
import { hpteLock, hpteUnlock, HPTE_FRAME_MASK, HPTE_MIGRATING, HPTE_PRESENT, HPTE_WRITE } from '../mm/hostpt.js';
import { gfnToPfnProt } from '../mm/hostfault.js';
import { putPage } from '../mm/frames.js';
import { bumpControl, safePoint } from '../actors/control.js';

/** Entry words: struct kvm_dirty_gfn. */
export const RE = { FLAGS: 0, SLOT: 1, OFFSET: 2 } as const;

/**
 * The vgic/ITS tables the host saves into guest RAM (vgic_its_save_tables_v0,
 * vgic_v3_save_pending_tables): the last ITS_TABLE_PAGES pages of RAM. In
 * ring mode the guest leaves them to the host (no vCPU writes there).
 */
export const ITS_TABLE_PAGES = 4;

/** True when the run logs with dirty rings. */
export function dirtyRingEnabled(kvm: Kvm): boolean {
  return kvm.layout.dirtyRingSize !== 0;
}

/** First gfn of the ITS tables (ring mode). */
export function itsTableGfn(kvm: Kvm): number {
  return kvm.layout.ramPages - ITS_TABLE_PAGES;
}

export function ringBase(kvm: Kvm, vcpuId: number): number {
  return kvm.layout.dirtyRings + vcpuId * kvm.layout.dirtyRingWords;
}

/** &ring->dirty_gfns[index & (ring->size - 1)] */
export function ringEntry(kvm: Kvm, base: number, index: number): number {
  return base + RING_HDR_WORDS + (index & (kvm.layout.dirtyRingSize - 1)) * RING_ENTRY_WORDS;
}

/**
 * For the checks: whether a vCPU's ring holds an entry for (slot, offset)
 * not yet reset by KVM_RESET_DIRTY_RINGS (between reset_index and
 * dirty_index, whether userspace collected it or not): in ring mode that is
 * what "the page is dirty" means, the bitmap being the backup one.
 */
export function dirtyRingHoldsPage(kvm: Kvm, slot: number, offset: number): boolean {
  const m = kvm.m;
  for (let v = 0; v < kvm.layout.vcpus; v++) {
    const b = ringBase(kvm, v);
    const end = Atomics.load(m, b + RING.DIRTY_INDEX);
    for (let i = Atomics.load(m, b + RING.RESET_INDEX); i !== end; i = (i + 1) | 0) {
      const e = ringEntry(kvm, b, i);
      if (Atomics.load(m, e + RE.SLOT) === slot && Atomics.load(m, e + RE.OFFSET) === offset) return true;
    }
  }
  return false;
}

/** kvm_dirty_ring_used() */
export function kvmDirtyRingUsed(kvm: Kvm, vcpuId: number): number {
  const b = ringBase(kvm, vcpuId);
  return (Atomics.load(kvm.m, b + RING.DIRTY_INDEX) - Atomics.load(kvm.m, b + RING.RESET_INDEX)) >>> 0;
}

/** ring->soft_limit: size - kvm_dirty_ring_get_rsvd_entries() (arm64: KVM_DIRTY_RING_RSVD_ENTRIES). */
export function kvmDirtyRingSoftLimit(kvm: Kvm): number {
  return kvm.layout.dirtyRingSize - KVM_DIRTY_RING_RSVD_ENTRIES;
}

/** kvm_dirty_ring_soft_full() */
export function kvmDirtyRingSoftFull(kvm: Kvm, vcpuId: number): boolean {
  return kvmDirtyRingUsed(kvm, vcpuId) >= kvmDirtyRingSoftLimit(kvm);
}

/**
 * mark_page_dirty_in_slot() with a dirty ring: with a running vCPU push to
 * its ring (kvm_get_running_vcpu(); the model's vCPUs are actors 0 ..
 * vcpus-1), else set the bit in the slot's backup bitmap
 * (kvm->dirty_ring_with_bitmap), which only a vgic table save may do
 * (kvm_arch_allow_write_without_running_vcpu(): dist->table_write_in_progress).
 */
export function markPageDirtyInSlotRing(kvm: Kvm, actor: Actor, slot: number, flags: number, gfn: number): void {
  // kvm_slot_dirty_track_enabled()
  if ((flags & KVM_MEM_LOG_DIRTY_PAGES) === 0) return;
  const m = kvm.m;
  const rel = gfn - m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  if (actor.id < kvm.layout.vcpus) {
    kvmDirtyRingPush(kvm, actor, slot, rel, gfn);
    return;
  }
  if (Atomics.load(m, CTRL.VGIC_TABLE_WRITE) === 0) kvm.violation(INV['kernel-bug'], actor.id, KBUG.WRITE_WITHOUT_VCPU, gfn);
  if ((flags & SLOT_HAS_DIRTY_BITMAP) === 0) return;
  Atomics.or(m, m[slotWord(kvm, slot, SLOTW.BITMAP)] + (rel >>> 5), 1 << (rel & 31));
  kvm.count(actor, CNT.backupBitmapMarks);
  kvm.count(actor, CNT.dirtyMarked);
  kvm.trace(actor, EV['dirty.mark'], gfn, 1);
}

/**
 * kvm_dirty_ring_push() (6.2, with the soft-full request of
 * KVM_REQ_DIRTY_RING_SOFT_FULL): fill the entry at dirty_index, publish it
 * (DIRTY after slot and offset: smp_wmb(), a release), advance
 * dirty_index. A push into a full ring is the kernel's WARN_ON_ONCE (it
 * writes over an entry userspace has not given back).
 */
export function kvmDirtyRingPush(kvm: Kvm, vcpu: Actor, slot: number, offset: number, gfn: number): void {
  const m = kvm.m;
  const b = ringBase(kvm, vcpu.id);
  const di = m[b + RING.DIRTY_INDEX]; // only this vCPU writes it
  if (((di - Atomics.load(m, b + RING.RESET_INDEX)) >>> 0) >= kvm.layout.dirtyRingSize) {
    kvm.violation(INV['kernel-bug'], vcpu.id, KBUG.DIRTY_RING_FULL, vcpu.id, di, gfn);
  }
  const e = ringEntry(kvm, b, di);
  if (kvm.proto.ringPublishBeforeOffset) {
    // The defect: the flag first; a collector between the two sees stale data.
    Atomics.store(m, e + RE.FLAGS, KVM_DIRTY_GFN_F_DIRTY);
    vcpu.sched.point(SITE['ring.push']);
    Atomics.store(m, e + RE.SLOT, slot);
    Atomics.store(m, e + RE.OFFSET, offset);
  } else {
    Atomics.store(m, e + RE.SLOT, slot);
    Atomics.store(m, e + RE.OFFSET, offset);
    vcpu.sched.point(SITE['ring.push']);
    // smp_wmb(); kvm_dirty_gfn_set_dirtied(entry)
    Atomics.store(m, e + RE.FLAGS, KVM_DIRTY_GFN_F_DIRTY);
  }
  Atomics.store(m, b + RING.DIRTY_INDEX, (di + 1) | 0);
  kvm.count(vcpu, CNT.ringPushes);
  kvm.count(vcpu, CNT.dirtyMarked);
  kvm.trace(vcpu, EV['ring.push'], gfn, di);
  // if (kvm_dirty_ring_soft_full(ring)) kvm_make_request(KVM_REQ_DIRTY_RING_SOFT_FULL, vcpu)
  if (kvmDirtyRingSoftFull(kvm, vcpu.id)) Atomics.store(m, b + RING.SOFT_FULL_REQ, 1);
}

/**
 * kvm_dirty_ring_check_request(), from the vCPU's run loop before it
 * re-enters the guest: true when the vCPU must exit with
 * KVM_EXIT_DIRTY_RING_FULL (the request stays pending until the ring is no
 * longer soft-full). The `ring-full-no-exit` defect never exits.
 */
export function kvmDirtyRingCheckRequest(kvm: Kvm, vcpu: Actor): boolean {
  const m = kvm.m;
  const b = ringBase(kvm, vcpu.id);
  if (Atomics.load(m, b + RING.SOFT_FULL_REQ) === 0) return false;
  if (kvm.proto.ringFullNoExit) return false;
  if (!kvmDirtyRingSoftFull(kvm, vcpu.id)) {
    Atomics.store(m, b + RING.SOFT_FULL_REQ, 0); // kvm_check_request() consumed it
    return false;
  }
  Atomics.add(m, b + RING.FULL_EXITS, 1);
  kvm.count(vcpu, CNT.ringFullExits);
  kvm.trace(vcpu, EV['ring.full'], vcpu.id, kvmDirtyRingUsed(kvm, vcpu.id));
  return true;
}

/**
 * The vCPU thread after KVM_EXIT_DIRTY_RING_FULL (QEMU's kvm_cpu_exec():
 * kick the reaper and wait; dirty_log_test's vcpu_worker(): tell the main
 * thread and wait): until the ring is no longer soft-full it waits on the
 * control word, which KVM_RESET_DIRTY_RINGS bumps, as do stop-the-world,
 * stop-and-copy and the end of the run (a waiting vCPU parks and pauses
 * like one at its safe point: it is outside KVM_RUN). `gfn` is the access
 * the guest re-executes afterwards (dirty_log_test's dirty_ring_last_page).
 * Returns false when the run ended.
 */
export function dirtyRingFullWait(kvm: Kvm, vcpu: Actor, gfn: number): boolean {
  const m = kvm.m;
  const b = ringBase(kvm, vcpu.id);
  Atomics.store(m, b + RING.LAST_PAGE, gfn + 1);
  bumpControl(m); // kick the collector
  let ok = true;
  for (;;) {
    const gen = Atomics.load(m, CTRL.CONTROL_GEN);
    if (!safePoint(kvm, vcpu, true)) {
      ok = false;
      break;
    }
    if (!kvmDirtyRingSoftFull(kvm, vcpu.id)) break;
    vcpu.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['ring.full']);
  }
  Atomics.store(m, b + RING.LAST_PAGE, 0);
  return ok;
}

/** True if some vCPU waits after a ring-full exit (for the collector's loops). */
export function anyRingWaiting(kvm: Kvm): boolean {
  for (let v = 0; v < kvm.layout.vcpus; v++) if (Atomics.load(kvm.m, ringBase(kvm, v) + RING.LAST_PAGE) !== 0) return true;
  return false;
}

/**
 * Userspace's collector for one vCPU's ring (QEMU kvm_dirty_ring_reap_one(),
 * dirty_log_test.c dirty_ring_collect_one()): from the fetch index, while
 * the entry's flags say DIRTY (load-acquire), read slot and offset, set the
 * page's bit in `snapshot` (pages of `slot`; an offset outside it is
 * ignored, as QEMU's kvm_dirty_ring_mark_page does), and hand the entry
 * back with RESET (store-release). Returns the number collected.
 */
export function dirtyRingCollectOne(kvm: Kvm, actor: Actor, vcpuId: number, slot: number, snapshot: Int32Array): number {
  const m = kvm.m;
  const b = ringBase(kvm, vcpuId);
  const npages = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  let fetch = Atomics.load(m, b + RING.FETCH_INDEX);
  let n = 0;
  for (;;) {
    const e = ringEntry(kvm, b, fetch);
    // dirty_gfn_is_dirtied(): smp_load_acquire(&gfn->flags) & KVM_DIRTY_GFN_F_DIRTY
    if ((Atomics.load(m, e + RE.FLAGS) & KVM_DIRTY_GFN_F_DIRTY) === 0) break;
    actor.sched.point(SITE['ring.harvest']);
    const s = Atomics.load(m, e + RE.SLOT);
    const off = Atomics.load(m, e + RE.OFFSET);
    if (s === slot && off >= 0 && off < npages) snapshot[off >>> 5] |= 1 << (off & 31);
    // dirty_gfn_set_collected(): smp_store_release(&gfn->flags, KVM_DIRTY_GFN_F_RESET)
    Atomics.store(m, e + RE.FLAGS, KVM_DIRTY_GFN_F_RESET);
    fetch = (fetch + 1) | 0;
    n++;
  }
  Atomics.store(m, b + RING.FETCH_INDEX, fetch);
  if (n > 0) kvm.count(actor, CNT.ringHarvested, n);
  return n;
}

/** Collect every vCPU's ring into `snapshot` (cleared first): pages of `slot` dirtied since the last collection. */
export function dirtyRingCollectAll(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array): number {
  snapshot.fill(0);
  let n = 0;
  for (let v = 0; v < kvm.layout.vcpus; v++) n += dirtyRingCollectOne(kvm, actor, v, slot, snapshot);
  kvm.trace(actor, EV['ring.harvest'], slot, n);
  return n;
}

function ctz32(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/**
 * kvm_reset_dirty_gfn() -> kvm_arch_mmu_enable_log_dirty_pt_masked() (arm64:
 * kvm_mmu_write_protect_pt_masked(), stage2_wp_range from __ffs(mask) to
 * __fls(mask) + 1) under the write side of mmu_lock. The
 * `ring-reset-no-wp` defect leaves the pages writable.
 */
export function kvmResetDirtyGfn(kvm: Kvm, actor: Actor, slot: number, offset: number, mask: number): void {
  if (mask === 0) return;
  const m = kvm.m;
  if (slot < 0 || slot >= MAX_MEMSLOTS || m[slotWord(kvm, slot, SLOTW.ACTIVE)] === 0) return;
  const npages = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const fls = 31 - Math.clz32(mask);
  if (offset + fls >= npages) return;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)] + offset;
  kvm.mmuLock.lock(actor, LS.harvest);
  if (!kvm.proto.ringResetNoWp) stage2WpRange(kvm, actor, base + ctz32(mask), base + fls + 1);
  kvm.mmuLock.unlock(actor);
}

/**
 * kvm_dirty_ring_reset(): from reset_index, every entry userspace gave back
 * (RESET) is made invalid and counted; runs of offsets in one slot within
 * a mask's width are coalesced (forwards, and backwards while the mask does
 * not overflow) and write-protected together. Returns the entries reset.
 */
export function kvmDirtyRingReset(kvm: Kvm, actor: Actor, vcpuId: number): number {
  const m = kvm.m;
  const b = ringBase(kvm, vcpuId);
  let ri = Atomics.load(m, b + RING.RESET_INDEX);
  let count = 0;
  let first = true;
  let curSlot = 0;
  let curOffset = 0;
  let mask = 0;
  for (;;) {
    const e = ringEntry(kvm, b, ri);
    if ((Atomics.load(m, e + RE.FLAGS) & KVM_DIRTY_GFN_F_RESET) === 0) break;
    actor.sched.point(SITE['ring.reset']);
    const nextSlot = Atomics.load(m, e + RE.SLOT);
    const nextOffset = Atomics.load(m, e + RE.OFFSET);
    Atomics.store(m, e + RE.FLAGS, 0); // kvm_dirty_gfn_set_invalid()
    ri = (ri + 1) | 0;
    Atomics.store(m, b + RING.RESET_INDEX, ri);
    count++;
    if (!first && nextSlot === curSlot) {
      const delta = nextOffset - curOffset;
      if (delta >= 0 && delta < 32) {
        mask = (mask | (1 << delta)) >>> 0;
        continue;
      }
      // Backwards visit, careful about overflows!
      if (delta > -32 && delta < 0 && ((mask << -delta) >>> -delta) >>> 0 === mask) {
        curOffset = nextOffset;
        mask = ((mask << -delta) | 1) >>> 0;
        continue;
      }
    }
    kvmResetDirtyGfn(kvm, actor, curSlot, curOffset, mask);
    curSlot = nextSlot;
    curOffset = nextOffset;
    mask = 1;
    first = false;
  }
  kvmResetDirtyGfn(kvm, actor, curSlot, curOffset, mask);
  if (count > 0) kvm.count(actor, CNT.ringResets, count);
  return count;
}

/**
 * KVM_RESET_DIRTY_RINGS (kvm_vm_ioctl_reset_dirty_pages()): reset every
 * vCPU's ring under slots_lock, then flush the TLBs if anything was reset
 * (the kernel flushes just after releasing slots_lock; the model inside it,
 * where its live break-before-make check wants write-protection flushed;
 * either way before the ioctl returns and userspace copies). The vCPU
 * threads waiting after a ring-full exit are woken.
 */
export function kvmVmIoctlResetDirtyPages(kvm: Kvm, actor: Actor): number {
  kvm.slotsLock.lock(actor, LS.other);
  let cleared = 0;
  for (let v = 0; v < kvm.layout.vcpus; v++) cleared += kvmDirtyRingReset(kvm, actor, v);
  if (cleared > 0) kvmFlushRemoteTlbs(kvm, actor);
  kvm.trace(actor, EV['ring.reset'], cleared);
  kvm.slotsLock.unlock(actor);
  if (cleared > 0) bumpControl(kvm.m);
  return cleared;
}

/**
 * QEMU's kvm_dirty_ring_reap(): collect every ring, then
 * KVM_RESET_DIRTY_RINGS. The pages are copied after the reset: a page
 * collected and written again before the reset is write-protected by it
 * without a new entry, so only a copy made after the reset holds that write.
 */
export function dirtyRingReap(kvm: Kvm, actor: Actor, slot: number, snapshot: Int32Array): number {
  const n = dirtyRingCollectAll(kvm, actor, slot, snapshot);
  kvmVmIoctlResetDirtyPages(kvm, actor);
  return n;
}

/**
 * kvm_write_guest() of one page by the host (no running vCPU):
 * __kvm_write_guest_page() copies to the hva (here: under the host PTE
 * lock, faulting the page in for write first, a copy-on-write included),
 * then mark_page_dirty_in_slot(). The value goes to the guest's shadow too:
 * the guest reads what the host wrote.
 */
export function kvmWriteGuestPage(kvm: Kvm, actor: Actor, gfn: number, value: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  for (;;) {
    const v = hpteLock(kvm, actor, gfn);
    if ((v & HPTE_MIGRATING) !== 0) {
      hpteUnlock(kvm, gfn, v);
      actor.sched.waitWhile(L.hpte + gfn, v, SITE['hostpt.migrating']);
      continue;
    }
    if ((v & HPTE_PRESENT) !== 0 && (v & HPTE_WRITE) !== 0) {
      Atomics.store(m, L.frameData + (v & HPTE_FRAME_MASK), value);
      Atomics.store(m, L.shadow + gfn, value);
      hpteUnlock(kvm, gfn, v);
      break;
    }
    hpteUnlock(kvm, gfn, v);
    const f = gfnToPfnProt(kvm, actor, gfn, true);
    if (f === 0) return false;
    putPage(kvm, actor, f);
  }
  kvm.count(actor, CNT.hostGuestWrites);
  kvm.trace(actor, EV['host.write'], gfn, value);
  markPageDirty(kvm, actor, gfn);
  return true;
}

/**
 * The vgic ITS table save (KVM_DEV_ARM_ITS_SAVE_TABLES:
 * vgic_its_save_tables_v0(), QEMU's vm_change_state_handler on VM stop and
 * kvm_arm_its_pre_save()): with dist->table_write_in_progress set
 * (kvm_arch_allow_write_without_running_vcpu()), write `pages` table pages
 * from the first ITS table gfn through kvm_write_guest(). Values are
 * unique: the writer's count of host writes and its actor id (vCPU writes
 * carry theirs).
 */
export function vgicItsSaveTables(kvm: Kvm, actor: Actor, first: number, pages: number): void {
  const m = kvm.m;
  Atomics.store(m, CTRL.VGIC_TABLE_WRITE, 1);
  const base = itsTableGfn(kvm);
  for (let i = 0; i < pages; i++) {
    const gfn = base + ((first + i) % ITS_TABLE_PAGES);
    const seq = kvm.f64[actor.id * N_COUNTERS + CNT.hostGuestWrites] + 1;
    kvmWriteGuestPage(kvm, actor, gfn, (((seq & 0x1ffffff) << 7) | actor.id) | 0);
  }
  Atomics.store(m, CTRL.VGIC_TABLE_WRITE, 0);
}
