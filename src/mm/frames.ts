/**
 * Host frames: refcount, flags and one content word each. Frames are handed
 * out in 2 MiB groups (512 aligned frames, for THP and hugetlb) or one by
 * one from a FIFO of free 4 KiB frames, so that a freed frame is reused as
 * late as possible (a quarantine, as KASAN keeps one) and a write into a
 * freed frame is caught before the frame has a new owner.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { CTRL, FRAMES_PER_GROUP } from '../shm/layout.js';
import { LS } from '../sync/locksites.js';
import { SITE } from '../sync/sites.js';
import { INV } from '../check/names.js';
import { KBUG } from '../kvm/pgtable.js';

/** Part of a transparent huge page (PageTransCompoundMap). */
export const FRAME_THP = 1 << 0;
/** Part of a hugetlbfs page. */
export const FRAME_HUGETLB = 1 << 1;
/** Device memory: no struct page, never refcounted (kvm_is_device_pfn). */
export const FRAME_DEVICE = 1 << 2;
/** A KSM page, shared read-only. */
export const FRAME_KSM = 1 << 3;

/** Frees that must queue behind a freed frame before it is handed out again (while groups last). */
export const QUARANTINE_FRAMES = 256;

/** frame-conservation kinds in the violation ring (live). */
export const FC_POOL_EMPTY = 1;

export function frameRefIdx(kvm: Kvm, f: number): number {
  return kvm.layout.frameRef + f;
}

/** get_page() */
export function getPage(kvm: Kvm, f: number): void {
  Atomics.add(kvm.m, kvm.layout.frameRef + f, 1);
}

/** put_page(): the last reference frees the frame. */
export function putPage(kvm: Kvm, actor: Actor, f: number): void {
  const old = Atomics.sub(kvm.m, kvm.layout.frameRef + f, 1);
  if (old === 1) freeFrame(kvm, actor, f);
  else if (old < 1) kvm.violation(INV['kernel-bug'], actor.id, KBUG.FRAME_REF_UNDERFLOW, f, old - 1);
}

function freeFrame(kvm: Kvm, actor: Actor, f: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  Atomics.store(m, L.frameFlags + f, 0);
  kvm.zoneLock.lock(actor, LS.other);
  const tail = m[CTRL.FRAME_FIFO_TAIL];
  m[L.frameFifo + (tail % L.frames)] = f;
  m[CTRL.FRAME_FIFO_TAIL] = tail + 1;
  kvm.zoneLock.unlock(actor);
}

/** alloc_page(): a zeroed 4 KiB frame with refcount 1, or 0 when memory is exhausted. */
export function allocFrame(kvm: Kvm, actor: Actor): number {
  const m = kvm.m;
  const L = kvm.layout;
  actor.sched.point(SITE['frame.alloc']);
  kvm.zoneLock.lock(actor, LS.other);
  let head = m[CTRL.FRAME_FIFO_HEAD];
  let tail = m[CTRL.FRAME_FIFO_TAIL];
  if (tail - head < QUARANTINE_FRAMES) {
    // Break a free 2 MiB group into 4 KiB frames, so that a just-freed frame
    // waits behind at least QUARANTINE_FRAMES others before it is reused.
    const top = m[CTRL.GROUP_TOP];
    if (top > 0) {
      const g = m[L.groupStack + top - 1];
      m[CTRL.GROUP_TOP] = top - 1;
      for (let i = 0; i < FRAMES_PER_GROUP; i++) m[L.frameFifo + ((tail + i) % L.frames)] = g * FRAMES_PER_GROUP + i;
      tail += FRAMES_PER_GROUP;
      m[CTRL.FRAME_FIFO_TAIL] = tail;
    }
  }
  let f = 0;
  if (head !== tail) {
    f = m[L.frameFifo + (head % L.frames)];
    head++;
    m[CTRL.FRAME_FIFO_HEAD] = head;
  }
  kvm.zoneLock.unlock(actor);
  if (f === 0) {
    // The pool holds every guest page plus spare groups: more than any
    // operation needs at once. Running dry means frames leak (references
    // never put). Reported once, as frame-conservation.
    if (Atomics.compareExchange(m, CTRL.FRAME_POOL_EMPTY_REPORTED, 0, 1) === 0) {
      kvm.violation(INV['frame-conservation'], actor.id, FC_POOL_EMPTY, L.frames - FRAMES_PER_GROUP);
    }
    return 0;
  }
  Atomics.store(m, L.frameData + f, 0);
  Atomics.store(m, L.frameFlags + f, 0);
  Atomics.store(m, L.frameRef + f, 1);
  return f;
}

/** A free 2 MiB group (alloc_pages(order 9)): its first frame, or 0. Frames get refcount 1 each. */
export function allocGroup(kvm: Kvm, actor: Actor, flags: number): number {
  const m = kvm.m;
  const L = kvm.layout;
  kvm.zoneLock.lock(actor, LS.other);
  const top = m[CTRL.GROUP_TOP];
  let g = 0;
  if (top > 0) {
    g = m[L.groupStack + top - 1];
    m[CTRL.GROUP_TOP] = top - 1;
  }
  kvm.zoneLock.unlock(actor);
  if (g === 0) return 0;
  const base = g * FRAMES_PER_GROUP;
  for (let i = 0; i < FRAMES_PER_GROUP; i++) {
    Atomics.store(m, L.frameData + base + i, 0);
    Atomics.store(m, L.frameFlags + base + i, flags);
    Atomics.store(m, L.frameRef + base + i, 1);
  }
  return base;
}

/** Free frames (FIFO + whole groups), for conservation checks and reports. */
export function freeFrameCount(kvm: Kvm): number {
  const m = kvm.m;
  return m[CTRL.FRAME_FIFO_TAIL] - m[CTRL.FRAME_FIFO_HEAD] + m[CTRL.GROUP_TOP] * FRAMES_PER_GROUP;
}

/**
 * The allocator's free lists: `free(f)` for every frame queued on the FIFO
 * and for every frame of every free group (a frame listed twice is passed
 * twice). For the conservation check, on a stopped world.
 */
export function forEachFreeFrame(kvm: Kvm, free: (f: number) => void): void {
  const m = kvm.m;
  const L = kvm.layout;
  const head = m[CTRL.FRAME_FIFO_HEAD];
  const tail = m[CTRL.FRAME_FIFO_TAIL];
  for (let i = head; i < tail && i - head < L.frames; i++) free(m[L.frameFifo + (i % L.frames)]);
  const top = m[CTRL.GROUP_TOP];
  for (let i = 0; i < top && i < L.groups; i++) {
    const base = m[L.groupStack + i] * FRAMES_PER_GROUP;
    for (let k = 0; k < FRAMES_PER_GROUP; k++) free(base + k);
  }
}
