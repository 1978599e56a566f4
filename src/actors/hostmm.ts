/**
 * The host kernel's memory management, as an actor: page migration and
 * compaction, THP split and collapse (khugepaged), KSM merge (change_pte),
 * and MADV_DONTNEED zaps (balloon), picked by seeded weights and paced at a
 * configured rate. Every operation preserves content and tells KVM through
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
import { collapseHugePage, ksmMerge, migratePage, splitHugePage, zapRange } from '../mm/hostops.js';
import { safePoint, tick } from './control.js';
import { type ActorParams, HINT_EVERY, actorSeed } from './params.js';

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
  const total = w.migrate + w.split + w.collapse + w.ksm + w.zap;
  const gapMs = p.hostOpsPerSec > 0 ? 1000 / p.hostOpsPerSec : 0;
  const targetWord = kvm.actorWord(actor.id, ACTOR.TARGET_GFN);
  // The guest does not balloon while it is paused for stop-and-copy.
  const guestRunning = (): boolean => Atomics.load(m, CTRL.PAUSE_VCPUS) === 0;

  while (safePoint(kvm, actor, false)) {
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
    } else if (guestRunning()) {
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
    Atomics.store(m, targetWord, 0);
    tick(kvm, actor);
    actor.sched.idle(gapMs);
  }
}
