/**
 * A vCPU's run loop: a seeded stream of guest accesses (read/write mix,
 * pattern uniform / hot set / sequential sweep, and one access in
 * EDGE_EVERY at an edge page), each through the full TLB -> walk -> fault
 * path. Writes go to pages this vCPU owns (gfn % vcpus == id), so that the
 * guest's shadow has one writer per page. The page of the access in flight
 * is published in the vCPU's TARGET_GFN word, where the host-MM actor looks
 * for hot pages.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { XorShift32 } from '../sync/sched.js';
import { ACTOR, CTRL } from '../shm/layout.js';
import { CNT } from '../check/names.js';
import { SITE } from '../sync/sites.js';
import { ACCESS_ABORTED, ACCESS_LIVELOCK, ACCESS_RING_FULL, guestAccess } from '../kvm/vcpu.js';
import { dirtyRingFullWait, itsTableGfn } from '../kvm/dirtyring.js';
import { bumpControl, safePoint, tick } from './control.js';
import { type ActorParams, EDGE_EVERY, actorSeed } from './params.js';
import { vcpuTargetGfn } from './hostmm.js';
import { PerfLog, perfDone, perfIteration, perfNow } from './perflog.js';

const BATCH = 64;
const HOT_SET = 64;
const HOT_RESHUFFLE = 4096;

/**
 * An edge page of guest RAM (`ram` pages from gfn 0): the first or last page
 * of the slot, of a dirty-bitmap word (32 pages: harvests write-protect by
 * word) or of a 2 MiB region (a block, a PTE table), or the page the host-MM
 * actor is working on now.
 */
export function edgeGfn(kvm: Kvm, rng: XorShift32, ram: number): number {
  const last = rng.nextU32() & 1;
  switch (rng.below(4)) {
    case 0:
      return last ? ram - 1 : 0;
    case 1:
      return Math.min(ram - 1, rng.below(Math.ceil(ram / 32)) * 32 + last * 31);
    case 2:
      return Math.min(ram - 1, rng.below(Math.ceil(ram / 512)) * 512 + last * 511);
    default: {
      const host = vcpuTargetGfn(kvm, kvm.layout.hostActor);
      return host >= 0 ? host : Math.min(ram - 1, rng.below(Math.ceil(ram / 512)) * 512 + last * 511);
    }
  }
}

export function runVcpu(kvm: Kvm, vcpu: Actor, p: ActorParams): void {
  if (p.migrator === 'perf') runSliceVcpu(kvm, vcpu, p);
  else runMixedVcpu(kvm, vcpu, p);
  // A vCPU that has stopped for good is as paused as it gets: a migrator
  // waiting for stop-and-copy must not wait for it forever.
  Atomics.add(kvm.m, CTRL.VCPUS_PAUSED, 1);
  Atomics.notify(kvm.m, CTRL.VCPUS_PAUSED);
}

/** The access stream of every scenario but dirty-log-perf. */
function runMixedVcpu(kvm: Kvm, vcpu: Actor, p: ActorParams): void {
  const m = kvm.m;
  const L = kvm.layout;
  const rng = new XorShift32(actorSeed(p.seed, vcpu.id));
  const pattern = p.patterns[vcpu.id % p.patterns.length];
  const V = L.vcpus;
  const ram = L.ramPages;
  const writeThreshold = Math.floor((p.writePct / 100) * 4294967296);
  const deviceThreshold = L.devicePages > 0 ? Math.floor((p.devicePct / 100) * 4294967296) : 0;
  const selftest = p.migrator === 'selftest';
  const targetWord = kvm.actorWord(vcpu.id, ACTOR.TARGET_GFN);
  // Ring mode: the host saves vgic/ITS tables into the last pages of RAM
  // (src/kvm/dirtyring.ts); the guest leaves them to it, so that each page
  // keeps one writer. The selftest has no such writer.
  const itsFirst = L.dirtyRingSize !== 0 && !selftest ? itsTableGfn(kvm) : ram;
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
      } else if (rng.below(EDGE_EVERY) === 0) {
        gfn = edgeGfn(kvm, rng, ram);
        kvm.count(vcpu, CNT.edgeAccesses);
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
        if (gfn >= itsFirst && gfn < ram) continue;
        if (selftest) {
          value = ((Atomics.load(m, CTRL.ITERATION) << 7) | vcpu.id) | 0;
        } else {
          vcpu.writeSeq = vcpu.writeSeq >= 0x1ffffff ? 1 : vcpu.writeSeq + 1;
          value = ((vcpu.writeSeq << 7) | vcpu.id) | 0;
        }
      }
      // A hint for the host-MM actor (read with Atomics.load there); a plain
      // store keeps the hot path cheap.
      m[targetWord] = gfn + 1;
      let got = guestAccess(kvm, vcpu, gfn, write, value);
      // KVM_EXIT_DIRTY_RING_FULL: wait for the reset, then enter the guest again (the same access).
      // The selftest's guest stores READ_ONCE(iteration): the wait can span a
      // sync point (the vCPU pauses while it waits), so it reads it again.
      while (got === ACCESS_RING_FULL) {
        if (!dirtyRingFullWait(kvm, vcpu, gfn)) got = ACCESS_ABORTED;
        else {
          if (write && selftest) value = ((Atomics.load(m, CTRL.ITERATION) << 7) | vcpu.id) | 0;
          got = guestAccess(kvm, vcpu, gfn, write, value);
        }
      }
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
}

