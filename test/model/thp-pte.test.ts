/**
 * A THP the host maps by PTEs while it stays compound (Linux 4.5), and
 * transparent_hugepage_adjust() over it: 4.5 tests PageTransCompound() and
 * maps a stage-2 block over subpages the host has unmapped or remapped (the
 * corruption fixed by 127393fbe597); 4.6 tests PageTransCompoundMap(). Before
 * 4.5 the same host operations split the page itself.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkQuiescent, checkShadowEqual, checkStage2HostCoherent, liveViolations } from '../../src/check/invariants.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { collapseHugePage, deferredSplitHugePage, ksmMerge, migratePage, mprotectRange, splitHugePage, splitHugePmd, splitHugePmdOrPage, zapRange } from '../../src/mm/hostops.js';
import { FRAME_THP, freeFrameCount, getPage, hugeZeroPfn, putPage } from '../../src/mm/frames.js';
import { XorShift32 } from '../../src/sync/sched.js';
import { gfnToPfnProt } from '../../src/mm/hostfault.js';
import { compareDestination, copyAllPages } from '../../src/check/migration.js';
import { RAM_SLOT } from '../../src/vm.js';
import { HPTE_FRAME_MASK, HPTE_HUGE, HPTE_PRESENT, HPTE_WRITE } from '../../src/mm/hostpt.js';
import { LEVEL_PMD, LEVEL_PTE, descOa, descWritable } from '../../src/arch/stage2.js';
import { FRAMES_PER_GROUP } from '../../src/shm/layout.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { counter, invariantsOf, world, wval } from './support.js';

function hpte(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn);
}
function hostFrame(kvm: Kvm, gfn: number): number {
  return hpte(kvm, gfn) & HPTE_FRAME_MASK;
}
function frameRef(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameRef + f);
}
function compound(kvm: Kvm, f: number): boolean {
  return (Atomics.load(kvm.m, kvm.layout.frameFlags + f) & FRAME_THP) !== 0;
}
function scratch(): Int32Array {
  return new Int32Array(2 * FRAMES_PER_GROUP);
}

/** A 2-vCPU THP guest of the profile, every region PMD-mapped by the host (populated). */
function thpWorld(profile: '4.0' | '4.5' | '4.6' | 'fixed') {
  const w = world({ profile, backing: 'thp' });
  const head = hostFrame(w.kvm, 0);
  expect(hpte(w.kvm, 0) & HPTE_HUGE).not.toBe(0);
  expect(head % FRAMES_PER_GROUP).toBe(0);
  return { ...w, head };
}

