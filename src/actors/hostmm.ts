/**
 * The host kernel's memory management, as an actor: page migration and
 * compaction, THP split and collapse (khugepaged), KSM merge (change_pte),
 * MADV_DONTNEED zaps (balloon), and on THP memory the operations on part of
 * a THP (split_huge_pmd, a partial zap, mprotect of part, the deferred
 * split), picked by seeded weights and paced at a configured rate. Every operation preserves content and tells KVM through
 * the MMU notifiers.
 *
 * Memory pressure hits hot pages: a share of the operations (1 in
 * HINT_EVERY) aims at the page a vCPU is using right now, read from that
 * vCPU's TARGET_GFN word (its access in flight, the page it faults on when
 * it faults), the way NUMA balancing migrates the very pages a CPU touches.
 * Uniform targets alone meet a fault's window (between its notifier-sequence
 * snapshot and mmu_lock) once in thousands of operations. The actor also
 * publishes the page it works on, so that vCPUs can aim at pages under a
 * host operation.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { XorShift32 } from '../sync/sched.js';
import { ACTOR, CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { CNT } from '../check/names.js';
import { collapseHugePage, deferredSplitHugePage, ksmMerge, migratePage, mprotectRange, splitHugePage, splitHugePmdOrPage, zapRange } from '../mm/hostops.js';
import { BACKING_THP, regionBacking } from '../mm/hostpt.js';
import { safePoint, tick } from './control.js';
import { hostMmExitMmap } from './teardown.js';
import { type ActorParams, type HostOpsWeights, HINT_EVERY, actorSeed } from './params.js';

/**
 * The page vCPU `v` is using now (its access in flight, or its latest), or
 * -1 when it has none or it is outside guest RAM.
 */
export function vcpuTargetGfn(kvm: Kvm, v: number): number {
  const gfn = Atomics.load(kvm.m, kvm.actorWord(v, ACTOR.TARGET_GFN)) - 1;
  return gfn >= 0 && gfn < kvm.layout.ramPages ? gfn : -1;
}

