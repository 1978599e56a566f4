/**
 * The stage-2 fault path: kvm_handle_guest_abort() -> user_mem_abort(), as
 * in arch/arm/kvm/mmu.c. The profiles differ here (docs/kernel-notes.md):
 * v14 is the seed patch as posted, 4.0 the merged code, later versions add
 * the upstream fixes (mostly in pgtable.ts); each switch is read from
 * kvm.proto, derived from the profile's kernel version (src/profiles.ts).
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';
import { LS } from '../sync/locksites.js';
import { CTRL, KVM_MMU_CACHE_MIN_PAGES, KVM_NR_MEM_OBJS } from '../shm/layout.js';
import { CNT, EV } from '../check/names.js';
import { LEVEL_PMD, LEVEL_PTE, mkWrite, pfnPmdHuge, pfnPte } from '../arch/stage2.js';
import {
  EAGAIN,
  EFAULT,
  kvmPgtableStage2Map,
  kvmPgtableStage2RelaxPerms,
  KVM_S2PTE_FLAG_IS_IOMAP,
  KVM_S2_FLAG_LOGGING_ACTIVE,
  mmuTopupMemoryCache,
  stage2SetPmdHuge,
  stage2SetPte,
} from './pgtable.js';
import { mmuNotifierRetry } from './notifier.js';
import { gfnToMemslot, kvmGetLoggingState, markPageDirty, memslotIsLogging, slotFlags, SLOTW, slotWord } from './memslot.js';
import { srcuReadLock, srcuReadUnlock } from '../sync/srcu.js';
import { gfnToPfnProt } from '../mm/hostfault.js';
import { BACKING_HUGETLB, regionBacking } from '../mm/hostpt.js';
import { FRAME_DEVICE, getPage, isZeroPfn, kvmIsReservedPfn, pageTransCompound, pageTransCompoundMap, putPage } from '../mm/frames.js';

/** user_mem_abort() returned without mapping: mmu_notifier_retry said so. */
export const FAULT_RETRY = 1;

/**
 * transparent_hugepage_adjust(): if the frame is part of a THP, switch to the
 * head frame (moving the reference) and return the 2 MiB aligned gfn; -1 when
 * it is not. Safe because mmu_notifier_retry() passed under mmu_lock: a THP
 * that starts to split blocks in the notifier first.
 *
 * Which THP: until Linux 4.5 it tested PageTransCompound(), and a compound
 * page was always mapped by a host PMD (splitting the PMD split the page).
 * The 4.5 THP refcounting rework let the host map a compound page by PTEs
 * (a partial MADV_DONTNEED, mprotect() of part of it, split_huge_pmd()
 * alone), so the test no longer meant that the host maps the whole 2 MiB:
 * a block went over subpages the host had unmapped or remapped, and guest
 * and host stopped seeing the same memory. 127393fbe597 "mm: thp: kvm: fix
 * memory corruption in KVM with THP enabled" (4.6) tests
 * PageTransCompoundMap(): the host maps this subpage through a huge PMD
 * (later kernels ask the host page table: get_user_mapping_size()).
 */
function transparentHugepageAdjust(kvm: Kvm, actor: Actor, gfn: number, frame: number): number {
  const p = kvm.proto;
  const thp = p.thpAdjustNeedsPmdMap && !p.thpAdjustCompound ? pageTransCompoundMap(kvm, gfn, frame) : pageTransCompound(kvm, frame);
  if (!thp) return -1;
  const head = frame & ~511;
  if (head !== frame) {
    putPage(kvm, actor, frame);
    getPage(kvm, head);
  }
  return head;
}

/**
 * kvm_release_pfn_clean(): give back the lookup's reference, unless the pfn
 * is reserved (kvm_is_reserved_pfn()): device memory has none, and the zero
 * page's is leaked, as every kernel of these profiles did (frames.ts
 * zeroPageExpectedRef; fixed by 7df003c85218 in 5.5). The leak is counted so
 * that the zero page's refcount stays explainable.
 */
