/**
 * A vCPU's run loop: a seeded stream of guest accesses (read/write mix,
 * pattern uniform / hot set / sequential sweep), each through the full
 * TLB -> walk -> fault path. Writes go to pages this vCPU owns
 * (gfn % vcpus == id), so that the guest's shadow has one writer per page.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { XorShift32 } from '../sync/sched.js';
import { CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';
import { ACCESS_ABORTED, ACCESS_LIVELOCK, guestAccess } from '../kvm/vcpu.js';
import { safePoint, tick } from './control.js';
import { type ActorParams, actorSeed } from './params.js';

const BATCH = 64;
const HOT_SET = 64;
const HOT_RESHUFFLE = 4096;

export function runVcpu(kvm: Kvm, vcpu: Actor, p: ActorParams): void {
  const m = kvm.m;
  const L = kvm.layout;
  const rng = new XorShift32(actorSeed(p.seed, vcpu.id));
  const pattern = p.patterns[vcpu.id % p.patterns.length];
  const V = L.vcpus;
  const ram = L.ramPages;
  const writeThreshold = Math.floor((p.writePct / 100) * 4294967296);
  const deviceThreshold = L.devicePages > 0 ? Math.floor((p.devicePct / 100) * 4294967296) : 0;
  const selftest = p.migrator === 'selftest';
  let hotBase = rng.below(ram);
  let sweep = Math.floor((ram / V) * vcpu.id);
  let done = 0;
  let finished = false;
  let livelocked = false;

  while (safePoint(kvm, vcpu, true)) {
    if (p.opsPerVcpu > 0 && done >= p.opsPerVcpu) {
      if (!finished) {
        finished = true;
        Atomics.add(m, CTRL.VCPUS_DONE, 1);
      }
      const gen = Atomics.load(m, CTRL.CONTROL_GEN);
      vcpu.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['actor.loop']);
      continue;
    }
    const n = p.opsPerVcpu > 0 ? Math.min(BATCH, p.opsPerVcpu - done) : BATCH;
    for (let i = 0; i < n; i++) {
      let gfn: number;
      if (deviceThreshold !== 0 && rng.nextU32() < deviceThreshold) {
        gfn = ram + rng.below(L.devicePages);
      } else if (pattern === 'hot') {
        if ((done + i) % HOT_RESHUFFLE === 0) hotBase = rng.below(ram);
        gfn = (hotBase + rng.below(HOT_SET)) % ram;
      } else if (pattern === 'sweep') {
        sweep = sweep + 1 >= ram ? 0 : sweep + 1;
        gfn = sweep;
      } else {
        gfn = rng.below(ram);
      }
      const write = rng.nextU32() < writeThreshold;
      let value = 0;
      if (write) {
        // Only the owner writes a page: one writer per shadow word.
        const limit = gfn < ram ? ram : L.pages;
        gfn = gfn - (gfn % V) + vcpu.id;
        if (gfn >= limit) gfn -= V;
        if (gfn < 0 || (gfn < ram) !== (limit === ram)) continue;
        if (selftest) {
          value = ((Atomics.load(m, CTRL.ITERATION) << 7) | vcpu.id) | 0;
        } else {
          vcpu.writeSeq = vcpu.writeSeq >= 0x1ffffff ? 1 : vcpu.writeSeq + 1;
          value = ((vcpu.writeSeq << 7) | vcpu.id) | 0;
        }
      }
      const got = guestAccess(kvm, vcpu, gfn, write, value);
      if (got === ACCESS_ABORTED) break;
      if (got === ACCESS_LIVELOCK) {
        livelocked = true;
        break;
      }
    }
    done += n;
    // An access given up is no progress: the watchdog must not see a tick.
    if (livelocked) break;
    tick(kvm, vcpu);
    // Between batches the host gets a look in: free in threads mode, a yield
    // under PCT, so that vCPUs take turns with the host actors instead of
    // running their whole quota at the highest priority.
    vcpu.sched.idle(0);
  }
  // A vCPU that has stopped for good is as paused as it gets: a migrator
  // waiting for stop-and-copy must not wait for it forever.
  Atomics.add(m, CTRL.VCPUS_PAUSED, 1);
  Atomics.notify(m, CTRL.VCPUS_PAUSED);
}
