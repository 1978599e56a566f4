/**
 * Per-vCPU TLBs in shared memory, and the two flushes the kernel uses:
 * kvm_tlb_flush_vmid_ipa() (by IPA) and kvm_flush_remote_tlbs() (whole VM),
 * with the semantics of the architecture the profile runs on.
 *
 * Each vCPU has a direct-mapped array of 4 KiB entries and one of 2 MiB block
 * entries, each slot two words: a tag and the descriptor as the walk read it.
 *
 * Entry kinds. A TLB may keep a translation as one combined stage-1+2 entry
 * (tagged by VA, ASID and VMID: a data access translated through the guest's
 * stage-1 tables), or keep the stage-2 part on its own, tagged by IPA and
 * VMID: the entries a split TLB or a walk cache holds, and the ones the
 * stage-1 walker's own reads of the guest's page tables use. Which one a walk
 * leaves is the implementation's choice; the model caches one fill in four
 * as stage-2-only (TLB_S2_ONLY), so both kinds are always present. The model
 * has no guest VA: either kind serves any later access to its IPA, as a
 * stage-2-only entry does once a stage-1 walk (the guest's tables are not
 * changed by KVM) has been redone after the combined entries went away.
 *
 * Flush semantics (`proto.arch`):
 * - armv7: __kvm_tlb_flush_vmid_ipa (arch/arm/kvm/interrupts.S) is TLBIALLIS,
 *   "As v7 does not support flushing per IPA, just nuke the whole TLB
 *   instead, ignoring the ipa value": every flush drops every entry of the VM.
 * - arm64: __kvm_tlb_flush_vmid_ipa (arch/arm64/kvm/hyp/tlb.c) is `tlbi
 *   ipas2e1is` for the IPA (the stage-2 entries of that IPA) then `tlbi
 *   vmalle1is` (every stage-1 entry of the VMID, hence every combined one):
 *   a stage-2-only entry of another IPA survives. __kvm_tlb_flush_vmid
 *   (kvm_flush_remote_tlbs) is `tlbi vmalls12e1is`: everything.
 *
 * The tag word: bits 0..22 the base (gfn + 1, or 2 MiB block number + 1;
 * 0 = empty), bit 23 the kind, bits 24..31 a generation. Dropping every
 * combined entry (vmalle1is) or every entry (vmalls12e1is, TLBIALLIS) is one
 * increment of a generation (TLB_GEN_S1, TLB_GEN_ALL): a combined entry is
 * live while its generation is the low byte of TLB_GEN_S1, a stage-2-only
 * one while it is that of TLB_GEN_ALL; a whole-VM flush moves both. Every 64
 * increments the flusher sweeps entries of older generations out, so that
 * the 8-bit generation of a surviving entry never comes round again.
 *
 * A flush completes only when no vCPU can still use a removed entry (TLBI
 * followed by DSB): it invalidates, waits for every vCPU that is in the
 * middle of an access (its ACCESS_SEQ is odd) to finish it, then invalidates
 * again, which catches an entry filled by a walk that read the tables before
 * they changed (a fill takes the generation current when it stores).
 */
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { ACTOR } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT, EV } from '../check/names.js';
import { bbmFlushed } from '../check/bbm.js';

/** Tag bits 0..22: gfn + 1 (4 KiB entry) or 2 MiB block number + 1 (block entry). */
export const TLB_BASE_MASK = (1 << 23) - 1;
/** Tag bit 23: a stage-2-only entry (IPA -> PA); clear for a combined stage-1+2 entry. */
export const TLB_S2_ONLY = 1 << 23;
const TLB_GEN_SHIFT = 24;
/** Generation words, relative to layout.tlbGen. */
export const TLB_GEN_S1 = 0;
export const TLB_GEN_ALL = 1;
/** Sweep stale generations out every this many increments (well under 256). */
const TLB_SWEEP_EVERY = 64;
/** One fill in this many is stage-2-only (a power of two). */
export const TLB_S2_ONLY_ONE_IN = 4;