function kvmReleasePfnClean(kvm: Kvm, actor: Actor, pfn: number): void {
  if (!kvmIsReservedPfn(kvm, pfn)) putPage(kvm, actor, pfn);
  else if (isZeroPfn(pfn)) kvm.count(actor, CNT.zeroPageRefsLeaked);
}

/**
 * user_mem_abort(). Returns 0 when mapped, FAULT_RETRY when the notifier
 * sequence moved (the guest re-executes and faults again), or a negative
 * errno. `slot` and `flags` are the memslot the caller looked up under SRCU.
 */
export function userMemAbort(
  kvm: Kvm,
  vcpu: Actor,
  gfn: number,
  writeFault: boolean,
  permFault: boolean,
  slot: number,
  memslotFlags: number,
  faultLevel: number = LEVEL_PTE,
): number {
  const m = kvm.m;
  const p = kvm.proto;
  const logging = p.v14 ? kvmGetLoggingState(memslotFlags) : memslotIsLogging(memslotFlags);
  let flags = logging && p.v14 ? KVM_S2_FLAG_LOGGING_ACTIVE : 0;

  if (permFault && !writeFault) {
    // kvm_err("Unexpected L2 read permission error\n");
    return EFAULT;
  }

  /* Let's check if we will get back a huge page backed by hugetlbfs */
  let hugetlb = false;
  let forcePte = false;
  let forcePteByLogging = false;
  let faultGfn = gfn;
  if (regionBacking(kvm, gfn) === BACKING_HUGETLB && (!logging || p.hugetlbWhileLogging)) {
    hugetlb = true;
    faultGfn = gfn & ~511;
  } else {
    // Slots whose userspace address and IPA differ in alignment cannot use
    // block descriptors (the model lays slots out aligned; kept for fidelity).
    const hvaBase = m[slotWord(kvm, slot, SLOTW.HVA_BASE)];
    const baseGfn = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
    if ((hvaBase & 511) !== (baseGfn & 511)) forcePte = true;
  }

  /* We need minimum second+third level pages */
  const ret0 = mmuTopupMemoryCache(kvm, vcpu, KVM_MMU_CACHE_MIN_PAGES, KVM_NR_MEM_OBJS);
  if (ret0 < 0) return ret0;

  let mmuSeq = Atomics.load(m, CTRL.MMU_NOTIFIER_SEQ);
  vcpu.sched.point(SITE['fault.seq']);

  const hugetlbfs = hugetlb;
  // The gup-under-mmu-lock bug takes mmu_lock before the host lookup, which
  // may take the host PTE lock: the inverse of change_pte's ptl -> mmu_lock.
  if (p.gupUnderMmuLock) kvm.mmuLock.lock(vcpu, LS.fault);
  let pfn = gfnToPfnProt(kvm, vcpu, hugetlb ? faultGfn : gfn, writeFault);
  if (pfn === 0) {
    if (p.gupUnderMmuLock) kvm.mmuLock.unlock(vcpu);
    return EFAULT;
  }
  let writable = vcpu.writable;
  vcpu.sched.point(SITE['fault.gfn_to_pfn']);
  // The seq-after-lookup bug reads the sequence only now, after the lookup
  // took its reference (the smp_rmb() before gfn_to_pfn_prot() undone).
  if (p.seqAfterLookup) mmuSeq = Atomics.load(m, CTRL.MMU_NOTIFIER_SEQ);

  const device = (Atomics.load(m, kvm.layout.frameFlags + pfn) & FRAME_DEVICE) !== 0;
  if (p.v14) {
    // SET_SPTE_FLAGS(logging_active, mem_type == PAGE_S2_DEVICE); `writable`
    // stays what the host lookup said, even for a read fault while logging.
    if (device) flags |= KVM_S2PTE_FLAG_IS_IOMAP;
  } else if (device) {
    flags |= KVM_S2PTE_FLAG_IS_IOMAP;
  } else if (logging) {
    /*
     * Faults on pages in a memslot with logging enabled should not be mapped
     * with huge pages (it introduces churn and performance degradation), so
     * force a pte mapping.
     */
    forcePteByLogging = true;
    flags |= KVM_S2_FLAG_LOGGING_ACTIVE;
    /* Only actually map the page as writable if this was a write fault. */
    if (p.writeFaultMapsReadonly ? writeFault : !writeFault) writable = false;
  }

  // Which side of mmu_lock (an rwlock from 5.18): 6.2 takes the read side
  // for every fault; 5.18 only for a write-permission fault while logging
  // (f783ef1c0e82), on a page (f587661f21eb; the -rc also on a block).
  const readSide =
    p.sharedWalker ||
    (p.readLockPermFaults && permFault && writeFault && logging && (p.readLockBlockFaults || faultLevel === LEVEL_PTE));
  if (!p.gupUnderMmuLock) {
    if (readSide) kvm.mmuLock.readLock(vcpu, LS.fault);
    else kvm.mmuLock.lock(vcpu, LS.fault);
  }
  if (readSide) kvm.count(vcpu, CNT.readSideFaults);
  vcpu.sched.point(SITE['fault.locked']);
  let ret = 0;
  if (!p.noNotifierRetry && mmuNotifierRetry(kvm, mmuSeq)) {
    ret = FAULT_RETRY;
  } else if (p.pgtableApi) {
    mapOut.pfn = pfn;
    ret = stage2MapOrRelax(kvm, vcpu, gfn, writable, device, hugetlb, forcePte || forcePteByLogging, permFault, faultLevel, readSide);
    pfn = mapOut.pfn; // transparent_hugepage_adjust() may have moved the reference to the head page
    if (ret === -1) ret = 0;
  } else {
    // v14: `if (!hugetlb && !force_pte && !logging_active)`; v15 folds
    // logging into force_pte. The thp-while-logging bug ignores logging here.
    const loggingForbidsBlock = p.v14 ? logging : forcePteByLogging;
    if (!hugetlb && !forcePte && (!loggingForbidsBlock || p.thpWhileLogging)) {
      const head = transparentHugepageAdjust(kvm, vcpu, gfn, pfn);
      if (head >= 0) {
        pfn = head;
        faultGfn = gfn & ~511;
        hugetlb = true;
      }
    }

    if (hugetlb) {
      let newPmd = pfnPmdHuge(pfn);
      if (writable) newPmd = mkWrite(newPmd);
      ret = stage2SetPmdHuge(kvm, vcpu, faultGfn, newPmd);
    } else {
      let newPte = pfnPte(pfn, device);
      if (writable) {
        newPte = mkWrite(newPte);
        // v15+: mark_page_dirty() when the new entry is writable, before set_pte
        if (!p.v14 && !p.noMarkDirty) markPageDirty(kvm, vcpu, gfn);
      }
      ret = stage2SetPte(kvm, vcpu, true, gfn, newPte, flags);
    }
    // v14: `if (write_fault) mark_page_dirty(kvm, gfn);` after the mapping
    // (gfn is the block's first page for hugetlb), still under mmu_lock.
    if (p.v14 && writeFault && !p.noMarkDirty) markPageDirty(kvm, vcpu, hugetlbfs ? faultGfn : gfn);
  }
  if (readSide) kvm.mmuReadUnlock(vcpu);
  else kvm.mmuLock.unlock(vcpu);
  // kvm_release_pfn_clean(); the retry-leaks-page bug skips it on the retry path
  if (!(p.retryLeaksPage && ret === FAULT_RETRY)) kvmReleasePfnClean(kvm, vcpu, pfn);
  vcpu.sched.point(SITE['fault.done']);
  return ret;
}

