/**
 * frame-conservation: at a stop point every host frame's refcount equals the
 * host mappings of it (nothing else holds a reference then), no free frame is
 * mapped by the host or by stage 2 (a block's 512 frames included), stage 2
 * maps only what the host maps at the same page, and free plus used frames
 * make the pool. Each rule fails on a state broken by hand and holds on the
 * same state intact just before.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkFrameConservation, checkQuiescent, checkStoppedWorld, liveViolations } from '../../src/check/invariants.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { collapseHugePage, ksmMerge, migratePage, splitHugePage, zapRange } from '../../src/mm/hostops.js';
import { allocFrame, freeFrameCount, getPage, putPage } from '../../src/mm/frames.js';
import { HPTE_FRAME_MASK } from '../../src/mm/hostpt.js';
import { LEVEL_PMD, descOa } from '../../src/arch/stage2.js';
import { CTRL, FRAMES_PER_GROUP } from '../../src/shm/layout.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../../src/kvm/memslot.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { counter, newSnapshot, world, wval, type World } from './support.js';

function hostFrame(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn) & HPTE_FRAME_MASK;
}
function scratch(): Int32Array {
  return new Int32Array(2 * FRAMES_PER_GROUP);
}
function frameViolations(kvm: Kvm): string[] {
  return checkFrameConservation(kvm).map((v) => `${v.invariant}: ${v.message}`);
}

/** A world where every host operation has run once: anon pages, KSM sharing, a migration, a THP split and collapse, a zap. */
function busyWorld(): World {
  const w = world({ backing: 'mixed' });
  const { kvm, host } = w;
  const [v0, v1] = w.vcpus;
  // region 0 thp, 1 anon, 2 hugetlb, 3 thp (backingOfRegion 'mixed'), then device pages
  guestAccess(kvm, v0, 3, true, wval(v0)); // block over a THP
  guestAccess(kvm, v1, 1100, false, 0); // block over hugetlb
  const same = wval(v0);
  guestAccess(kvm, v0, 600, true, same);
  guestAccess(kvm, v0, 602, true, same);
  guestAccess(kvm, v1, 601, false, 0);
  expect(ksmMerge(kvm, host, 600, 602)).toBe(true);
  guestAccess(kvm, v0, 604, true, wval(v0));
  expect(migratePage(kvm, host, 604)).toBe(true);
  expect(splitHugePage(kvm, host, 3, scratch())).toBe(true);
  guestAccess(kvm, v1, 1540, false, 0);
  expect(collapseHugePage(kvm, host, 3, scratch())).toBe(true);
  expect(zapRange(kvm, host, 700, 4, scratch())).toBe(true);
  guestAccess(kvm, v0, 701, false, 0);
  guestAccess(kvm, v0, kvm.layout.ramPages + 4, true, wval(v0)); // device page
  expect(liveViolations(kvm)).toEqual([]);
  return w;
}

