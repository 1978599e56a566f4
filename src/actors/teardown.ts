/**
 * The `teardown` scenario's VM lives, as the actors play them. The
 * migrator is the VMM: each life it migrates (completed or cancelled),
 * deletes and re-creates the RAM memslot (kvm_arch_flush_shadow_memslot
 * while the vCPUs run), then ends the VM. At the end the vCPU threads stop
 * first, as they do when the VMM process exits; then two paths release the
 * VM's MMU notifier at once, from two tasks:
 *
 * - the host-MM actor is the last user of the VMM's mm: exit_mmap() ->
 *   __mmu_notifier_release();
 * - the migrator is a task dropping the last reference to the VM (a VM fd
 *   that another process still held, closed): kvm_destroy_vm() ->
 *   mmu_notifier_unregister().
 *
 * Both start from the same line (the host-MM actor says it arrived, the
 * migrator sets off when it sees it), so that the race is run every life.
 * No ioctl runs then: a VM ioctl needs current->mm == kvm->mm, and a task
 * in an ioctl keeps the mm alive, so exit_mmap() cannot run meanwhile. Then
 * a new VM starts: a new root, the same memslots, the vCPUs resume.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { INV } from '../check/names.js';
import { KBUG } from '../kvm/pgtable.js';
import { kvmCreateVmLife, kvmDestroyVm, mmuNotifierReleaseAtExit } from '../kvm/vmlife.js';
import { bumpControl, safePoint } from './control.js';
import { pauseVcpus, resumeVcpus } from './migrator.js';

/**
 * Wait until m[word] === value, parking at safe points meanwhile (a
 * stop-the-world may come). Whoever changes the word bumps CONTROL_GEN.
 * Returns false when the run ended.
 */
export function waitAtSafePoints(kvm: Kvm, actor: Actor, word: number, value: number): boolean {
  const m = kvm.m;
  for (;;) {
    const gen = Atomics.load(m, CTRL.CONTROL_GEN);
    if (Atomics.load(m, word) === value) return true;
    if (!safePoint(kvm, actor, false)) return false;
    if (Atomics.load(m, word) === value) return true;
    actor.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['actor.loop']);
  }
}

/**
 * The host-MM actor's part, at the top of its loop: if the VM's end was
 * asked for, be exit_mmap() (__mmu_notifier_release), then do nothing on
 * the old mm until the next VM exists. Returns true if it did (the caller
 * goes round its loop again), false when there is nothing to do.
 */
export function hostMmExitMmap(kvm: Kvm, actor: Actor): boolean {
  const m = kvm.m;
  const life = Atomics.load(m, CTRL.TEARDOWN_REQ);
  if (life === 0 || Atomics.load(m, CTRL.TEARDOWN_ARRIVED) === life) return false;
  Atomics.store(m, CTRL.MM_RELEASING, 1);
  Atomics.store(m, CTRL.TEARDOWN_ARRIVED, life);
  bumpControl(m);
  mmuNotifierReleaseAtExit(kvm, actor);
  waitAtSafePoints(kvm, actor, CTRL.VM_ENDED, life);
  return true;
}

/**
 * The migrator's part: stop the vCPUs, ask for the end, set off with the
 * host-MM actor, kvm_destroy_vm(), then the next VM. Returns false when the
 * run ended part-way.
 */
export function vmTeardown(kvm: Kvm, actor: Actor): boolean {
  const m = kvm.m;
  const life = Atomics.load(m, CTRL.VM_ENDED) + 1;
  if (!pauseVcpus(kvm, actor)) return false;
  Atomics.store(m, CTRL.TEARDOWN_REQ, life);
  bumpControl(m);
  if (!waitAtSafePoints(kvm, actor, CTRL.TEARDOWN_ARRIVED, life)) return false;
  const slots = kvmDestroyVm(kvm, actor);
  if (!kvmCreateVmLife(kvm, actor, slots)) {
    // The pool is sized for one fully split guest plus the caches: dry here
    // means the last VM's tables were not all given back.
    kvm.violation(INV['table-conservation'], actor.id, KBUG.TABLE_POOL_EMPTY, kvm.layout.tables);
    return false;
  }
  Atomics.store(m, CTRL.VM_ENDED, life);
  bumpControl(m);
  resumeVcpus(kvm, actor);
  return true;
}