describe('host: operations on part of a THP', () => {
  it('4.5: MADV_DONTNEED of part of a PMD-mapped THP splits the PMD only: the rest is mapped by PTEs, the page stays compound, the zapped subpages stay allocated in it', () => {
    const { kvm, host, head } = thpWorld('4.5');
    expect(zapRange(kvm, host, 5, 4, scratch())).toBe(true);

    for (let i = 0; i < FRAMES_PER_GROUP; i++) expect(hpte(kvm, i) & HPTE_HUGE).toBe(0);
    expect([4, 9, 511].map((g) => hostFrame(kvm, g))).toEqual([head + 4, head + 9, head + 511]);
    expect([5, 6, 7, 8].map((g) => hpte(kvm, g) & HPTE_PRESENT)).toEqual([0, 0, 0, 0]);
    expect([head, head + 5, head + 9].map((f) => compound(kvm, f))).toEqual([true, true, true]);
    expect([head + 5, head + 8].map((f) => frameRef(kvm, f))).toEqual([1, 1]); // held by the compound page
    expect(counter(kvm, 'thpPmdSplits')).toBe(1);
    expect(counter(kvm, 'thpSplits')).toBe(0);
  });

  it('4.0: the same MADV_DONTNEED splits the page itself (split_huge_page): no subpage stays compound and the zapped ones are freed', () => {
    const { kvm, host, head } = thpWorld('4.0');
    expect(zapRange(kvm, host, 5, 4, scratch())).toBe(true);

    expect([head, head + 9].map((f) => compound(kvm, f))).toEqual([false, false]);
    expect([head + 5, head + 8].map((f) => frameRef(kvm, f))).toEqual([0, 0]);
    expect(counter(kvm, 'thpSplits')).toBe(1);
    expect(counter(kvm, 'thpPmdSplits')).toBe(0);
    expect(splitHugePmdOrPage(kvm, host, 1, scratch())).toBe(true);
    expect(compound(kvm, hostFrame(kvm, 512))).toBe(false);
  });

  it('4.5: the deferred split of a PTE-mapped THP frees its unmapped subpages and makes the mapped ones ordinary pages, inside a 2 MiB notifier pair', () => {
    const { kvm, host, head } = thpWorld('4.5');
    zapRange(kvm, host, 5, 4, scratch());
    const inv = counter(kvm, 'invalidations');

    expect(deferredSplitHugePage(kvm, host, 0, scratch())).toBe(true);

    expect(counter(kvm, 'invalidations') - inv).toBe(1);
    expect([head + 5, head + 8].map((f) => frameRef(kvm, f))).toEqual([0, 0]);
    expect([head, head + 9].map((f) => [compound(kvm, f), frameRef(kvm, f)])).toEqual([
      [false, 1],
      [false, 1],
    ]);
    expect(deferredSplitHugePage(kvm, host, 0, scratch())).toBe(false); // nothing compound left
    expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
  });

  it('4.5: a compound page wholly unmapped piece by piece is freed whole by its last unmap', () => {
    const { kvm, host, head } = thpWorld('4.5');
    for (let g = 0; g < FRAMES_PER_GROUP; g += 16) {
      expect(frameRef(kvm, head + 511)).toBe(1);
      zapRange(kvm, host, g, 16, scratch());
    }
    for (let i = 0; i < FRAMES_PER_GROUP; i++) expect(frameRef(kvm, head + i)).toBe(0);
    expect(compound(kvm, head)).toBe(false);
  });

  it('4.5: mprotect of part of a THP splits the PMD and write-protects the range; a later write fault reuses the page in place (no copy, no notifier)', () => {
    const { kvm, host, head, vcpus } = thpWorld('4.5');
    expect(mprotectRange(kvm, host, 20, 3, scratch())).toBe(true);
    expect([19, 20, 22, 23].map((g) => (hpte(kvm, g) & HPTE_WRITE) !== 0)).toEqual([true, false, false, true]);
    expect(compound(kvm, head + 20)).toBe(true);
    const inv = counter(kvm, 'invalidations');

    guestAccess(kvm, vcpus[0], 20, true, wval(vcpus[0]));

    expect(hostFrame(kvm, 20)).toBe(head + 20);
    expect(hpte(kvm, 20) & HPTE_WRITE).not.toBe(0);
    expect(counter(kvm, 'cowBreaks')).toBe(0);
    expect(counter(kvm, 'invalidations')).toBe(inv);
  });
});

