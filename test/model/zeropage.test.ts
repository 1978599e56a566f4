/**
 * The zero page on untouched memory (QEMU without -mem-prealloc): a read
 * fault maps the shared zero page read-only (do_anonymous_page), or the huge
 * zero page by a PMD (do_huge_pmd_anonymous_page); gfn_to_pfn_prot() reports
 * it not writable; the first write breaks copy-on-write through the notifiers
 * (wp_page_copy: invalidate start, change_pte, end; do_huge_pmd_wp_page:
 * start/end of the 2 MiB). The zero page's refcount stays explainable.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkQuiescent, liveViolations } from '../../src/check/invariants.js';
import { copyAllPages, copyDirtyPages, compareDestination } from '../../src/check/migration.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../../src/kvm/memslot.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { collapseHugePage, ksmMerge, migratePage, zapRange } from '../../src/mm/hostops.js';
import {
  ZERO_PFN,
  allocGroup,
  countZeroPageMappings,
  getPage,
  hugeZeroPfn,
  putPage,
  zeroPageExpectedRef,
} from '../../src/mm/frames.js';
import { HPTE_FRAME_MASK, HPTE_HUGE, HPTE_PRESENT, HPTE_WRITE } from '../../src/mm/hostpt.js';
import { LEVEL_PMD, LEVEL_PTE, descOa, descWritable } from '../../src/arch/stage2.js';
import { FRAMES_PER_GROUP } from '../../src/shm/layout.js';
import { XorShift32 } from '../../src/sync/sched.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import type { ModelConfig } from '../../src/config.js';
import { counter, newSnapshot, snapshotGfns, world, wval } from './support.js';

function hpte(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn);
}
function hostFrame(kvm: Kvm, gfn: number): number {
  return hpte(kvm, gfn) & HPTE_FRAME_MASK;
}
function frameRef(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameRef + f);
}
function frameData(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameData + f);
}
function scratch(): Int32Array {
  return new Int32Array(2 * FRAMES_PER_GROUP);
}
/** A 2-vCPU guest whose RAM nobody has touched yet. */
function untouched(over: Partial<ModelConfig>) {
  return world({ memPrealloc: false, ...over });
}
function clean(kvm: Kvm): void {
  expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
}