/**
 * The mapping step of user_mem_abort() in the arm64 kvm_pgtable design
 * (5.18 on), under mmu_lock (read or write side): the mapping size, then
 * either the permission relax or the map walker, then mark_page_dirty.
 *
 *   if (vma_pagesize == PAGE_SIZE && !(force_pte || device)) {
 *       if (fault_is_perm && fault_granule > PAGE_SIZE)
 *           vma_pagesize = fault_granule;
 *       else
 *           vma_pagesize = transparent_hugepage_adjust(...);
 *   }
 *   if (fault_is_perm && vma_pagesize == fault_granule)
 *       ret = kvm_pgtable_stage2_relax_perms(pgt, fault_ipa, prot);
 *   else
 *       ret = kvm_pgtable_stage2_map(pgt, fault_ipa, vma_pagesize, ...);
 *   if (writable && !ret) mark_page_dirty_in_slot(kvm, memslot, gfn);
 *
 * `-EAGAIN` (a lost race) ends the fault: user_mem_abort() returns 0 and
 * the guest re-executes. The pfn comes in mapOut.pfn and goes out there
 * (moved to the THP's head page). Returns 0, -1 for -EAGAIN, or a negative errno.
 * The walks are shared from 6.2 (`shared`: the fault holds the read side
 * there); 5.18's walker is exclusive even under the read side.
 */
