/**
 * The host kernel's memory management, as an actor: page migration and
 * compaction, THP split and collapse (khugepaged), KSM merge (change_pte),
 * MADV_DONTNEED zaps (balloon), and on THP memory the operations on part of
 * a THP (split_huge_pmd, a partial zap, mprotect of part, the deferred
 * split), picked by seeded weights and paced at a configured rate. Every operation preserves content and tells KVM through
 * the MMU notifiers.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { XorShift32 } from '../sync/sched.js';
import { CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { collapseHugePage, deferredSplitHugePage, ksmMerge, migratePage, mprotectRange, splitHugePage, splitHugePmdOrPage, zapRange } from '../mm/hostops.js';
import { BACKING_THP, regionBacking } from '../mm/hostpt.js';
import { safePoint, tick } from './control.js';
import { hostMmExitMmap } from './teardown.js';
import { type ActorParams, type HostOpsWeights, actorSeed } from './params.js';

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
    const gfn = rng.below(L.ramPages);
    if ((r -= w.migrate) < 0) {
      migratePage(kvm, actor, gfn);
    } else if ((r -= w.split) < 0) {
      splitHugePage(kvm, actor, rng.below(ramRegions), scratch);
    } else if ((r -= w.collapse) < 0) {
      collapseHugePage(kvm, actor, rng.below(ramRegions), scratch);
    } else if ((r -= w.ksm) < 0) {
      // A neighbour is the likeliest twin (both untouched, or both zapped).
      const other = (gfn & ~511) + rng.below(512);
      ksmMerge(kvm, actor, gfn, other);
    } else if ((r -= w.zap) < 0) {
      if (guestRunning()) {
        // Half the zaps straddle a 2 MiB boundary (unaligned, over two PMDs).
        const len = 1 + rng.below(16);
        const start = rng.below(2) === 0 ? Math.min(gfn, (gfn | 511) + 1 - len) : (gfn | 511) + 1 - rng.below(len);
        zapRange(kvm, actor, start, len, scratch);
      }
    } else {
      thpPartOp(kvm, actor, rng, r, t, thpRegions[rng.below(nThp)], guestRunning(), scratch);
    }
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