describe('zero page: untouched anonymous memory', () => {
  it('untouched RAM has no host entry; hugetlb RAM is still populated', () => {
    expect(hpte(untouched({ backing: 'anon' }).kvm, 5)).toBe(0);
    expect(hpte(untouched({ backing: 'thp' }).kvm, 5)).toBe(0);
    expect(hpte(untouched({ backing: 'hugetlb' }).kvm, 5) & HPTE_PRESENT).not.toBe(0);
  });

  it('a read fault maps the zero page read-only in the host and in stage-2; the lookup reports it not writable and leaks its reference (kvm_release_pfn_clean skips reserved pfns)', () => {
    const { kvm, vcpus } = untouched({ backing: 'anon' });
    expect(frameRef(kvm, ZERO_PFN)).toBe(1);

    expect(guestAccess(kvm, vcpus[0], 5, false, 0)).toBe(0);

    expect(hpte(kvm, 5)).toBe(ZERO_PFN | HPTE_PRESENT);
    const leaf = s2Lookup(kvm, 5);
    expect([leaf.level, descOa(leaf.desc), descWritable(leaf.desc)]).toEqual([LEVEL_PTE, ZERO_PFN, false]);
    expect(frameRef(kvm, ZERO_PFN)).toBe(2);
    expect(frameRef(kvm, ZERO_PFN)).toBe(zeroPageExpectedRef(kvm));
    expect([counter(kvm, 'zeroPageFaults'), counter(kvm, 'zeroPageRefsLeaked')]).toEqual([1, 1]);
    clean(kvm);
  });

  it('the first write breaks copy-on-write: invalidate_range_start, change_pte to a zeroed page, invalidate_range_end; the zero page gives no reference back', () => {
    const { kvm, vcpus } = untouched({ backing: 'anon' });
    const [v0] = vcpus;
    guestAccess(kvm, v0, 4, false, 0);
    const zeroRef = frameRef(kvm, ZERO_PFN);
    const inv = counter(kvm, 'invalidations');
    const val = wval(v0);

    guestAccess(kvm, v0, 4, true, val);

    const f = hostFrame(kvm, 4);
    expect(f).not.toBe(ZERO_PFN);
    expect(hpte(kvm, 4) & HPTE_WRITE).not.toBe(0);
    expect(frameData(kvm, f)).toBe(val);
    expect(frameData(kvm, ZERO_PFN)).toBe(0);
    expect([counter(kvm, 'invalidations') - inv, counter(kvm, 'changePte'), counter(kvm, 'cowBreaks')]).toEqual([1, 1, 1]);
    expect(frameRef(kvm, ZERO_PFN)).toBe(zeroRef);
    const leaf = s2Lookup(kvm, 4);
    expect([descOa(leaf.desc), descWritable(leaf.desc)]).toEqual([f, true]);
    clean(kvm);
  });

  it('v14 while logging: a first-touch read maps the zero page read-only, so the write after it faults (and retries once: its own copy-on-write moved the notifier sequence), is marked dirty and migrated', () => {
    const w = untouched({ profile: 'v14', backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    copyAllPages(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 6, false, 0);
    expect(descWritable(s2Lookup(kvm, 6).desc)).toBe(false);
    const faults = counter(kvm, 'faults');
    const retries = counter(kvm, 'faultRetries');

    guestAccess(kvm, v0, 6, true, wval(v0));

    // The copy-on-write inside the lookup moved mmu_notifier_seq: that fault retries, the next one maps.
    expect([counter(kvm, 'faults') - faults, counter(kvm, 'faultRetries') - retries]).toEqual([2, 1]);
    const snap = newSnapshot(kvm);
    kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, snap);
    expect(snapshotGfns(kvm, snap)).toEqual([6]);
    copyDirtyPages(kvm, w.migrator, RAM_SLOT, snap);
    expect(compareDestination(kvm, w.migrator, RAM_SLOT).bad).toEqual([]);
  });

  it('host operations leave the zero page alone: a zap gives nothing back, migration and KSM skip it', () => {
    const { kvm, host, vcpus } = untouched({ backing: 'anon' });
    for (const gfn of [8, 9, 10]) guestAccess(kvm, vcpus[0], gfn, false, 0);
    const ref = frameRef(kvm, ZERO_PFN);
    expect(migratePage(kvm, host, 8)).toBe(false);
    expect(ksmMerge(kvm, host, 8, 9)).toBe(false);
    expect(zapRange(kvm, host, 9, 2, scratch())).toBe(true);
    expect(frameRef(kvm, ZERO_PFN)).toBe(ref);
    expect(countZeroPageMappings(kvm)).toBe(1);
    clean(kvm);
  });

  it('zero page accounting: after a seeded mix of reads, writes and zaps its refcount is exactly 1 + the references KVM leaked, and an unexplained reference breaks the equation', () => {
    const seed = 12;
    const { kvm, host, vcpus } = untouched({ backing: 'anon' });
    const rng = new XorShift32(seed);
    for (let i = 0; i < 3000; i++) {
      const gfn = rng.below(64);
      const v = vcpus[gfn % 2];
      const op = rng.below(10);
      if (op < 6) guestAccess(kvm, v, gfn, false, 0);
      else if (op < 9) guestAccess(kvm, v, gfn, true, wval(v));
      else zapRange(kvm, host, gfn, 1 + rng.below(4), scratch());
    }
    const mapped = Array.from({ length: 64 }, (_, g) => hpte(kvm, g)).filter((h) => (h & HPTE_PRESENT) !== 0 && (h & HPTE_FRAME_MASK) === ZERO_PFN).length;
    expect(mapped, `seed ${seed}`).toBeGreaterThan(0);
    expect(countZeroPageMappings(kvm), `seed ${seed}`).toBe(mapped);
    expect(frameRef(kvm, ZERO_PFN), `seed ${seed}`).toBe(zeroPageExpectedRef(kvm));
    expect(counter(kvm, 'zeroPageRefsLeaked'), `seed ${seed}`).toBeGreaterThan(mapped);
    clean(kvm);

    getPage(kvm, ZERO_PFN);
    expect(frameRef(kvm, ZERO_PFN)).not.toBe(zeroPageExpectedRef(kvm));
  });
});

describe('huge zero page: untouched THP memory', () => {
  for (const profile of ['4.0', '4.5', 'fixed'] as const) {
    it(`${profile}: a read fault maps the huge zero page by a read-only host PMD and a read-only stage-2 block; the first write replaces it by a new THP inside a 2 MiB notifier pair, without change_pte`, () => {
      const { kvm, vcpus } = untouched({ profile, backing: 'thp' });
      const [v0] = vcpus;
      const hz = hugeZeroPfn(kvm);
      guestAccess(kvm, v0, 700, false, 0);

      for (const g of [512, 700, 1023]) expect(hpte(kvm, g)).toBe((hz + (g - 512)) | HPTE_PRESENT | HPTE_HUGE);
      let leaf = s2Lookup(kvm, 700);
      expect([leaf.level, descOa(leaf.desc), descWritable(leaf.desc)]).toEqual([LEVEL_PMD, hz, false]);
      for (let i = 0; i < FRAMES_PER_GROUP; i++) expect(frameRef(kvm, hz + i)).toBe(1);
      const inv = counter(kvm, 'invalidations');
      const val = wval(v0);

      guestAccess(kvm, v0, 700, true, val);

      const g = hostFrame(kvm, 512);
      expect(g).not.toBe(hz);
      expect(hpte(kvm, 700)).toBe((g + 188) | HPTE_PRESENT | HPTE_HUGE | HPTE_WRITE);
      expect([counter(kvm, 'invalidations') - inv, counter(kvm, 'changePte'), counter(kvm, 'cowBreaks')]).toEqual([1, 0, 1]);
      leaf = s2Lookup(kvm, 700);
      expect([leaf.level, descOa(leaf.desc), descWritable(leaf.desc)]).toEqual([LEVEL_PMD, g, true]);
      expect(frameData(kvm, g + 188)).toBe(val);
      for (let i = 0; i < FRAMES_PER_GROUP; i++) expect([frameRef(kvm, hz + i), frameData(kvm, hz + i)]).toEqual([1, 0]);
      clean(kvm);
    });
  }

  it('while logging, a read fault maps the huge zero subpage by a read-only 4 KiB entry', () => {
    const w = untouched({ backing: 'thp' });
    kvmEnableDirtyLogging(w.kvm, w.migrator, RAM_SLOT);
    guestAccess(w.kvm, w.vcpus[0], 9, false, 0);
    const leaf = s2Lookup(w.kvm, 9);
    expect([leaf.level, descOa(leaf.desc), descWritable(leaf.desc)]).toEqual([LEVEL_PTE, hugeZeroPfn(w.kvm) + 9, false]);
  });

  it('with no free 2 MiB group, the write splits the huge zero PMD into zero-page PTEs and copies the small zero page (VM_FAULT_FALLBACK)', () => {
    const { kvm, host, vcpus } = untouched({ backing: 'thp' });
    const [v0] = vcpus;
    guestAccess(kvm, v0, 30, false, 0);
    const taken: number[] = [];
    for (let g = allocGroup(kvm, host, 0); g !== 0; g = allocGroup(kvm, host, 0)) taken.push(g);
    const last = taken.pop()!;
    for (let i = 0; i < FRAMES_PER_GROUP; i++) putPage(kvm, host, last + i); // 4 KiB frames are left

    guestAccess(kvm, v0, 30, true, wval(v0));

    expect(hpte(kvm, 30) & (HPTE_HUGE | HPTE_WRITE)).toBe(HPTE_WRITE);
    expect(hostFrame(kvm, 30)).not.toBe(ZERO_PFN);
    expect([hpte(kvm, 29), hpte(kvm, 31)]).toEqual([ZERO_PFN | HPTE_PRESENT, ZERO_PFN | HPTE_PRESENT]);
    expect([counter(kvm, 'thpPmdSplits'), counter(kvm, 'changePte')]).toEqual([1, 1]);
    // Give back the groups this test took (frame-conservation would name them).
    for (const g of taken) for (let i = 0; i < FRAMES_PER_GROUP; i++) putPage(kvm, host, g + i);
    clean(kvm);
  });

  it('khugepaged collapses a region whose PTEs are partly none or the zero page: those subpages come out zero, and the zero page loses no reference', () => {
    const { kvm, host, vcpus } = untouched({ backing: 'anon' });
    const [v0, v1] = vcpus;
    const vals = [wval(v0), wval(v1)];
    guestAccess(kvm, v0, 0, true, vals[0]);
    guestAccess(kvm, v1, 1, true, vals[1]);
    guestAccess(kvm, v0, 2, false, 0);
    const ref = frameRef(kvm, ZERO_PFN);
    // Collapse works on THP regions: make region 0 one (an anon VMA given MADV_HUGEPAGE).
    Atomics.store(kvm.m, kvm.layout.regionBacking, 1);

    expect(collapseHugePage(kvm, host, 0, scratch())).toBe(true);

    const g = hostFrame(kvm, 0);
    expect([0, 1, 2, 3].map((i) => frameData(kvm, g + i))).toEqual([vals[0], vals[1], 0, 0]);
    expect(hpte(kvm, 2) & HPTE_HUGE).not.toBe(0);
    expect(frameRef(kvm, ZERO_PFN)).toBe(ref);
    clean(kvm);
  });
});