const mapOut = { pfn: 0 };

function stage2MapOrRelax(
  kvm: Kvm,
  vcpu: Actor,
  gfn: number,
  writable: boolean,
  device: boolean,
  hugetlb: boolean,
  forcePte: boolean,
  permFault: boolean,
  faultLevel: number,
  readSide: boolean,
): number {
  const p = kvm.proto;
  const shared = p.sharedWalker && readSide;
  let pfn = mapOut.pfn;
  let level = hugetlb ? LEVEL_PMD : LEVEL_PTE;
  let mapGfn = hugetlb ? gfn & ~511 : gfn;
  if (level === LEVEL_PTE && !forcePte && !device) {
    if (permFault && faultLevel === LEVEL_PMD) {
      level = LEVEL_PMD;
      mapGfn = gfn & ~511;
    } else {
      const head = transparentHugepageAdjust(kvm, vcpu, gfn, pfn);
      if (head >= 0) {
        pfn = head;
        mapOut.pfn = head;
        level = LEVEL_PMD;
        mapGfn = gfn & ~511;
      }
    }
  }
  let ret: number;
  if (permFault && level === faultLevel) {
    ret = kvmPgtableStage2RelaxPerms(kvm, vcpu, gfn, shared, faultLevel);
  } else {
    let desc = level === LEVEL_PMD ? pfnPmdHuge(pfn) : pfnPte(pfn, device);
    if (writable) desc = mkWrite(desc);
    ret = kvmPgtableStage2Map(kvm, vcpu, mapGfn, level, desc, shared);
  }
  // Mark the page dirty only if the fault is handled successfully.
  if (writable && ret === 0 && !p.noMarkDirty) markPageDirty(kvm, vcpu, gfn);
  if (ret === EAGAIN) {
    kvm.count(vcpu, CNT.lostRaces);
    return -1;
  }
  return ret;
}

/**
 * kvm_handle_guest_abort(): under the SRCU read side, find the memslot and
 * call user_mem_abort(). `faultLevel`: the level of the entry a permission
 * fault hit (the fault granule). Returns 0 (mapped or retry) or a negative errno.
 */
export function kvmHandleGuestAbort(kvm: Kvm, vcpu: Actor, gfn: number, writeFault: boolean, permFault: boolean, faultLevel: number = LEVEL_PTE): number {
  vcpu.sched.point(SITE['fault.entry']);
  srcuReadLock(kvm, vcpu);
  const slot = gfnToMemslot(kvm, gfn);
  let ret: number;
  if (slot < 0) {
    ret = EFAULT; // io_mem_abort(): outside every slot (MMIO), not modelled
  } else {
    ret = userMemAbort(kvm, vcpu, gfn, writeFault, permFault, slot, slotFlags(kvm, slot), faultLevel);
  }
  srcuReadUnlock(kvm, vcpu);
  vcpu.faultResult = ret;
  kvm.count(vcpu, CNT.faults);
  if (ret === FAULT_RETRY) {
    kvm.count(vcpu, CNT.faultRetries);
    kvm.trace(vcpu, EV['fault.retry'], gfn, writeFault ? 1 : 0);
  } else {
    kvm.trace(vcpu, EV.fault, gfn, writeFault ? 1 : 0, ret);
  }
  if (ret < 0) kvm.count(vcpu, CNT.efaults);
  return ret === FAULT_RETRY ? 0 : ret;
}