export function tlbPageSlot(kvm: Kvm, vcpu: number, gfn: number): number {
  const L = kvm.layout;
  return L.tlb + vcpu * L.tlbWords + (gfn & (L.tlbPageSlots - 1)) * 2;
}

export function tlbBlockSlot(kvm: Kvm, vcpu: number, gfn: number): number {
  const L = kvm.layout;
  return L.tlb + vcpu * L.tlbWords + L.tlbPageSlots * 2 + ((gfn >>> 9) & (L.tlbBlockSlots - 1)) * 2;
}

/** Whether a tag word is an entry of the current generation of its kind (0 is never live). */
export function tlbTagLive(m: Int32Array, genBase: number, tag: number): boolean {
  if (tag === 0) return false;
  const gen = Atomics.load(m, genBase + ((tag & TLB_S2_ONLY) !== 0 ? TLB_GEN_ALL : TLB_GEN_S1));
  return tag >>> TLB_GEN_SHIFT === (gen & 255);
}

/** The base (gfn + 1 or block + 1) of a live tag, else 0: what checks read. */
export function tlbLiveBase(kvm: Kvm, tag: number): number {
  return tlbTagLive(kvm.m, kvm.layout.tlbGen, tag) ? tag & TLB_BASE_MASK : 0;
}

/**
 * Fill a slot: the tag is cleared first and written last, so that a reader
 * who sees the same tag before and after reading the descriptor (within
 * one access of the owner) read the descriptor of that tag.
 */
export function tlbFill(m: Int32Array, genBase: number, slot: number, base: number, desc: number, s2Only: boolean): void {
  const gen = Atomics.load(m, genBase + (s2Only ? TLB_GEN_ALL : TLB_GEN_S1)) & 255;
  Atomics.store(m, slot, 0);
  Atomics.store(m, slot + 1, desc);
  Atomics.store(m, slot, base | (s2Only ? TLB_S2_ONLY : 0) | (gen << TLB_GEN_SHIFT));
}

/** Remove the entries of every vCPU for this IPA, of either kind (tlbi ipas2e1is, and what vmalle1is then takes). */
function invalidateIpa(kvm: Kvm, gfn: number): void {
  const m = kvm.m;
  const pageBase = gfn + 1;
  const blockBase = (gfn >>> 9) + 1;
  for (let v = 0; v < kvm.layout.vcpus; v++) {
    const ps = tlbPageSlot(kvm, v, gfn);
    const pt = Atomics.load(m, ps);
    if ((pt & TLB_BASE_MASK) === pageBase) Atomics.compareExchange(m, ps, pt, 0);
    const bs = tlbBlockSlot(kvm, v, gfn);
    const bt = Atomics.load(m, bs);
    if ((bt & TLB_BASE_MASK) === blockBase) Atomics.compareExchange(m, bs, bt, 0);
  }
}

/** Move a generation on (every entry of the older one is dead), sweeping now and then. */
function bumpGen(kvm: Kvm, which: number): void {
  const g = Atomics.add(kvm.m, kvm.layout.tlbGen + which, 1) + 1;
  if ((g & (TLB_SWEEP_EVERY - 1)) === 0) sweepStale(kvm);
}

/** Physically drop the entries no generation makes live any more. */
function sweepStale(kvm: Kvm): void {
  const m = kvm.m;
  const L = kvm.layout;
  // The generations may move on during the sweep: a dead entry it spares
  // goes at the next sweep, a fresh one it takes is an eviction (a TLB may
  // drop any entry at any time).
  const s1 = Atomics.load(m, L.tlbGen + TLB_GEN_S1) & 255;
  const all = Atomics.load(m, L.tlbGen + TLB_GEN_ALL) & 255;
  for (let v = 0; v < L.vcpus; v++) {
    const base = L.tlb + v * L.tlbWords;
    for (let s = 0; s < L.tlbPageSlots + L.tlbBlockSlots; s++) {
      const t = Atomics.load(m, base + s * 2);
      if (t === 0) continue;
      const gen = (t & TLB_S2_ONLY) !== 0 ? all : s1;
      if (t >>> TLB_GEN_SHIFT !== gen) Atomics.compareExchange(m, base + s * 2, t, 0);
    }
  }
}

