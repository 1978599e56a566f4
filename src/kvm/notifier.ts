/**
 * MMU notifiers: how the host tells KVM that memory under the guest changes
 * (virt/kvm/kvm_main.c kvm_mmu_notifier_* and arch/arm/kvm/mmu.c
 * kvm_unmap_hva_range / kvm_set_spte_hva).
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { CTRL, MAX_MEMSLOTS } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { LS } from '../sync/locksites.js';
import { srcuReadLock, srcuReadUnlock } from '../sync/srcu.js';
import { KBUG, kvmPgtableStage2Map, stage2SetPte, unmapStage2Range } from './pgtable.js';
import { LEVEL_PTE, pfnPte } from '../arch/stage2.js';
import { SLOTW, slotWord } from './memslot.js';
import { CNT, EV, INV } from '../check/names.js';

/**
 * handle_hva_to_gpa() + kvm_unmap_hva_handler(): unmap the guest pages that
 * the hva range [hva, hva + npages) backs, slot by slot.
 */
export function kvmUnmapHvaRange(kvm: Kvm, actor: Actor, hva: number, npages: number): void {
  const m = kvm.m;
  const end = hva + npages;
  for (let s = 0; s < MAX_MEMSLOTS; s++) {
    if (m[slotWord(kvm, s, SLOTW.ACTIVE)] === 0) continue;
    const sh = m[slotWord(kvm, s, SLOTW.HVA_BASE)];
    const sEnd = sh + m[slotWord(kvm, s, SLOTW.NPAGES)];
    const lo = hva > sh ? hva : sh;
    const hi = end < sEnd ? end : sEnd;
    if (lo >= hi) continue;
    const gfn = lo - sh + m[slotWord(kvm, s, SLOTW.BASE_GFN)];
    unmapStage2Range(kvm, actor, gfn, hi - lo);
  }
}

/** kvm_mmu_notifier_invalidate_range_start() */
export function kvmMmuNotifierInvalidateRangeStart(kvm: Kvm, actor: Actor, hva: number, npages: number): void {
  actor.sched.point(SITE['notifier.start']);
  srcuReadLock(kvm, actor);
  // write_lock(&kvm->mmu_lock); the unmap-under-read-lock bug takes the read side.
  const read = kvm.proto.unmapUnderReadLock;
  if (read) kvm.mmuLock.readLock(actor, LS['notifier-start']);
  else kvm.mmuLock.lock(actor, LS['notifier-start']);
  /*
   * The count increase must become visible at unlock time as no spte can be
   * established without taking the mmu_lock and count is also read inside
   * the mmu_lock critical section.
   */
  const late = kvm.proto.countAfterUnlock;
  if (!late) Atomics.add(kvm.m, CTRL.MMU_NOTIFIER_COUNT, 1);
  kvmUnmapHvaRange(kvm, actor, hva, npages);
  if (read) kvm.mmuReadUnlock(actor);
  else kvm.mmuLock.unlock(actor);
  // The count-after-unlock bug: the critical section ended one step early.
  if (late) Atomics.add(kvm.m, CTRL.MMU_NOTIFIER_COUNT, 1);
  srcuReadUnlock(kvm, actor);
  kvm.count(actor, CNT.invalidations);
  kvm.trace(actor, EV['notifier.start'], hva, npages);
}

/** kvm_mmu_notifier_invalidate_range_end() */
export function kvmMmuNotifierInvalidateRangeEnd(kvm: Kvm, actor: Actor, hva: number, npages: number): void {
  actor.sched.point(SITE['notifier.end']);
  kvm.mmuLock.lock(actor, LS['notifier-end']);
  /*
   * This sequence increase will notify the kvm page fault that the page
   * that is going to be mapped in the spte could have been freed.
   */
  Atomics.add(kvm.m, CTRL.MMU_NOTIFIER_SEQ, 1);
  /* The above sequence increase must be visible before the below count decrease. */
  const old = Atomics.sub(kvm.m, CTRL.MMU_NOTIFIER_COUNT, 1);
  kvm.mmuLock.unlock(actor);
  if (old <= 0) kvm.violation(INV['kernel-bug'], actor.id, KBUG.NOTIFIER_COUNT_NEGATIVE, old - 1);
  kvm.trace(actor, EV['notifier.end'], hva, npages);
}

/**
 * kvm_mmu_notifier_change_pte() -> kvm_set_spte_hva(): point the stage-2 PTE
 * at the new frame, read-only, flags 0, no memory cache. Every caller is
 * inside an invalidate start/end pair, so the range is already unmapped; the
 * seed says stage2_set_pte() never meets a huge PMD on this path, and the
 * model asserts it (kernel-bug) instead of trusting it.
 */
export function kvmMmuNotifierChangePte(kvm: Kvm, actor: Actor, hva: number, frame: number): void {
  const m = kvm.m;
  // 5.13 on: `if (!READ_ONCE(kvm->mmu_invalidate_in_progress)) return;`
  // (no invalidation in progress found a memslot at start()).
  if (kvm.proto.pgtableApi && Atomics.load(m, CTRL.MMU_NOTIFIER_COUNT) === 0) return;
  srcuReadLock(kvm, actor);
  const unlocked = kvm.proto.unlockedChangePte;
  if (!unlocked) kvm.mmuLock.lock(actor, LS['change-pte']);
  Atomics.add(m, CTRL.MMU_NOTIFIER_SEQ, 1);
  for (let s = 0; s < MAX_MEMSLOTS; s++) {
    if (m[slotWord(kvm, s, SLOTW.ACTIVE)] === 0) continue;
    const sh = m[slotWord(kvm, s, SLOTW.HVA_BASE)];
    if (hva < sh || hva >= sh + m[slotWord(kvm, s, SLOTW.NPAGES)]) continue;
    const gfn = hva - sh + m[slotWord(kvm, s, SLOTW.BASE_GFN)];
    if (kvm.proto.pgtableApi) {
      // kvm_set_spte_gfn(): kvm_pgtable_stage2_map(pgt, gpa, PAGE_SIZE,
      // pfn, KVM_PGTABLE_PROT_R, NULL, 0): exclusive, no memory cache.
      kvmPgtableStage2Map(kvm, actor, gfn, LEVEL_PTE, pfnPte(frame, false), false, true);
    } else {
      // kvm_set_spte_handler(): stage2_set_pte(kvm, NULL, gpa, pte, 0)
      stage2SetPte(kvm, actor, false, gfn, pfnPte(frame, false), 0);
    }
  }
  if (!unlocked) kvm.mmuLock.unlock(actor);
  srcuReadUnlock(kvm, actor);
  kvm.count(actor, CNT.changePte);
  kvm.trace(actor, EV.change_pte, hva, frame);
}

/** mmu_notifier_retry(kvm, mmu_seq): called with mmu_lock held. */
export function mmuNotifierRetry(kvm: Kvm, mmuSeq: number): boolean {
  if (Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT) !== 0) return true;
  return Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ) !== mmuSeq;
}