export function runHostMm(kvm: Kvm, actor: Actor, p: ActorParams): void {
  const m = kvm.m;
  const L = kvm.layout;
  const rng = new XorShift32(actorSeed(p.seed, actor.id));
  const scratch = new Int32Array(1024);
  const w = p.hostOps;
  const ramRegions = L.ramPages >>> 9;
  // The 2 MiB regions of THP memory, for the operations on part of a THP.
  const thpRegions = new Int32Array(ramRegions);
  let nThp = 0;
  for (let r = 0; r < ramRegions; r++) if (regionBacking(kvm, r << 9) === BACKING_THP) thpRegions[nThp++] = r;
  const t = thpOpWeights(w, nThp > 0);
  const total = w.migrate + w.split + w.collapse + w.ksm + w.zap + t.splitPmd + t.thpZap + t.mprotect + t.deferredSplit;
  const gapMs = p.hostOpsPerSec > 0 ? 1000 / p.hostOpsPerSec : 0;
  const targetWord = kvm.actorWord(actor.id, ACTOR.TARGET_GFN);
  // The guest does not balloon while it is paused for stop-and-copy.
  const guestRunning = (): boolean => Atomics.load(m, CTRL.PAUSE_VCPUS) === 0;

  while (safePoint(kvm, actor, false)) {
    // The `teardown` scenario: exit_mmap() of the VM's process (src/actors/teardown.ts).
    if (hostMmExitMmap(kvm, actor)) continue;
    if (p.hostOpsPerSec === 0 || total === 0) {
      const gen = Atomics.load(m, CTRL.CONTROL_GEN);
      actor.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['actor.loop']);
      continue;
    }
    let r = rng.below(total);
    let gfn = rng.below(L.ramPages);
    let hinted = false;
    if (rng.below(HINT_EVERY) === 0) {
      const hot = vcpuTargetGfn(kvm, rng.below(L.vcpus));
      if (hot >= 0) {
        gfn = hot;
        hinted = true;
        kvm.count(actor, CNT.hostOpsHinted);
      }
    }
    Atomics.store(m, targetWord, gfn + 1);
    if ((r -= w.migrate) < 0) {
      // A hot page is moved as NUMA balancing moves it: no racy skip of a
      // page with an extra reference; migrate_pages() retries it instead.
      migratePage(kvm, actor, gfn, !hinted);
    } else if ((r -= w.split) < 0) {
      splitHugePage(kvm, actor, gfn >>> 9, scratch);
    } else if ((r -= w.collapse) < 0) {
      collapseHugePage(kvm, actor, gfn >>> 9, scratch);
    } else if ((r -= w.ksm) < 0) {
      // A neighbour is the likeliest twin (both untouched, or both zapped).
      // KSM replaces the second page's mapping: a hot page is that one.
      const other = (gfn & ~511) + rng.below(512);
      if (hinted) ksmMerge(kvm, actor, other, gfn);
      else ksmMerge(kvm, actor, gfn, other);
    } else if ((r -= w.zap) < 0) {
      if (guestRunning()) {
        const len = 1 + rng.below(16);
        let start: number;
        if (hinted) {
          // A range over the hot page.
          start = Math.max(0, Math.min(gfn - rng.below(len), L.ramPages - len));
        } else {
          // Half the zaps straddle a 2 MiB boundary (unaligned, over two PMDs).
          start = rng.below(2) === 0 ? Math.min(gfn, (gfn | 511) + 1 - len) : (gfn | 511) + 1 - rng.below(len);
        }
        zapRange(kvm, actor, start, len, scratch);
      }
    } else {
      // On part of a THP: the hot page's own THP when it has one.
      const region = hinted && regionBacking(kvm, gfn) === BACKING_THP ? gfn >>> 9 : thpRegions[rng.below(nThp)];
      thpPartOp(kvm, actor, rng, r, t, region, guestRunning(), scratch);
    }
    Atomics.store(m, targetWord, 0);
    tick(kvm, actor);
    actor.sched.idle(gapMs);
  }
}

/** Weights of the operations on part of a THP: a scenario's own, or derived from its split and zap weights. */
export function thpOpWeights(w: HostOpsWeights, hasThp: boolean): Required<Pick<HostOpsWeights, 'splitPmd' | 'thpZap' | 'mprotect' | 'deferredSplit'>> {
  if (!hasThp) return { splitPmd: 0, thpZap: 0, mprotect: 0, deferredSplit: 0 };
  const half = Math.ceil(w.split / 2);
  return {
    splitPmd: w.splitPmd ?? half,
    thpZap: w.thpZap ?? Math.ceil(w.zap / 2),
    mprotect: w.mprotect ?? half,
    deferredSplit: w.deferredSplit ?? half,
  };
}

/**
 * One operation on part of a THP region (`r` is what is left of the weighted
 * draw): split its PMD alone, give part of it back (balloon: not while the
 * guest is paused), mprotect() part of it, or split it from the deferred
 * split queue. What each does to the THP depends on the kernel: since 4.5 the
 * THP stays compound and mapped by PTEs; before, the page itself is split.
 */
function thpPartOp(
  kvm: Kvm,
  actor: Actor,
  rng: XorShift32,
  r: number,
  t: ReturnType<typeof thpOpWeights>,
  region: number,
  guestRunning: boolean,
  scratch: Int32Array,
): void {
  const base = region << 9;
  const len = 1 + rng.below(16);
  const start = base + rng.below(512 - len);
  if ((r -= t.splitPmd) < 0) {
    splitHugePmdOrPage(kvm, actor, region, scratch);
  } else if ((r -= t.thpZap) < 0) {
    if (guestRunning) zapRange(kvm, actor, start, len, scratch);
  } else if ((r -= t.mprotect) < 0) {
    mprotectRange(kvm, actor, start, len, scratch);
  } else {
    deferredSplitHugePage(kvm, actor, region, scratch);
  }
}