/**
 * dirty_log_perf_test's guest, memstress_guest_code()
 * (tools/testing/selftests/kvm/lib/memstress.c), and its vCPU thread,
 * vcpu_worker() (dirty_log_perf_test.c): vCPU i owns pages
 * [i * S, (i + 1) * S) of guest RAM, S = RAM pages / vCPUs (the selftest's
 * `-b` bytes per vCPU, its memory partitioned as without `-o`). Per
 * iteration it accesses every page of its slice once, in order, writing
 * with probability --write-pct (memstress's write_percent; the selftest
 * writes every page), then records when it finished, counts itself done
 * (vcpu_last_completed_iteration[]) and waits for the next iteration. The
 * iteration protocol is in src/actors/perflog.ts. A --ops quota is looked
 * at between iterations only: a vCPU never stops half-way through its slice.
 */
function runSliceVcpu(kvm: Kvm, vcpu: Actor, p: ActorParams): void {
  const m = kvm.m;
  const L = kvm.layout;
  const V = L.vcpus;
  const rng = new XorShift32(actorSeed(p.seed, vcpu.id));
  const writeThreshold = Math.floor((p.writePct / 100) * 4294967296);
  const targetWord = kvm.actorWord(vcpu.id, ACTOR.TARGET_GFN);
  const log = p.perfLog ? new PerfLog(p.perfLog) : null;
  const slice = Math.floor(L.ramPages / V);
  const first = vcpu.id * slice;
  /** The iteration this vCPU last finished, the one it is in (0: none), and how far it is. */
  let last = 0;
  let cur = 0;
  let pos = 0;
  let done = 0;
  let finished = false;

  while (safePoint(kvm, vcpu, true)) {
    if (cur === 0) {
      const gen = Atomics.load(m, CTRL.CONTROL_GEN);
      const iter = perfIteration(Atomics.load(m, CTRL.ITERATION));
      if (finished || iter === last) {
        vcpu.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE['actor.loop']);
        continue;
      }
      cur = iter;
      pos = 0;
    }
    const n = Math.min(BATCH, slice - pos);
    let i = 0;
    for (; i < n; i++) {
      const gfn = first + pos + i;
      const write = rng.nextU32() < writeThreshold;
      let value = 0;
      if (write) {
        vcpu.writeSeq = vcpu.writeSeq >= 0x1ffffff ? 1 : vcpu.writeSeq + 1;
        value = ((vcpu.writeSeq << 7) | vcpu.id) | 0;
      }
      m[targetWord] = gfn + 1;
      const got = guestAccess(kvm, vcpu, gfn, write, value);
      if (got === ACCESS_ABORTED) break;
      // An access given up is no progress: the watchdog must not see a tick.
      if (got === ACCESS_LIVELOCK) return;
    }
    pos += i;
    done += i;
    // Aborted: the run is ending (the safe point says so).
    if (i < n) continue;
    tick(kvm, vcpu);
    if (pos === slice) {
      log?.finished(vcpu.id, perfNow());
      last = cur;
      cur = 0;
      // Said before counting itself done, so that the migrator, once every
      // vCPU is done, knows not to start an iteration nobody would run.
      if (p.opsPerVcpu > 0 && done >= p.opsPerVcpu) {
        finished = true;
        Atomics.add(m, CTRL.VCPUS_DONE, 1);
      }
      if (perfDone(Atomics.add(m, CTRL.ITERATION, 1) + 1) === V) bumpControl(m);
    }
    vcpu.sched.idle(0);
  }
}
