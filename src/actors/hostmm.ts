/**
 * The host kernel's memory management, as an actor: page migration and
 * compaction, THP split and collapse (khugepaged), KSM merge (change_pte),
 * and MADV_DONTNEED zaps (balloon), picked by seeded weights and paced at a
 * configured rate. Every operation preserves content and tells KVM through
 * the MMU notifiers.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { XorShift32 } from '../sync/sched.js';
import { CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { collapseHugePage, ksmMerge, migratePage, splitHugePage, zapRange } from '../mm/hostops.js';
import { safePoint, tick } from './control.js';
import { hostMmExitMmap } from './teardown.js';
import { type ActorParams, actorSeed } from './params.js';

export function runHostMm(kvm: Kvm, actor: Actor, p: ActorParams): void {
  const m = kvm.m;
  const L = kvm.layout;
  const rng = new XorShift32(actorSeed(p.seed, actor.id));
  const scratch = new Int32Array(1024);
  const w = p.hostOps;
  const total = w.migrate + w.split + w.collapse + w.ksm + w.zap;
  const ramRegions = L.ramPages >>> 9;
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
    } else if (guestRunning()) {
      // Half the zaps straddle a 2 MiB boundary (unaligned, over two PMDs).
      const len = 1 + rng.below(16);
      const start = rng.below(2) === 0 ? Math.min(gfn, (gfn | 511) + 1 - len) : (gfn | 511) + 1 - rng.below(len);
      zapRange(kvm, actor, start, len, scratch);
    }
    tick(kvm, actor);
    actor.sched.idle(gapMs);
  }
}
