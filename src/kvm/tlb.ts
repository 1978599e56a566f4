/**
 * Per-vCPU TLBs in shared memory, and the two flushes the kernel uses:
 * kvm_tlb_flush_vmid_ipa() (by IPA) and kvm_flush_remote_tlbs() (whole VM).
 *
 * Each vCPU has a direct-mapped array of 4 KiB entries and one of 2 MiB block
 * entries, each slot two words: tag (gfn + 1, or block number + 1; 0 = empty)
 * and the descriptor as the walk read it.
 *
 * A flush completes only when no vCPU can still use a removed entry (TLBI
 * followed by DSB): it removes matching entries, waits for every vCPU that is
 * in the middle of an access (its ACCESS_SEQ is odd) to finish it, then
 * removes matching entries again, which catches an entry filled by a walk
 * that read the tables before they changed.
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { ACTOR } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from '../check/names.js';

export function tlbPageSlot(kvm: Kvm, vcpu: number, gfn: number): number {
  const L = kvm.layout;
  return L.tlb + vcpu * L.tlbWords + (gfn & (L.tlbPageSlots - 1)) * 2;
}

export function tlbBlockSlot(kvm: Kvm, vcpu: number, gfn: number): number {
  const L = kvm.layout;
  return L.tlb + vcpu * L.tlbWords + L.tlbPageSlots * 2 + ((gfn >>> 9) & (L.tlbBlockSlots - 1)) * 2;
}

function invalidateIpa(kvm: Kvm, gfn: number): void {
  const m = kvm.m;
  const pageTag = gfn + 1;
  const blockTag = (gfn >>> 9) + 1;
  for (let v = 0; v < kvm.layout.vcpus; v++) {
    Atomics.compareExchange(m, tlbPageSlot(kvm, v, gfn), pageTag, 0);
    Atomics.compareExchange(m, tlbBlockSlot(kvm, v, gfn), blockTag, 0);
  }
}

function invalidateAll(kvm: Kvm): void {
  const m = kvm.m;
  const L = kvm.layout;
  for (let v = 0; v < L.vcpus; v++) {
    const base = L.tlb + v * L.tlbWords;
    for (let s = 0; s < L.tlbPageSlots + L.tlbBlockSlots; s++) Atomics.store(m, base + s * 2, 0);
  }
}

/**
 * The DSB after a TLBI: wait until no vCPU is still inside an access that
 * began before the invalidation. The `flush-no-wait` bug skips it.
 */
function waitForAccesses(kvm: Kvm, actor: Actor): void {
  if (kvm.proto.flushNoWait) return;
  const m = kvm.m;
  for (let v = 0; v < kvm.layout.vcpus; v++) {
    if (v === actor.id) continue;
    const idx = kvm.actorWord(v, ACTOR.ACCESS_SEQ);
    const seq = Atomics.load(m, idx);
    if ((seq & 1) === 0) continue;
    // waitWhile may return spuriously (the Sched contract): re-check until the access ended.
    while (Atomics.load(m, idx) === seq) actor.sched.waitWhile(idx, seq, SITE['tlb.flush.wait']);
  }
}

/** kvm_tlb_flush_vmid_ipa(): remove every entry covering this IPA, on every vCPU. */
export function kvmTlbFlushVmidIpa(kvm: Kvm, actor: Actor, gfn: number): void {
  actor.sched.point(SITE['tlb.flush']);
  kvm.count(actor, CNT.tlbFlushes);
  kvm.trace(actor, EV['flush.ipa'], gfn);
  invalidateIpa(kvm, gfn);
  waitForAccesses(kvm, actor);
  invalidateIpa(kvm, gfn);
}

/** kvm_flush_remote_tlbs(): remove every entry of the VM. */
export function kvmFlushRemoteTlbs(kvm: Kvm, actor: Actor): void {
  actor.sched.point(SITE['tlb.flush']);
  kvm.count(actor, CNT.tlbFlushes);
  kvm.trace(actor, EV['flush.all'], 0);
  invalidateAll(kvm);
  waitForAccesses(kvm, actor);
  invalidateAll(kvm);
}

/** Local invalidation of one vCPU's entries for an IPA (on taking a fault). */
export function tlbLocalInvalidate(kvm: Kvm, vcpu: number, gfn: number): void {
  const m = kvm.m;
  Atomics.compareExchange(m, tlbPageSlot(kvm, vcpu, gfn), gfn + 1, 0);
  Atomics.compareExchange(m, tlbBlockSlot(kvm, vcpu, gfn), (gfn >>> 9) + 1, 0);
}