describe('transparent_hugepage_adjust over a THP mapped by PTEs', () => {
  /**
   * The balloon gives back gfn 5..8 of a PMD-mapped THP (MADV_DONTNEED),
   * then the guest writes gfn 9 (a fault) and gfn 5 (through whatever gfn 9's
   * fault mapped).
   */
  function balloonThenWrite(profile: '4.5' | '4.6') {
    const w = thpWorld(profile);
    const { kvm, host } = w;
    const [v0, v1] = w.vcpus;
    zapRange(kvm, host, 5, 4, scratch());
    guestAccess(kvm, v1, 9, true, wval(v1));
    const leaf9 = s2Lookup(kvm, 9);
    const faults = counter(kvm, 'faults');
    guestAccess(kvm, v1, 5, true, wval(v1));
    return { ...w, v0, leaf9, faultsOn5: counter(kvm, 'faults') - faults };
  }

  it('4.5: PageTransCompound() is true, so a block maps the whole compound page; the write to gfn 5 lands in the zapped subpage the host no longer maps there (stage2-host-coherent, shadow-equal)', () => {
    const { kvm, head, leaf9, faultsOn5 } = balloonThenWrite('4.5');
    expect(leaf9.level).toBe(LEVEL_PMD);
    expect(descOa(leaf9.desc)).toBe(head);
    expect(faultsOn5).toBe(0); // through the block, no fault
    expect(hpte(kvm, 5) & HPTE_PRESENT).toBe(0);

    const coherent = checkStage2HostCoherent(kvm);
    expect(coherent.map((v) => [v.invariant, v.gfn])).toEqual([['stage2-host-coherent', 5]]);
    expect(coherent[0].message).toMatch(/host maps nothing there/);
    expect(checkShadowEqual(kvm).map((v) => v.gfn)).toEqual([5]);
  });

  it('4.5: a migration then carries the host\'s view: the destination misses what the guest wrote at gfn 5, and migration-equal (which reads the source through the host mapping too) cannot see it; only shadow-equal and stage2-host-coherent do', () => {
    const { kvm, migrator } = balloonThenWrite('4.5');
    copyAllPages(kvm, migrator, RAM_SLOT);
    expect(compareDestination(kvm, migrator, RAM_SLOT).bad).toEqual([]);
    const wrote = Atomics.load(kvm.m, kvm.layout.shadow + 5);
    expect(Atomics.load(kvm.m, kvm.layout.dest + 5)).not.toBe(wrote);
    // frame-conservation sees the stale block from the frames' side too.
    expect(invariantsOf(checkQuiescent(kvm))).toEqual(['shadow-equal', 'frame-conservation', 'stage2-host-coherent']);
  });

  it('4.6: PageTransCompoundMap() is false for a subpage the host maps by a PTE: gfn 9 gets a 4 KiB entry, the write to gfn 5 faults in a fresh page, and everything stays coherent', () => {
    const { kvm, head, leaf9, faultsOn5 } = balloonThenWrite('4.6');
    expect(leaf9.level).toBe(LEVEL_PTE);
    expect(descOa(leaf9.desc)).toBe(head + 9);
    expect(faultsOn5).toBeGreaterThan(0);
    expect(hostFrame(kvm, 5)).not.toBe(head + 5);
    expect(descOa(s2Lookup(kvm, 5).desc)).toBe(hostFrame(kvm, 5));
    expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
  });

  it('4.5: a refault that maps a new page at a zapped address, then a block from a fault elsewhere: guest and host see different frames at gfn 5', () => {
    const w = thpWorld('4.5');
    const { kvm, host, head } = w;
    const [v0, v1] = w.vcpus;
    zapRange(kvm, host, 5, 4, scratch());
    // QEMU (the host side) touches gfn 5 first: a write fault in the host page table only.
    const f = gfnToPfnProt(kvm, host, 5, true);
    putPage(kvm, host, f); // that lookup's own reference
    expect(f).not.toBe(head + 5);
    guestAccess(kvm, v0, 10, false, 0);
    expect(s2Lookup(kvm, 10).level).toBe(LEVEL_PMD);
    guestAccess(kvm, v1, 5, true, wval(v1));

    const coherent = checkStage2HostCoherent(kvm);
    expect(coherent.map((v) => v.gfn)).toEqual([5]);
    expect(coherent[0].message).toMatch(new RegExp(`host maps frame ${f} by a PTE`));
    expect(invariantsOf(checkQuiescent(kvm))).toContain('shadow-equal');
  });

  it('4.5: split_huge_pmd alone leaves every subpage mapped where it was: a block over it sees the same frames as the host (coherent, no false alarm)', () => {
    const { kvm, host, head, vcpus } = thpWorld('4.5');
    expect(splitHugePmd(kvm, host, 0)).toBe(true);
    guestAccess(kvm, vcpus[0], 7, true, wval(vcpus[0]));
    expect(s2Lookup(kvm, 7).level).toBe(LEVEL_PMD);
    expect(descOa(s2Lookup(kvm, 7).desc)).toBe(head);
    expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
  });

  it('4.5: after mprotect of part of the THP, a write fault elsewhere maps a writable block over subpages the host maps read-only (stage2-host-coherent: more permission than the host gives); 4.6 maps 4 KiB', () => {
    for (const profile of ['4.5', '4.6'] as const) {
      const { kvm, host, vcpus } = thpWorld(profile);
      mprotectRange(kvm, host, 20, 3, scratch());
      guestAccess(kvm, vcpus[0], 40, true, wval(vcpus[0]));
      const leaf = s2Lookup(kvm, 40);
      expect(descWritable(leaf.desc)).toBe(true);
      const coherent = checkStage2HostCoherent(kvm);
      if (profile === '4.5') {
        expect(leaf.level).toBe(LEVEL_PMD);
        expect(coherent.map((v) => v.gfn)).toEqual([20]);
        expect(coherent[0].message).toMatch(/writable, but the host maps it read-only/);
      } else {
        expect(leaf.level).toBe(LEVEL_PTE);
        expect(coherent).toEqual([]);
      }
    }
  });

  it('before 4.5 (4.0) the host never leaves a compound page mapped by PTEs, so PageTransCompound() is safe: the same balloon script stays coherent', () => {
    const w = thpWorld('4.0');
    const { kvm, host } = w;
    const [, v1] = w.vcpus;
    zapRange(kvm, host, 5, 4, scratch());
    guestAccess(kvm, v1, 9, true, wval(v1));
    guestAccess(kvm, v1, 5, true, wval(v1));
    expect(s2Lookup(kvm, 9).level).toBe(LEVEL_PTE);
    expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    expect(splitHugePage(kvm, host, 0, scratch())).toBe(false); // already split
  });
});

