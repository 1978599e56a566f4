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
import { kvmDirtyRingCheckRequest } from './dirtyring.js';
import { ACTOR, CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT, INV } from '../check/names.js';
import { KVM_INVALID_PTE_LOCKED, LEVEL_PMD, LEVEL_PTE, descIsTable, descOa, descValid, descWritable, pgdIndex, pmdIndex, pmdIsBlock, pteIndex } from '../arch/stage2.js';
import { s2Lookup } from './pgtable.js';
import { TLB_BASE_MASK, TLB_S2_ONLY_ONE_IN, tlbBlockSlot, tlbFill, tlbLocalInvalidate, tlbPageSlot, tlbTagLive } from './tlb.js';
import { FAULT_RETRY, kvmHandleGuestAbort } from './mmu.js';
import { gfnToMemslot } from './memslot.js';
import { FRAME_DEVICE } from '../mm/frames.js';

/**
 * Faults in a row that change nothing before a vCPU gives an access up and
 * reports a livelock (`progress`). A fault changes nothing when the page's
 * stage-2 entry and mmu_notifier_seq are the same after it as before it. A
 * vCPU legitimately retries while invalidations are in progress, but between
 * retries it waits for mmu_notifier_count to move, and every invalidation
 * that ends moves mmu_notifier_seq: overlapping invalidations (at most one
 * per actor) bound those retries far below this.
 */
export const MAX_FAULTS_PER_ACCESS = 1024;
/**
 * Faults of one access in all, changing something or not: an entry that
 * changes under every fault and never lets the access complete (two parties
 * undoing each other) is a livelock too.
 */
export const MAX_FAULTS_PER_ACCESS_TOTAL = 1 << 20;

/** Result of an access that could not complete because the run is ending. */
export const ACCESS_ABORTED = -2;
/** Result of an access given up as a livelock (a `progress` violation is recorded). */
export const ACCESS_LIVELOCK = -3;
/**
 * The vCPU exited with KVM_EXIT_DIRTY_RING_FULL before re-entering the
 * guest (`--dirty-log ring`): the access did not complete; the vCPU thread
 * waits for its ring to be reset (dirtyRingFullWait), then runs it again.
 */
export const ACCESS_RING_FULL = -4;

/**
 * What an abandoned access kept faulting on: the low bits of its `progress`
 * violation's kind (the stage-2 level is at LIVELOCK_LEVEL_SHIFT, the write
 * bit at LIVELOCK_WRITE, the number of faults in all from LIVELOCK_TOTAL_SHIFT).
 */
export const STALL = {
  /** user_mem_abort() returned -EAGAIN: mmu_notifier_retry() said so. */
  RETRY: 1,
  /** user_mem_abort() returned an error (-EFAULT, -ENOMEM). */
  ERROR: 2,
  /** The fault returns, but the entry stays read-only for a write. */
  PERMISSION: 3,
  /** The fault returns, but nothing stays mapped. */
  UNMAPPED: 4,
  /** The entry changes under every fault and the access never completes. */
  CHURN: 5,
} as const;
export const LIVELOCK_LEVEL_SHIFT = 4;
export const LIVELOCK_WRITE = 1 << 6;
export const LIVELOCK_TOTAL_SHIFT = 8;

/** frame-use-after-free kinds */
export const UAF_WRITE = 1;

