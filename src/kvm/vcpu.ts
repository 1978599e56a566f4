/**
 * A guest memory access by a vCPU, as the hardware does it: TLB lookup, else
 * a stage-2 walk that fills the TLB, else a stage-2 abort into
 * kvm_handle_guest_abort(), then re-execution.
 *
 * The whole lookup..memory-operation is one "access": ACCESS_SEQ is odd
 * throughout, which is what a TLB flush waits on (a flush is complete only
 * when no vCPU can still use a removed entry). A successful write stores the
 * value in the frame and in the guest's shadow (what the guest believes
 * memory holds), and checks `frame-use-after-free` as it happens.
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { ACTOR, CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT, INV } from '../check/names.js';
import { descIsTable, descOa, descValid, descWritable, pgdIndex, pmdIndex, pmdIsBlock, pteIndex } from '../arch/stage2.js';
import { tlbBlockSlot, tlbLocalInvalidate, tlbPageSlot } from './tlb.js';
import { kvmHandleGuestAbort } from './mmu.js';
import { FRAME_DEVICE } from '../mm/frames.js';

/** Faults one access may take before the vCPU reports it is stuck (the watchdog names it). */
export const MAX_FAULTS_PER_ACCESS = 1 << 20;

/** Result of an access that could not complete because the run is ending. */
export const ACCESS_ABORTED = -2;

/** frame-use-after-free kinds */
export const UAF_WRITE = 1;

/**
 * Perform one guest access at gfn. For a write, `value` is stored; returns
 * the value read or written, or ACCESS_ABORTED if the run ended while the
 * access kept faulting.
 */
export function guestAccess(kvm: Kvm, vcpu: Actor, gfn: number, write: boolean, value: number): number {
  const m = kvm.m;
  const L = kvm.layout;
  const seqIdx = kvm.actorWord(vcpu.id, ACTOR.ACCESS_SEQ);
  const pslot = tlbPageSlot(kvm, vcpu.id, gfn);
  const bslot = tlbBlockSlot(kvm, vcpu.id, gfn);
  const pageTag = gfn + 1;
  const blockTag = (gfn >>> 9) + 1;
  const sched = vcpu.sched;
  let missed = false;
  for (let faults = 0; ; faults++) {
    Atomics.add(m, seqIdx, 1); // enter the access: odd
    sched.point(SITE['access.tlb']);
    let desc = 0;
    let frame = 0;
    if (Atomics.load(m, pslot) === pageTag) {
      desc = Atomics.load(m, pslot + 1);
      frame = descOa(desc);
    } else if (Atomics.load(m, bslot) === blockTag) {
      desc = Atomics.load(m, bslot + 1);
      frame = descOa(desc) + (gfn & 511);
    } else {
      // Hardware stage-2 walk; a valid leaf fills the TLB.
      missed = true;
      sched.point(SITE['access.walk']);
      // VTTBR: the root of the VM the vCPU runs in (kvm->arch.pgd, as loaded at vcpu_load).
      const root = Atomics.load(m, CTRL.S2_PGD) - 1;
      const d1 = root < 0 ? 0 : Atomics.load(m, L.tablesBase + root * 512 + pgdIndex(gfn));
      if (descIsTable(d1)) {
        const d2 = Atomics.load(m, L.tablesBase + descOa(d1) * 512 + pmdIndex(gfn));
        if (pmdIsBlock(d2)) {
          desc = d2;
          frame = descOa(d2) + (gfn & 511);
          Atomics.store(m, bslot + 1, d2);
          Atomics.store(m, bslot, blockTag);
        } else if (descIsTable(d2)) {
          sched.point(SITE['access.walk']);
          const d3 = Atomics.load(m, L.tablesBase + descOa(d2) * 512 + pteIndex(gfn));
          if (descValid(d3)) {
            desc = d3;
            frame = descOa(d3);
            Atomics.store(m, pslot + 1, d3);
            Atomics.store(m, pslot, pageTag);
          }
        }
      }
    }
    if (descValid(desc) && (!write || descWritable(desc))) {
      let result: number;
      if (write) {
        sched.point(SITE['access.store']);
        Atomics.store(m, L.frameData + frame, value);
        if (Atomics.load(m, L.frameRef + frame) <= 0 && (Atomics.load(m, L.frameFlags + frame) & FRAME_DEVICE) === 0) {
          kvm.violation(INV['frame-use-after-free'], vcpu.id, UAF_WRITE, gfn, frame, value);
        }
        Atomics.store(m, L.shadow + gfn, value);
        result = value;
        kvm.count(vcpu, CNT.writes);
      } else {
        sched.point(SITE['access.load']);
        result = Atomics.load(m, L.frameData + frame);
      }
      Atomics.add(m, seqIdx, 1); // leave the access: even
      kvm.count(vcpu, CNT.accesses);
      kvm.count(vcpu, missed ? CNT.tlbMisses : CNT.tlbHits);
      return result;
    }
    Atomics.add(m, seqIdx, 1); // leave the access: even
    // A faulting translation is not kept in this vCPU's TLB.
    tlbLocalInvalidate(kvm, vcpu.id, gfn);
    const permFault = descValid(desc);
    kvmHandleGuestAbort(kvm, vcpu, gfn, write, permFault);
    if (Atomics.load(m, CTRL.END) !== 0 || faults >= MAX_FAULTS_PER_ACCESS) return ACCESS_ABORTED;
    // While an invalidation is in progress every re-execution faults and
    // retries (mmu_notifier_retry): wait for the count to move instead of
    // spinning through faults, which also tells the sim scheduler that this
    // vCPU cannot progress until the notifier does.
    const count = Atomics.load(m, CTRL.MMU_NOTIFIER_COUNT);
    if (count !== 0) sched.waitWhile(CTRL.MMU_NOTIFIER_COUNT, count, SITE['fault.retry']);
  }
}