describe('frame-conservation', () => {
  it('holds after every host operation (anon, THP block, hugetlb block, KSM, migration, split, collapse, zap, device memory) and in the stop-the-world checks', () => {
    const w = busyWorld();
    expect(frameViolations(w.kvm)).toEqual([]);
    expect(checkStoppedWorld(w.kvm, w.checker)).toEqual([]);
    expect(counter(w.kvm, 'hostPinnedRefusals')).toBe(0);
  });

  it('reports a leaked reference (an extra get_page) with the frame, its refcount and its mappers; page migration then refuses the frame and counts the refusal', () => {
    const w = busyWorld();
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 606, true, wval(v0));
    const f = hostFrame(kvm, 606);
    expect(frameViolations(kvm)).toEqual([]);

    getPage(kvm, f);

    expect(frameViolations(kvm)).toEqual([
      `frame-conservation: frame ${f} has refcount 2 but the host maps it 1 time (at gfn 606): 1 reference nothing explains (a leaked get_page: the frame is pinned for ever, page migration and THP collapse refuse it)`,
    ]);
    expect(checkStoppedWorld(kvm, w.checker).map((v) => v.invariant)).toEqual(['frame-conservation']);
    expect(migratePage(kvm, host, 606)).toBe(false);
    expect(counter(kvm, 'hostPinnedRefusals')).toBe(1);
  });

  it('reports a leaked reference on a frame nothing maps any more (the host unmapped it, the extra reference kept it from the free lists)', () => {
    const w = busyWorld();
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 610, true, wval(v0));
    const f = hostFrame(kvm, 610);
    getPage(kvm, f);
    expect(zapRange(kvm, host, 610, 1, scratch())).toBe(true);

    expect(frameViolations(kvm)).toEqual([
      `frame-conservation: frame ${f} has refcount 1 but the host maps it 0 times: 1 reference nothing explains (a leaked get_page: the frame is pinned for ever, page migration and THP collapse refuse it)`,
    ]);
  });

  it('reports a frame freed while the host and stage 2 still map it (a put_page too many)', () => {
    const w = busyWorld();
    const { kvm, checker } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 612, true, wval(v0));
    const f = hostFrame(kvm, 612);
    expect(descOa(s2Lookup(kvm, 612).desc)).toBe(f);
    expect(frameViolations(kvm)).toEqual([]);

    putPage(kvm, checker, f); // refcount 1 -> 0: onto the free lists

    expect(frameViolations(kvm)).toEqual([
      `frame-conservation: the host maps gfn 612 to frame ${f}, which is on the free lists`,
      `frame-conservation: stage 2 maps gfn 612 to frame ${f}, which is on the free lists`,
    ]);
  });

  it('reports a free frame inside a stage-2 block (each of the block\'s 512 frames is checked)', () => {
    const w = busyWorld();
    const { kvm, checker } = w;
    const block = s2Lookup(kvm, 3);
    expect(block.level).toBe(LEVEL_PMD);
    const tail = descOa(block.desc) + 300;
    // The host unmaps page 300 of the THP without telling KVM, and frees its frame.
    Atomics.store(kvm.m, kvm.layout.hpte + 300, 0);
    putPage(kvm, checker, tail);

    const vs = frameViolations(kvm);
    expect(vs).toHaveLength(1);
    expect(vs[0]).toMatch(new RegExp(`^frame-conservation: stage 2 maps gfn 300 to frame ${tail} \\(block .*\\), which is on the free lists$`));
  });

  it('reports a stage-2 entry for a frame the host no longer maps at that page (changed without the notifier)', () => {
    const w = busyWorld();
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 614, true, wval(v0));
    const a = Atomics.load(kvm.m, kvm.layout.hpte + 614);
    const b = Atomics.load(kvm.m, kvm.layout.hpte + 616);
    expect(s2Lookup(kvm, 616).level).toBe(0);
    expect(frameViolations(kvm)).toEqual([]);

    // the host swaps the frames of two pages without telling KVM: every
    // reference is still explained, but stage 2 maps 614 to 616's frame
    Atomics.store(kvm.m, kvm.layout.hpte + 614, b);
    Atomics.store(kvm.m, kvm.layout.hpte + 616, a);

    expect(frameViolations(kvm)).toEqual([
      `frame-conservation: stage 2 maps gfn 614 to frame ${a & HPTE_FRAME_MASK}, but the host maps frame ${b & HPTE_FRAME_MASK} there: a stage-2 mapping no MMU notifier removed`,
    ]);
  });

  it('reports free lists that do not add up: a frame lost to the pool, a frame listed twice, free + used != pool', () => {
    const w = busyWorld();
    const { kvm } = w;
    const m = kvm.m;
    const L = kvm.layout;
    expect(frameViolations(kvm)).toEqual([]);
    const before = freeFrameCount(kvm);

    // a frame taken off the FIFO by hand: refcount 0, on no list
    const head = m[CTRL.FRAME_FIFO_HEAD];
    const lost = m[L.frameFifo + (head % L.frames)];
    m[CTRL.FRAME_FIFO_HEAD] = head + 1;

    const pool = L.frames - FRAMES_PER_GROUP;
    expect(frameViolations(kvm)).toEqual([
      `frame-conservation: ${before - 1} free + ${pool - before} used frames = ${pool - 1}, but the pool has ${pool}`,
      `frame-conservation: frame ${lost} has refcount 0 but is on no free list: lost to the pool`,
    ]);

    // ... and queued twice instead
    m[CTRL.FRAME_FIFO_HEAD] = head;
    const tail = m[CTRL.FRAME_FIFO_TAIL];
    m[L.frameFifo + (tail % L.frames)] = lost;
    m[CTRL.FRAME_FIFO_TAIL] = tail + 1;
    expect(frameViolations(kvm)).toEqual([`frame-conservation: frame ${lost} is on the free lists twice (freed twice)`]);
  });

  it('reports a free count that disagrees with the free lists (the allocator\'s counters corrupted)', () => {
    const w = busyWorld();
    const { kvm } = w;
    const m = kvm.m;
    expect(frameViolations(kvm)).toEqual([]);
    const top = m[CTRL.GROUP_TOP];
    const g = m[kvm.layout.groupStack + top - 1];
    m[CTRL.GROUP_TOP] = top - 1; // a free group dropped from the stack

    const vs = frameViolations(kvm);
    expect(vs[0]).toMatch(/^frame-conservation: \d+ free \+ \d+ used frames = \d+, but the pool has \d+$/);
    expect(vs[1]).toBe(`frame-conservation: frame ${g * FRAMES_PER_GROUP} has refcount 0 but is on no free list: lost to the pool`);
    expect(vs.at(-1)).toBe('frame-conservation: ... and 504 more of the same kind');
  });

  it('the frame pool running dry is a live violation, and the fault that found no frame is given up as a livelock (-EFAULT)', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    expect(zapRange(kvm, host, 20, 1, scratch())).toBe(true);
    // leak every free frame
    while (allocFrame(kvm, host) !== 0);
    expect(Atomics.load(kvm.m, CTRL.FRAME_POOL_EMPTY_REPORTED)).toBe(1);

    // A write: a read of the untouched page would map the zero page, which needs no frame.
    guestAccess(kvm, v0, 20, true, 0x1234);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor])).toEqual([
      ['frame-conservation', 'hostmm'],
      ['progress', 'vcpu0'],
    ]);
    expect(vs[0].message).toMatch(/^the host frame pool \(\d+ frames\) ran dry/);
    expect(vs[1].message).toContain('user_mem_abort() returning -EFAULT (-14)');
    // and at the stop point every leaked frame is named
    expect(checkQuiescent(kvm).filter((v) => v.invariant === 'frame-conservation').length).toBeGreaterThan(0);
  });

  it('holds across a logging period with harvests (write-protect and dirty bits touch no frame reference)', () => {
    const w = busyWorld();
    const { kvm, migrator } = w;
    const [v0] = w.vcpus;
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    for (const g of [3, 5, 600, 604, 1100, 1541]) guestAccess(kvm, v0, g - (g % 2), true, wval(v0));
    kvmGetDirtyLog(kvm, migrator, RAM_SLOT, newSnapshot(kvm));
    expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
  });
});