describe('frames under THP churn', () => {
  /**
   * Every frame outside group 0 and the huge zero page is free (refcount 0)
   * or explained: one reference per host entry that maps it (KSM shares),
   * plus, for a subpage of a compound THP, the compound page's own (held
   * while any subpage is still mapped). Free frames are those the allocator
   * holds.
   */
  function unexplainedFrames(kvm: Kvm): string[] {
    const m = kvm.m;
    const L = kvm.layout;
    const maps = new Int32Array(L.frames);
    for (let g = 0; g < L.pages; g++) {
      const v = hpte(kvm, g);
      if ((v & HPTE_PRESENT) !== 0) maps[v & HPTE_FRAME_MASK]++;
    }
    const out: string[] = [];
    let free = 0;
    const hz = hugeZeroPfn(kvm);
    for (let f = FRAMES_PER_GROUP; f < L.frames; f++) {
      if (f >= hz && f < hz + FRAMES_PER_GROUP) continue;
      const ref = frameRef(kvm, f);
      if (ref === 0) {
        free++;
        continue;
      }
      const thp = compound(kvm, f);
      const want = thp ? 1 : maps[f];
      if (ref !== want || (thp && maps[f] > 1)) out.push(`frame ${f}: refcount ${ref}, mapped ${maps[f]} times${thp ? ', compound' : ''}`);
    }
    if (free !== freeFrameCount(kvm)) out.push(`${free} frames have refcount 0 but the allocator holds ${freeFrameCount(kvm)}`);
    return out;
  }

  for (const profile of ['4.0', '4.5', 'fixed'] as const) {
    it(`${profile}: after a seeded mix of guest accesses and every host operation, untouched start, no frame is leaked or unexplained`, () => {
      const seed = 7;
      const w = world({ profile, backing: 'thp', memPrealloc: false });
      const { kvm, host } = w;
      const rng = new XorShift32(seed);
      const sc = scratch();
      const regions = kvm.layout.ramPages >>> 9;
      for (let i = 0; i < 6000; i++) {
        const gfn = rng.below(kvm.layout.ramPages);
        const v = w.vcpus[gfn % 2];
        const op = rng.below(20);
        if (op < 12) guestAccess(kvm, v, gfn, op < 6, op < 6 ? wval(v) : 0);
        else if (op === 12) zapRange(kvm, host, gfn, 1 + rng.below(16), sc);
        else if (op === 13) mprotectRange(kvm, host, gfn, 1 + rng.below(8), sc);
        else if (op === 14) splitHugePmdOrPage(kvm, host, rng.below(regions), sc);
        else if (op === 15) deferredSplitHugePage(kvm, host, rng.below(regions), sc);
        else if (op === 16) collapseHugePage(kvm, host, rng.below(regions), sc);
        else if (op === 17) splitHugePage(kvm, host, rng.below(regions), sc);
        else if (op === 18) migratePage(kvm, host, gfn);
        else ksmMerge(kvm, host, gfn, (gfn & ~511) + rng.below(512));
      }
      expect(unexplainedFrames(kvm), `seed ${seed}`).toEqual([]);
      const found = [...checkQuiescent(kvm), ...liveViolations(kvm)];
      // 4.5 may have mapped a block over a partly unmapped THP, and (without
      // 5.1's unmap-before-block) over the PTE table of its 4 KiB entries;
      // nothing else may go wrong.
      // Before 4.7 an entry was written, then flushed: break-before-make
      // reports that hazard when a block replaces a table.
      const allowed = profile === '4.5' ? ['stage2-host-coherent', 'shadow-equal', 'table-conservation', 'frame-conservation', 'break-before-make'] : [];
      expect(found.filter((x) => !allowed.includes(x.invariant)), `seed ${seed}`).toEqual([]);
      expect(counter(kvm, 'thpCollapses') + counter(kvm, 'thpDeferredSplits') + counter(kvm, 'thpSplits'), `seed ${seed}`).toBeGreaterThan(0);

      // The accounting can fail: one reference nobody holds is reported.
      const f = hostFrame(kvm, w.kvm.layout.ramPages - 1) || hostFrame(kvm, 0);
      getPage(kvm, f);
      expect(unexplainedFrames(kvm).length, `seed ${seed}`).toBe(1);
    });
  }
});
