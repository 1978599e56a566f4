/**
 * gfn_to_pfn_prot() and the host faults behind it (get_user_pages ->
 * handle_mm_fault): look up the frame backing a guest page, allocating it
 * (do_anonymous_page) or breaking copy-on-write (do_wp_page, which goes
 * through change_pte inside an invalidate start/end pair), and waiting while
 * the page is under migration (migration_entry_wait).
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from '../check/names.js';
import {
  HPTE_FRAME_MASK,
  HPTE_MIGRATING,
  HPTE_PRESENT,
  HPTE_WRITE,
  hpteLock,
  hpteSetLocked,
  hpteUnlock,
} from './hostpt.js';
import { FRAME_DEVICE, allocFrame, getPage, putPage } from './frames.js';
import {
  kvmMmuNotifierChangePte,
  kvmMmuNotifierInvalidateRangeEnd,
  kvmMmuNotifierInvalidateRangeStart,
} from '../kvm/notifier.js';

/**
 * gfn_to_pfn_prot(kvm, gfn, write_fault, &writable): the frame with a
 * reference taken (none for device memory), or 0 on failure; whether the
 * host mapping is writable goes to `actor.writable`. A read fault reports the
 * mapping writable whenever the host PTE is (hva_to_pfn tries a writable
 * lookup first).
 */
export function gfnToPfnProt(kvm: Kvm, actor: Actor, gfn: number, writeFault: boolean): number {
  const m = kvm.m;
  for (;;) {
    let v = hpteLock(kvm, actor, gfn);
    if ((v & HPTE_MIGRATING) !== 0) {
      hpteUnlock(kvm, gfn, v);
      actor.sched.waitWhile(kvm.layout.hpte + gfn, v, SITE['hostpt.migrating']);
      continue;
    }
    if ((v & HPTE_PRESENT) === 0) {
      // do_anonymous_page(): a fresh zeroed page, mapped writable.
      const f = allocFrame(kvm, actor);
      if (f === 0) {
        hpteUnlock(kvm, gfn, v);
        return 0;
      }
      v = f | HPTE_PRESENT | HPTE_WRITE;
      hpteSetLocked(kvm, gfn, v);
      kvm.count(actor, CNT.hostFaults);
    }
    const f = v & HPTE_FRAME_MASK;
    if ((m[kvm.layout.frameFlags + f] & FRAME_DEVICE) !== 0) {
      actor.writable = (v & HPTE_WRITE) !== 0;
      hpteUnlock(kvm, gfn, v);
      return f;
    }
    if (writeFault && (v & HPTE_WRITE) === 0) {
      hpteUnlock(kvm, gfn, v);
      doWpPage(kvm, actor, gfn, v);
      continue;
    }
    getPage(kvm, f);
    actor.writable = (v & HPTE_WRITE) !== 0;
    hpteUnlock(kvm, gfn, v);
    return f;
  }
}

/**
 * do_wp_page() -> wp_page_copy(): break copy-on-write of a read-only page
 * (a KSM page): copy it to a new frame and switch the host PTE with
 * set_pte_at_notify() (change_pte), all inside invalidate start/end.
 */
export function doWpPage(kvm: Kvm, actor: Actor, gfn: number, seen: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  kvmMmuNotifierInvalidateRangeStart(kvm, actor, gfn, 1);
  const v = hpteLock(kvm, actor, gfn);
  if (v !== seen) {
    hpteUnlock(kvm, gfn, v);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
    return;
  }
  const old = v & HPTE_FRAME_MASK;
  const nf = allocFrame(kvm, actor);
  if (nf === 0) {
    hpteUnlock(kvm, gfn, v);
    kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
    return;
  }
  Atomics.store(m, L.frameData + nf, Atomics.load(m, L.frameData + old));
  const nv = nf | HPTE_PRESENT | HPTE_WRITE;
  setPteAtNotifyAndUnlock(kvm, actor, gfn, nv);
  kvmMmuNotifierInvalidateRangeEnd(kvm, actor, gfn, 1);
  putPage(kvm, actor, old);
  kvm.count(actor, CNT.cowBreaks);
  kvm.trace(actor, EV['host.cow'], gfn, old, nf);
}

/**
 * set_pte_at_notify() under the held host PTE lock, then unlock: the new
 * entry is installed and KVM hears of it through change_pte (which takes
 * mmu_lock: the ptl -> mmu_lock order).
 */
export function setPteAtNotifyAndUnlock(kvm: Kvm, actor: Actor, gfn: number, nv: number): void {
  hpteSetLocked(kvm, gfn, nv);
  kvmMmuNotifierChangePte(kvm, actor, gfn, nv & HPTE_FRAME_MASK);
  hpteUnlock(kvm, gfn, nv);
}

/**
 * What the host (QEMU, the migration thread) reads at a guest page through
 * its own mapping: the frame's content, or 0 for a page not present.
 */
export function hostReadPage(kvm: Kvm, actor: Actor, gfn: number): number {
  for (;;) {
    const v = hpteLock(kvm, actor, gfn);
    if ((v & HPTE_MIGRATING) !== 0) {
      hpteUnlock(kvm, gfn, v);
      actor.sched.waitWhile(kvm.layout.hpte + gfn, v, SITE['hostpt.migrating']);
      continue;
    }
    const data = (v & HPTE_PRESENT) !== 0 ? Atomics.load(kvm.m, kvm.layout.frameData + (v & HPTE_FRAME_MASK)) : 0;
    hpteUnlock(kvm, gfn, v);
    return data;
  }
}
