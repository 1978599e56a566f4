/**
 * The end of a VM and the start of the next, as virt/kvm/kvm_main.c and
 * mm/mmu_notifier.c drive arch/arm/kvm/mmu.c:
 *
 * - the VM's MMU notifier is released (kvm_mmu_notifier_release ->
 *   kvm_arch_flush_shadow_all) from two places: __mmu_notifier_release() in
 *   exit_mmap(), when the last user of the VMM's mm goes, and
 *   mmu_notifier_unregister() in kvm_destroy_vm(), when the last reference
 *   to the VM goes. __mmu_notifier_release() calls ->release before it
 *   takes the notifier off the list, so an unregister meanwhile calls it
 *   too: two releases at once (what 0c428a6a9256 names as the likeliest
 *   way into its use-after-free);
 * - kvm_arch_destroy_vm(): before 4.11 it frees the stage-2 tables; the
 *   vCPUs go with their memory caches; then the memslots;
 * - a new VM: a new root (kvm_alloc_stage2_pgd), the notifier registered,
 *   the memslots set up again, and a TLB without the old VM's entries (a
 *   new VMID).
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { CTRL, MAX_MEMSLOTS } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from '../check/names.js';
import { srcuReadLock, srcuReadUnlock } from '../sync/srcu.js';
import { kvmAllocStage2Pgd, kvmFreeStage2Pgd, mmuFreeMemoryCache } from './pgtable.js';
import { LOG_OFF, SLOTW, slotWord } from './memslot.js';
import { kvmFlushRemoteTlbs } from './tlb.js';

/**
 * kvm_arch_flush_shadow_all(): from 4.11 (293f293637b5 "kvm-arm: Unmap
 * shadow pagetables properly") it frees the stage-2 tables; before, it was
 * empty on arm and kvm_arch_destroy_vm() freed them.
 */
export function kvmArchFlushShadowAll(kvm: Kvm, actor: Actor): void {
  if (kvm.proto.freePgdOnNotifierRelease) kvmFreeStage2Pgd(kvm, actor);
}

/** kvm_mmu_notifier_release(): kvm_arch_flush_shadow_all() under the SRCU read side. */
export function kvmMmuNotifierRelease(kvm: Kvm, actor: Actor): void {
  actor.sched.point(SITE['notifier.start']);
  kvm.trace(actor, EV['notifier.release'], 0);
  srcuReadLock(kvm, actor);
  kvmArchFlushShadowAll(kvm, actor);
  srcuReadUnlock(kvm, actor);
}

/**
 * __mmu_notifier_release(mm), from exit_mmap(): ->release of the VM's
 * notifier while it is on the list, then off the list. The caller set
 * MM_RELEASING first (the notifier SRCU read section that
 * mmu_notifier_unregister() waits for); it is cleared here.
 */
export function mmuNotifierReleaseAtExit(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  if (Atomics.load(m, CTRL.MMU_NOTIFIER_GONE) === 0) kvmMmuNotifierRelease(kvm, actor);
  Atomics.store(m, CTRL.MMU_NOTIFIER_GONE, 1); // hlist_del_init_rcu()
  Atomics.store(m, CTRL.MM_RELEASING, 0);
  Atomics.notify(m, CTRL.MM_RELEASING);
}

/**
 * mmu_notifier_unregister(): ->release if the notifier is still on the
 * list, off the list, then synchronize_srcu(): wait for a
 * __mmu_notifier_release() that is still running.
 */
export function mmuNotifierUnregister(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  if (Atomics.load(m, CTRL.MMU_NOTIFIER_GONE) === 0) {
    kvmMmuNotifierRelease(kvm, actor);
    Atomics.store(m, CTRL.MMU_NOTIFIER_GONE, 1);
  }
  actor.sched.point(SITE['srcu.sync']);
  while (Atomics.load(m, CTRL.MM_RELEASING) !== 0) actor.sched.waitWhile(CTRL.MM_RELEASING, 1, SITE['srcu.sync']);
}

/**
 * kvm_destroy_vm(), on the last reference to the VM: the notifier
 * unregistered, then kvm_arch_destroy_vm() (before 4.11 the stage-2 tables
 * are freed here; every vCPU goes with its memory cache:
 * kvm_arch_vcpu_free -> kvm_mmu_free_memory_caches), then the memslots
 * (kvm_free_memslots). The vCPU threads have stopped before. Returns the
 * memslots the VM had, for the next VM.
 */
export function kvmDestroyVm(kvm: Kvm, actor: Actor): number[] {
  const m = kvm.m;
  kvm.trace(actor, EV['vm.destroy'], 0);
  mmuNotifierUnregister(kvm, actor);
  if (!kvm.proto.freePgdOnNotifierRelease) kvmFreeStage2Pgd(kvm, actor);
  for (let v = 0; v < kvm.layout.vcpus; v++) mmuFreeMemoryCache(kvm, actor, v);
  const slots: number[] = [];
  for (let s = 0; s < MAX_MEMSLOTS; s++) {
    if (Atomics.load(m, slotWord(kvm, s, SLOTW.ACTIVE)) === 0) continue;
    slots.push(s);
    Atomics.store(m, slotWord(kvm, s, SLOTW.ACTIVE), 0);
    Atomics.store(m, slotWord(kvm, s, SLOTW.FLAGS), 0);
    Atomics.store(m, slotWord(kvm, s, SLOTW.LOG_STATE), LOG_OFF);
  }
  kvm.count(actor, CNT.teardowns);
  return slots;
}

/**
 * The next VM (kvm_create_vm): a new root from the table pool
 * (kvm_arch_init_vm -> kvm_alloc_stage2_pgd), the MMU notifier registered
 * (kvm_init_mmu_notifier), the memslots the old VM had (the VMM sets its
 * memory up again; the host memory behind them carries over), and no TLB
 * entry of the old VM (a new VMID). Returns false if the pool is dry.
 */
export function kvmCreateVmLife(kvm: Kvm, actor: Actor, slots: readonly number[]): boolean {
  const m = kvm.m;
  if (kvmAllocStage2Pgd(kvm, actor) < 0) return false;
  Atomics.store(m, CTRL.MMU_NOTIFIER_GONE, 0);
  for (const s of slots) {
    Atomics.store(m, slotWord(kvm, s, SLOTW.FLAGS), 0);
    Atomics.store(m, slotWord(kvm, s, SLOTW.LOG_STATE), LOG_OFF);
    Atomics.store(m, slotWord(kvm, s, SLOTW.ACTIVE), 1);
  }
  kvmFlushRemoteTlbs(kvm, actor);
  return true;
}