/**
 * Perform one guest access at gfn. For a write, `value` is stored; returns
 * the value read or written, ACCESS_ABORTED if the run ended while the
 * access kept faulting, or ACCESS_LIVELOCK if it was given up (a `progress`
 * violation names the page, the faults and the entry).
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
  const genBase = L.tlbGen;
  let missed = false;
  let stalled = 0;
  for (let faults = 0; ; faults++) {
    const seq = Atomics.add(m, seqIdx, 1); // enter the access: odd
    sched.point(SITE['access.tlb']);
    let desc = 0;
    let frame = 0;
    let level = LEVEL_PTE;
    const pt = Atomics.load(m, pslot);
    let bt = 0;
    if ((pt & TLB_BASE_MASK) === pageTag && tlbTagLive(m, genBase, pt)) {
      desc = Atomics.load(m, pslot + 1);
      frame = descOa(desc);
    } else if (((bt = Atomics.load(m, bslot)) & TLB_BASE_MASK) === blockTag && tlbTagLive(m, genBase, bt)) {
      desc = Atomics.load(m, bslot + 1);
      frame = descOa(desc) + (gfn & 511);
      level = LEVEL_PMD;
    } else {
      // Hardware stage-2 walk; a valid leaf fills the TLB, one fill in
      // TLB_S2_ONLY_ONE_IN as a stage-2-only entry (src/kvm/tlb.ts).
      missed = true;
      const s2Only = ((seq >>> 1) & (TLB_S2_ONLY_ONE_IN - 1)) === TLB_S2_ONLY_ONE_IN - 1;
      sched.point(SITE['access.walk']);
      // VTTBR: the root of the VM the vCPU runs in (kvm->arch.pgd, as loaded at vcpu_load).
      const root = Atomics.load(m, CTRL.S2_PGD) - 1;
      const d1 = root < 0 ? 0 : Atomics.load(m, L.tablesBase + root * 512 + pgdIndex(gfn));
      if (descIsTable(d1)) {
        const d2 = Atomics.load(m, L.tablesBase + descOa(d1) * 512 + pmdIndex(gfn));
        if (pmdIsBlock(d2)) {
          desc = d2;
          frame = descOa(d2) + (gfn & 511);
          level = LEVEL_PMD;
          tlbFill(m, genBase, bslot, blockTag, d2, s2Only);
        } else if (descIsTable(d2)) {
          sched.point(SITE['access.walk']);
          const d3 = Atomics.load(m, L.tablesBase + descOa(d2) * 512 + pteIndex(gfn));
          if (descValid(d3)) {
            desc = d3;
            frame = descOa(d3);
            tlbFill(m, genBase, pslot, pageTag, d3, s2Only);
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
    const permFault = descValid(desc);
    // A faulting translation is not kept in this vCPU's TLB; except that
    // arm64 lets a TLB keep an entry that caused a permission fault (the
    // arm64 profiles): only a TLB invalidation removes it.
    if (!(permFault && kvm.proto.tlbKeepsPermFaults)) tlbLocalInvalidate(kvm, vcpu.id, gfn);
    // What the fault can change: the page's entry, or the notifier sequence
    // (the host changed memory under it: a retry then is not a stall).
    const seqBefore = Atomics.load(m, CTRL.MMU_NOTIFIER_SEQ);
    const leafBefore = s2Leaf(kvm, gfn);
    // A permission fault on an entry the tables already make writable: the
    // TLB kept the read-only one (a lost relax race on 6.5, for one).
    if (permFault && write && descWritable(leafBefore)) kvm.count(vcpu, CNT.spuriousPermFaults);
    vcpu.lockedSeen = -1;
    kvmHandleGuestAbort(kvm, vcpu, gfn, write, permFault, level);
    if (Atomics.load(m, CTRL.END) !== 0) return ACCESS_ABORTED;
    // kvm_dirty_ring_check_request() before the guest is entered again
    if (L.dirtyRingSize !== 0 && kvmDirtyRingCheckRequest(kvm, vcpu)) return ACCESS_RING_FULL;
    // No usable memslot (being deleted: KVM_MEMSLOT_INVALID, or gone): for
    // the kernel an MMIO exit to userspace, which runs the vCPU again until
    // the memslot transaction is over; that wait is not a livelock.
    const noSlot = gfnToMemslot(kvm, gfn) < 0;
    // A fault that met an entry another walker holds LOCKED (arm64, 6.2 on)
    // ended -EAGAIN: the guest re-executes and faults until the owner makes
    // the entry. Wait for that instead of spinning through faults (the owner
    // may be descheduled for a while; in sim mode the scheduler then runs
    // it): not a stall. An entry left LOCKED for ever blocks the vCPU, which
    // the watchdog reports.
    const locked = vcpu.lockedSeen;
    if (locked >= 0) {
      while (Atomics.load(m, locked) === KVM_INVALID_PTE_LOCKED && Atomics.load(m, CTRL.END) === 0) sched.waitWhile(locked, KVM_INVALID_PTE_LOCKED, SITE['fault.retry']);
      stalled = 0;
    } else if (noSlot || Atomics.load(m, CTRL.MMU_NOTIFIER_SEQ) !== seqBefore || s2Leaf(kvm, gfn) !== leafBefore) stalled = 0;
    else stalled++;
    if (stalled >= MAX_FAULTS_PER_ACCESS || faults + 1 >= MAX_FAULTS_PER_ACCESS_TOTAL) {
      reportLivelock(kvm, vcpu, gfn, write, stalled, faults + 1);
      return ACCESS_LIVELOCK;
    }
    // While an invalidation is in progress every re-execution faults and
    // retries (mmu_notifier_retry): wait for the count to move instead of
    // spinning through faults, which also tells the sim scheduler that this
    // vCPU cannot progress until the notifier does.
    const count = Atomics.load(m, CTRL.MMU_NOTIFIER_COUNT);
    if (count !== 0) sched.waitWhile(CTRL.MMU_NOTIFIER_COUNT, count, SITE['fault.retry']);
  }
}

/** The stage-2 leaf descriptor for gfn as a hardware walk reads it (0 when nothing is mapped). */
function s2Leaf(kvm: Kvm, gfn: number): number {
  const m = kvm.m;
  const L = kvm.layout;
  const root = Atomics.load(m, CTRL.S2_PGD) - 1;
  const d1 = root < 0 ? 0 : Atomics.load(m, L.tablesBase + root * 512 + pgdIndex(gfn));
  if (!descIsTable(d1)) return 0;
  const d2 = Atomics.load(m, L.tablesBase + descOa(d1) * 512 + pmdIndex(gfn));
  if (!descIsTable(d2)) return d2;
  return Atomics.load(m, L.tablesBase + descOa(d2) * 512 + pteIndex(gfn));
}

/**
 * An access given up: a `progress` violation (livelock) naming the vCPU, the
 * page, the faults, the entry as it stands and what the last fault met.
 */
function reportLivelock(kvm: Kvm, vcpu: Actor, gfn: number, write: boolean, stalled: number, total: number): void {
  const leaf = s2Lookup(kvm, gfn);
  const ret = vcpu.faultResult;
  let reason: number;
  let detail = 0;
  if (ret < 0) {
    reason = STALL.ERROR;
    detail = ret;
  } else if (ret === FAULT_RETRY) {
    reason = STALL.RETRY;
    detail = Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT);
  } else if (stalled < MAX_FAULTS_PER_ACCESS) {
    reason = STALL.CHURN;
  } else if (leaf.level === 0) {
    reason = STALL.UNMAPPED;
  } else {
    reason = STALL.PERMISSION;
  }
  const kind = reason | (leaf.level << LIVELOCK_LEVEL_SHIFT) | (write ? LIVELOCK_WRITE : 0) | (Math.min(total, MAX_FAULTS_PER_ACCESS_TOTAL) << LIVELOCK_TOTAL_SHIFT);
  kvm.violation(INV.progress, vcpu.id, kind, gfn, stalled, leaf.desc, detail);
}
