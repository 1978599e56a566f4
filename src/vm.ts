/**
 * Creating a VM: allocate the shared region, lay out the table pool and the
 * frames, back every 2 MiB region with its VMA kind, populate the host page
 * table, and register the memslots. Workers attach to the same region.
 */
import { type ModelConfig, validateModelConfig } from './config.js';
import { Kvm } from './kvm/kvm.js';
import { BUG_NAMES, FIX_NAMES } from './profiles.js';
import { CTRL, FRAMES_PER_GROUP, ACTOR } from './shm/layout.js';
import { initTablePool } from './kvm/pgtable.js';
import { initMemslot } from './kvm/memslot.js';
import { Actor, ACTOR_KIND } from './sync/actor.js';
import { FreeSched } from './sync/sched.js';
import type { LockStatsSink } from './sync/spinlock.js';
import {
  BACKING_ANON,
  BACKING_DEVICE,
  BACKING_HUGETLB,
  BACKING_THP,
  HPTE_HUGE,
  HPTE_PRESENT,
  HPTE_WRITE,
} from './mm/hostpt.js';
import { FRAME_DEVICE, FRAME_HUGETLB, FRAME_THP, allocGroup, initZeroPages } from './mm/frames.js';

export const RAM_SLOT = 0;
export const DEVICE_SLOT = 1;

/** The backing of RAM region r (a 2 MiB VMA) under a --backing choice. */
export function backingOfRegion(backing: ModelConfig['backing'], r: number): number {
  switch (backing) {
    case 'anon':
      return BACKING_ANON;
    case 'thp':
      return BACKING_THP;
    case 'hugetlb':
      return BACKING_HUGETLB;
    case 'mixed':
      return [BACKING_THP, BACKING_ANON, BACKING_HUGETLB, BACKING_THP][r & 3];
  }
}

/** Create and populate a VM; returns the Kvm seen from the creating thread. */
export function createVm(cfg: ModelConfig, lockStats: LockStatsSink | null = null): Kvm {
  validateModelConfig(cfg, BUG_NAMES, FIX_NAMES);
  const sab = Kvm.allocate(cfg);
  const kvm = new Kvm(cfg, sab, lockStats);
  const m = kvm.m;
  const L = kvm.layout;
  const setup = new Actor(L.checker, new FreeSched(m));

  initTablePool(kvm);

  // Every group free, handed out in ascending order, except the last one:
  // the huge zero page (frames.ts hugeZeroPfn).
  let top = 0;
  for (let g = L.groups - 2; g >= 1; g--) m[L.groupStack + top++] = g;
  m[CTRL.GROUP_TOP] = top;
  m[CTRL.FRAME_FIFO_HEAD] = 0;
  m[CTRL.FRAME_FIFO_TAIL] = 0;
  initZeroPages(kvm);

  const ramRegions = L.ramPages / FRAMES_PER_GROUP;
  for (let r = 0; r < L.regions; r++) {
    const backing = r < ramRegions ? backingOfRegion(cfg.backing, r) : BACKING_DEVICE;
    m[L.regionBacking + r] = backing;
    // Untouched anonymous memory (QEMU without -mem-prealloc) has no frame
    // until a fault: a read maps the zero page, a write allocates.
    if (cfg.memPrealloc === false && (backing === BACKING_ANON || backing === BACKING_THP)) continue;
    const frameFlags =
      backing === BACKING_THP ? FRAME_THP : backing === BACKING_HUGETLB ? FRAME_HUGETLB : backing === BACKING_DEVICE ? FRAME_DEVICE : 0;
    const g = allocGroup(kvm, setup, frameFlags);
    if (g === 0) throw new Error('layout too small for the guest: no free group at populate');
    const huge = backing === BACKING_THP || backing === BACKING_HUGETLB ? HPTE_HUGE : 0;
    for (let i = 0; i < FRAMES_PER_GROUP; i++) {
      m[L.hpte + r * FRAMES_PER_GROUP + i] = (g + i) | HPTE_PRESENT | HPTE_WRITE | huge;
    }
  }

  initMemslot(kvm, RAM_SLOT, 0, L.ramPages, L.bitmaps, false);
  if (L.devicePages > 0) {
    initMemslot(kvm, DEVICE_SLOT, L.ramPages, L.devicePages, L.bitmaps + Math.ceil(L.ramPages / 32) + 1, true);
  }
  for (let a = 0; a < L.nActors; a++) {
    const kind = a < L.vcpus ? ACTOR_KIND.VCPU : a === L.hostActor ? ACTOR_KIND.HOSTMM : a === L.migrator ? ACTOR_KIND.MIGRATOR : ACTOR_KIND.CHECKER;
    m[kvm.actorWord(a, ACTOR.KIND)] = kind;
  }
  return kvm;
}

/** Attach to a VM created elsewhere (in a worker). */
export function attachVm(cfg: ModelConfig, sab: SharedArrayBuffer, lockStats: LockStatsSink | null = null): Kvm {
  return new Kvm(cfg, sab, lockStats);
}

export function actorName(kvm: Kvm, id: number): string {
  const L = kvm.layout;
  if (id < 0) return 'none';
  if (id < L.vcpus) return `vcpu${id}`;
  if (id === L.hostActor) return 'hostmm';
  if (id === L.migrator) return 'migrator';
  if (id === L.checker) return 'orchestrator';
  return `actor${id}`;
}