/** Every entry of the VM (TLBIALLIS on v7, vmalls12e1is on arm64). */
function invalidateAll(kvm: Kvm): void {
  bumpGen(kvm, TLB_GEN_ALL);
  bumpGen(kvm, TLB_GEN_S1);
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

/**
 * kvm_tlb_flush_vmid_ipa() -> __kvm_tlb_flush_vmid_ipa(): on armv7 the whole
 * VMID (TLBIALLIS, the IPA ignored); on arm64 the stage-2 entries of this
 * IPA, then every combined entry of the VMID.
 */
export function kvmTlbFlushVmidIpa(kvm: Kvm, actor: Actor, gfn: number): void {
  actor.sched.point(SITE['tlb.flush']);
  kvm.count(actor, CNT.tlbFlushes);
  kvm.trace(actor, EV['flush.ipa'], gfn);
  const whole = kvm.proto.arch === 'armv7';
  if (whole) {
    invalidateAll(kvm);
    waitForAccesses(kvm, actor);
    invalidateAll(kvm);
  } else {
    invalidateIpa(kvm, gfn); // tlbi ipas2e1is
    bumpGen(kvm, TLB_GEN_S1); // dsb ish; tlbi vmalle1is
    waitForAccesses(kvm, actor); // dsb ish
    invalidateIpa(kvm, gfn);
    bumpGen(kvm, TLB_GEN_S1);
  }
  bbmFlushed(kvm, actor, gfn, whole);
}

/** kvm_flush_remote_tlbs() -> __kvm_tlb_flush_vmid(): every entry of the VM (TLBIALLIS; vmalls12e1is). */
export function kvmFlushRemoteTlbs(kvm: Kvm, actor: Actor): void {
  actor.sched.point(SITE['tlb.flush']);
  kvm.count(actor, CNT.tlbFlushes);
  kvm.trace(actor, EV['flush.all'], 0);
  invalidateAll(kvm);
  waitForAccesses(kvm, actor);
  invalidateAll(kvm);
  bbmFlushed(kvm, actor, 0, true);
}

/** Local invalidation of one vCPU's entries for an IPA (on taking a fault). */
export function tlbLocalInvalidate(kvm: Kvm, vcpu: number, gfn: number): void {
  const m = kvm.m;
  const ps = tlbPageSlot(kvm, vcpu, gfn);
  const pt = Atomics.load(m, ps);
  if ((pt & TLB_BASE_MASK) === gfn + 1) Atomics.compareExchange(m, ps, pt, 0);
  const bs = tlbBlockSlot(kvm, vcpu, gfn);
  const bt = Atomics.load(m, bs);
  if ((bt & TLB_BASE_MASK) === (gfn >>> 9) + 1) Atomics.compareExchange(m, bs, bt, 0);
}

/**
 * __kvm_tlb_flush_vmid_ipa_nsh() (arch/arm64/kvm/hyp/tlb.c, 6.5 on): `tlbi
 * ipas2e1` and `tlbi vmalle1` without the inner-shareable broadcast: only
 * the calling vCPU's entries for the IPA go (the relax path's local TLBI).
 */
export function kvmTlbFlushVmidIpaNsh(kvm: Kvm, vcpu: Actor, gfn: number, _level: number): void {
  vcpu.sched.point(SITE['tlb.flush']);
  kvm.count(vcpu, CNT.tlbFlushes);
  kvm.trace(vcpu, EV['flush.ipa'], gfn);
  tlbLocalInvalidate(kvm, vcpu.id, gfn);
}
