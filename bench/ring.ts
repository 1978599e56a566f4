/**
 * `s2stress bench --only ring`: harvesting dirty pages with the bitmap
 * (KVM_GET_DIRTY_LOG: scan every bitmap word, exchange, write-protect per
 * word, flush) against the dirty ring (collect every vCPU's entries, then
 * KVM_RESET_DIRTY_RINGS: write-protect per coalesced run, flush), side by
 * side in one run on the same workload: a 6.10 guest (anon, 2 vCPUs), each
 * round dirtying a share of guest RAM by write faults, then one harvest;
 * only the harvest is timed. One thread, no contention: the cost of the
 * two interfaces, as pages harvested per second.
 */
import { Actor } from '../src/sync/actor.js';
import { FreeSched } from '../src/sync/sched.js';
import { DEFAULT_MODEL, KVM_DIRTY_RING_MAX_ENTRIES, KVM_DIRTY_RING_RSVD_ENTRIES, formatBytes, type ModelConfig } from '../src/config.js';
import { createVm, RAM_SLOT } from '../src/vm.js';
import { guestAccess } from '../src/kvm/vcpu.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../src/kvm/memslot.js';
import { dirtyRingCollectAll, kvmVmIoctlResetDirtyPages } from '../src/kvm/dirtyring.js';
import { popcount32 } from '../src/kvm/memslot.js';

export interface RingBenchOptions {
  vcpus: number;
  /** Guest sizes and shares of guest RAM dirtied per round (percent). */
  points: Array<{ guestMem: number; densityPct: number }>;
  /** Measured rounds per point (after one warm-up round). */
  rounds: number;
}

export interface RingBenchRow {
  guestMem: number;
  densityPct: number;
  /** Pages dirtied (and harvested) per round. */
  pages: number;
  bitmapPagesPerSec: number;
  ringPagesPerSec: number;
  /** ring / bitmap. */
  ratio: number;
  bitmapUsPerHarvest: number;
  ringUsPerHarvest: number;
  /** Ring entries per vCPU the ring run used (the pages of a round fit without a full exit). */
  ringSize: number;
}

export interface RingBenchResult {
  vcpus: number;
  rounds: number;
  rows: RingBenchRow[];
}

function nextPow2(n: number): number {
  let p = 256;
  while (p < n) p *= 2;
  return p;
}

/** Time `rounds` harvests of one mode; returns [pages harvested, ms]. */
function measure(cfg: ModelConfig, density: number, rounds: number): { pages: number; ms: number } {
  const kvm = createVm(cfg);
  const sched = new FreeSched(kvm.m);
  const L = kvm.layout;
  const vcpus = Array.from({ length: L.vcpus }, (_, i) => new Actor(i, sched));
  const migrator = new Actor(L.migrator, sched);
  const ring = cfg.dirtyLog === 'ring';
  kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
  const snap = new Int32Array(L.bitmapWords);
  const stride = Math.max(1, Math.round(100 / density));
  let pages = 0;
  let ms = 0;
  let seq = 1;
  for (let r = 0; r <= rounds; r++) {
    // Dirty every stride-th page, the vCPUs taking turns.
    for (let gfn = r % stride, k = 0; gfn < L.ramPages; gfn += stride, k++) {
      const v = vcpus[k % L.vcpus];
      if (guestAccess(kvm, v, gfn, true, ((seq++ & 0x1ffffff) << 7) | v.id) < 0) throw new Error(`ring bench: access to gfn ${gfn} did not complete (a ring too small?)`);
    }
    const t0 = performance.now();
    let n = 0;
    if (ring) {
      n = dirtyRingCollectAll(kvm, migrator, RAM_SLOT, snap);
      kvmVmIoctlResetDirtyPages(kvm, migrator);
    } else {
      kvmGetDirtyLog(kvm, migrator, RAM_SLOT, snap);
      for (let i = 0; i < snap.length; i++) if (snap[i] !== 0) n += popcount32(snap[i]);
    }
    const dt = performance.now() - t0;
    if (r === 0) continue; // warm-up
    pages += n;
    ms += dt;
  }
  return { pages, ms };
}

export function ringBench(o: RingBenchOptions, progress: (line: string) => void = () => {}): RingBenchResult {
  const rows: RingBenchRow[] = [];
  const baseOf = (guestMem: number): ModelConfig => ({ ...DEFAULT_MODEL, profile: '6.10', lock: 'rwlock', backing: 'anon', vcpus: o.vcpus, guestMem, lockStats: false, memPrealloc: true });
  const sizeFor = (guestMem: number, d: number): number =>
    Math.min(KVM_DIRTY_RING_MAX_ENTRIES, nextPow2(Math.ceil(Math.ceil((guestMem / 4096) * (d / 100)) / o.vcpus) + KVM_DIRTY_RING_RSVD_ENTRIES + 1));
  // Warm-up: every point once, not recorded (V8 compiles both paths first).
  for (const { guestMem, densityPct: d } of o.points) {
    measure(baseOf(guestMem), d, 3);
    measure({ ...baseOf(guestMem), dirtyLog: 'ring', dirtyRingSize: sizeFor(guestMem, d) }, d, 3);
  }
  for (const { guestMem, densityPct: d } of o.points) {
    const ringSize = sizeFor(guestMem, d);
    progress(`ring: ${formatBytes(guestMem)} guest, ${d}% dirty per round, bitmap then ring (${ringSize} entries per vCPU) ...`);
    const b = measure(baseOf(guestMem), d, o.rounds);
    const r = measure({ ...baseOf(guestMem), dirtyLog: 'ring', dirtyRingSize: ringSize }, d, o.rounds);
    const bps = b.pages / (b.ms / 1000);
    const rps = r.pages / (r.ms / 1000);
    rows.push({
      guestMem,
      densityPct: d,
      pages: Math.round(b.pages / o.rounds),
      bitmapPagesPerSec: bps,
      ringPagesPerSec: rps,
      ratio: rps / bps,
      bitmapUsPerHarvest: (b.ms * 1000) / o.rounds,
      ringUsPerHarvest: (r.ms * 1000) / o.rounds,
      ringSize,
    });
  }
  return { vcpus: o.vcpus, rounds: o.rounds, rows };
}
