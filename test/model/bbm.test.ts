/**
 * The live `break-before-make` check (src/check/bbm.ts) and the TLB
 * semantics by architecture (src/kvm/tlb.ts), one test per rule. Each check
 * is shown failing on a sequence broken on purpose, and silent on the
 * sequence the profile's kernel really ran.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkTlbCoherent, liveViolations, type Violation } from '../../src/check/invariants.js';
import { kvmDisableDirtyLogging, kvmEnableDirtyLogging, kvmGetDirtyLog } from '../../src/kvm/memslot.js';
import { s2Lookup, s2Write } from '../../src/kvm/pgtable.js';
import { kvmFlushRemoteTlbs, kvmTlbFlushVmidIpa, tlbFill, tlbLocalInvalidate, tlbPageSlot } from '../../src/kvm/tlb.js';
import { LEVEL_PMD, LEVEL_PTE, descIsTable, descOa, mkReadonly, mkWrite, pfnPte } from '../../src/arch/stage2.js';
import { LS } from '../../src/sync/locksites.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import type { Actor } from '../../src/sync/actor.js';
import type { ProfileName } from '../../src/config.js';
import { newSnapshot, nextFill, pmdEntry, scripted, tlbBlock, tlbPage, world, wval } from './support.js';

function bbm(kvm: Kvm): Violation[] {
  return liveViolations(kvm).filter((v) => v.invariant === 'break-before-make');
}

function messages(vs: Violation[]): string[] {
  return vs.map((v) => `${v.actor}: ${v.message}`);
}

/** Under mmu_lock as `actor`, at the `other` site. */
function locked(kvm: Kvm, actor: Actor, fn: () => void): void {
  kvm.mmuLock.lock(actor, LS.other);
  try {
    fn();
  } finally {
    kvm.mmuLock.unlock(actor);
  }
}

/** An anon world where vCPU0 mapped gfn 5 writable and vCPU1 caches it; returns the PTE's address and value. */
function mappedPage(profile: ProfileName, bugs: string[] = []) {
  const w = world({ profile, backing: 'anon', bugs });
  const { kvm } = w;
  const [v0, v1] = w.vcpus;
  guestAccess(kvm, v0, 5, true, wval(v0));
  guestAccess(kvm, v1, 5, false, 0);
  expect(tlbPage(kvm, 1, 5)).not.toBeNull();
  const r = s2Lookup(kvm, 5);
  expect(r.level).toBe(LEVEL_PTE);
  return { w, kvm, v0, v1, entry: r.entry, desc: r.desc };
}

describe('break-before-make: the order of clear, flush and write', () => {
  it('clear, flush, write (4.7 and later) is silent', () => {
    const { kvm, v0, entry, desc } = mappedPage('4.7');
    locked(kvm, v0, () => {
      s2Write(kvm, v0, entry, 0);
      kvmTlbFlushVmidIpa(kvm, v0, 5);
      s2Write(kvm, v0, entry, mkReadonly(desc));
    });
    expect(bbm(kvm)).toEqual([]);
    expect(checkTlbCoherent(kvm)).toEqual([]);
  });

  it('a new value written before the flush that covers the cleared entry is reported, under a break-before-make profile', () => {
    const { kvm, v0, entry, desc } = mappedPage('4.7');
    locked(kvm, v0, () => {
      s2Write(kvm, v0, entry, 0);
      s2Write(kvm, v0, entry, mkReadonly(desc));
      kvmTlbFlushVmidIpa(kvm, v0, 5);
    });
    const vs = bbm(kvm);
    expect(vs.map((v) => [v.actor, v.gfn])).toEqual([['vcpu0', 5]]);
    expect(vs[0].message).toMatch(/cleared and written again .* before a TLB flush covered it/);
  });

  it('a flush by another IPA does not cover the entry on arm64; on armv7 every flush is TLBIALLIS and does', () => {
    for (const arch of ['arm64', 'armv7'] as const) {
      const w = world({ profile: 'fixed', backing: 'anon', arch });
      const { kvm } = w;
      const [v0] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      const { entry, desc } = s2Lookup(kvm, 5);
      locked(kvm, v0, () => {
        s2Write(kvm, v0, entry, 0);
        kvmTlbFlushVmidIpa(kvm, v0, 700);
        s2Write(kvm, v0, entry, desc);
      });
      const ms = messages(bbm(kvm));
      if (arch === 'armv7') expect(ms).toEqual([]);
      else {
        expect(ms[0]).toMatch(/the PTE for gfn 5 was cleared and written again/);
        expect(ms[1]).toMatch(/mmu_lock released with the PTE for gfn 5 cleared and no TLB flush covering it since \(1 such entry; arm64/);
      }
    }
  });

  it('mmu_lock released with a cleared entry that no flush covered: reported, with the stale TLB entry it leaves', () => {
    const { kvm, v0, entry } = mappedPage('fixed');
    locked(kvm, v0, () => s2Write(kvm, v0, entry, 0));
    const ms = messages(bbm(kvm));
    expect(ms).toHaveLength(3);
    expect(ms[0]).toMatch(/^vcpu0: mmu_lock released with the PTE for gfn 5 cleared and no TLB flush covering it/);
    expect(ms[1]).toMatch(/vcpu0's TLB holds page frame \d+ rw for gfn 5, but the tables map nothing there/);
    expect(ms[2]).toMatch(/vcpu1's TLB holds page frame \d+ rw for gfn 5, but the tables map nothing there/);
  });

  it('mmu_lock released while a TLB holds an entry filled from the old tables after the flush (a walk the flush did not wait for): reported', () => {
    const { kvm, v0, entry, desc } = mappedPage('fixed');
    locked(kvm, v0, () => {
      s2Write(kvm, v0, entry, 0);
      kvmTlbFlushVmidIpa(kvm, v0, 5);
      expect(tlbPage(kvm, 1, 5)).toBeNull();
      tlbFill(kvm.m, kvm.layout.tlbGen, tlbPageSlot(kvm, 1, 5), 5 + 1, desc, false);
    });
    const vs = bbm(kvm);
    expect(vs).toHaveLength(1);
    expect(vs[0].message).toMatch(/stale TLB entry .* vcpu1's TLB holds page frame \d+ rw for gfn 5, but the tables map nothing there/);
  });

  it('a vCPU that refills its TLB from the new value after the flush is fine: the TLB is compared with the tables, not with "exists"', () => {
    const { kvm, v0, v1, entry, desc } = mappedPage('fixed');
    locked(kvm, v0, () => {
      s2Write(kvm, v0, entry, 0);
      kvmTlbFlushVmidIpa(kvm, v0, 5);
      s2Write(kvm, v0, entry, mkReadonly(desc));
      guestAccess(kvm, v1, 5, false, 0); // the hardware walks without mmu_lock
      expect(tlbPage(kvm, 1, 5)).toBe(mkReadonly(desc));
    });
    expect(bbm(kvm)).toEqual([]);
  });

  it('(bug flush-before-clear) the dissolve flushes, then clears: a walk in between refills the block, reported at the populate and at the release', () => {
    const run = (bugs: string[]) => {
      const w = world({ profile: 'fixed', backing: 'thp', bugs });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      const { actor: a0, sched } = scripted(kvm, v0.id);
      // vCPU1 walks just before the dissolve's clear.
      sched.at('pgtable.write', () => guestAccess(kvm, v1, 9, false, 0));
      guestAccess(kvm, a0, 5, true, wval(v0));
      expect(sched.pending()).toEqual([]);
      expect(descIsTable(Atomics.load(kvm.m, pmdEntry(kvm, 5)))).toBe(true);
      return kvm;
    };
    const clean = run([]);
    expect(bbm(clean)).toEqual([]);
    expect(checkTlbCoherent(clean)).toEqual([]);

    const kvm = run(['flush-before-clear']);
    const ms = messages(bbm(kvm));
    expect(ms.some((m) => /the PMD entry for gfn 0\.\.511 was cleared and written again \(table#\d+\) before a TLB flush covered it/.test(m))).toBe(true);
    expect(ms.some((m) => /vcpu1's TLB holds block frame \d+ ro for gfn 0\.\.511, but the tables hold table#\d+ at the PMD: TLB conflict/.test(m))).toBe(true);
    expect(tlbBlock(kvm, 1, 5)).not.toBeNull();
    expect(checkTlbCoherent(kvm).some((v) => v.actor === 'vcpu1' && v.gfn === 0)).toBe(true);
  });

  it('(bug flush-before-clear) a write-protect fault under 4.7 flushes the PTE before clearing it: reported', () => {
    const w = world({ profile: '4.7', backing: 'anon', bugs: ['flush-before-clear'] });
    const { kvm } = w;
    const [v0] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, newSnapshot(kvm));
    expect(bbm(kvm)).toEqual([]);
    guestAccess(kvm, v0, 5, true, wval(v0)); // permission fault: stage2_set_pte replaces the read-only PTE
    expect(messages(bbm(kvm)).some((m) => /the PTE for gfn 5 was cleared and written again \(page frame \d+ rw\)/.test(m))).toBe(true);
  });
});

describe('break-before-make: what each profile really did', () => {
  it('4.0 writes the new permissions, then flushes (legal there); 4.7 does the same in place only by mistake (reported)', () => {
    for (const profile of ['v14', '4.0', '4.6', '4.7', 'fixed'] as const) {
      const { kvm, v0, entry, desc } = mappedPage(profile);
      locked(kvm, v0, () => s2Write(kvm, v0, entry, mkReadonly(desc)));
      kvmFlushRemoteTlbs(kvm, v0);
      locked(kvm, v0, () => {
        s2Write(kvm, v0, entry, desc); // read-only -> writable, in place
        kvmTlbFlushVmidIpa(kvm, v0, 5);
      });
      const bbmProfile = kvm.proto.breakBeforeMake;
      const vs = bbm(kvm);
      expect(vs.length, profile).toBe(bbmProfile ? 1 : 0);
      if (bbmProfile) expect(vs[0].message).toMatch(new RegExp(`in place; profile ${profile} clears the entry, flushes, then writes`));
    }
  });

  for (const profile of ['v14', '4.0', '4.7', 'fixed'] as const) {
    it(`${profile}: a write-protect fault after a harvest goes through the profile's own sequence without a report`, () => {
      const w = world({ profile, backing: 'anon' });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, true, wval(v0));
      guestAccess(kvm, v1, 5, false, 0);
      kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, newSnapshot(kvm));
      guestAccess(kvm, v1, 5, false, 0);
      guestAccess(kvm, v0, 5, true, wval(v0));
      guestAccess(kvm, v1, 5, false, 0);
      expect(bbm(kvm)).toEqual([]);
      expect(liveViolations(kvm)).toEqual([]);
      expect(checkTlbCoherent(kvm)).toEqual([]);
    });
  }

  it('a changed output address without a break is an architectural hazard under every profile', () => {
    for (const profile of ['v14', '4.0', '4.7'] as const) {
      const { kvm, v0, entry, desc } = mappedPage(profile);
      locked(kvm, v0, () => {
        s2Write(kvm, v0, entry, pfnPte(descOa(desc) + 1, false));
        kvmTlbFlushVmidIpa(kvm, v0, 5);
      });
      const vs = bbm(kvm);
      expect(vs.length, profile).toBeGreaterThan(0);
      expect(vs[0].message).toMatch(/went from page frame \d+ rw to page frame \d+ ro without break-before-make: .*UNPREDICTABLE/);
    }
  });

  /**
   * The block-over-table sequence of fault.test.ts: a PTE table left in a
   * PMD after logging is cancelled; vCPU1 holds stage-2-only 4 KiB entries
   * for two pages of it; a THP fault maps a block there.
   */
  function blockOverTable(profile: ProfileName) {
    const w = world({ profile, backing: 'thp' });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    for (const gfn of [1, 2, 3]) guestAccess(kvm, v0, gfn, true, wval(v0));
    for (const gfn of [10, 11]) {
      guestAccess(kvm, v1, gfn, false, 0);
      tlbLocalInvalidate(kvm, 1, gfn);
      nextFill(kvm, 1, true);
      guestAccess(kvm, v1, gfn, false, 0);
    }
    kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(bbm(kvm)).toEqual([]);
    guestAccess(kvm, v0, 20, true, wval(v0));
    return kvm;
  }

  it('v14, 4.0, 4.6: a block written over a PMD that holds a PTE table, without a break: the hazard is reported', () => {
    for (const profile of ['v14', '4.0', '4.6'] as const) {
      const kvm = blockOverTable(profile);
      expect(s2Lookup(kvm, 20).level).toBe(LEVEL_PMD);
      const ms = messages(bbm(kvm));
      expect(ms.length, profile).toBeGreaterThan(0);
      expect(ms[0]).toMatch(/^vcpu0: the PMD entry for gfn 0\.\.511 went from table#\d+ to block frame \d+ rw without break-before-make/);
    }
  });

  it('4.7: the PMD is broken and flushed by IPA, but stage-2-only 4 KiB entries of the old table survive the by-IPA flush: reported at the release (TLB conflict)', () => {
    const kvm = blockOverTable('4.7');
    const ms = messages(bbm(kvm));
    expect(ms.filter((m) => /went from|written again|no TLB flush/.test(m))).toEqual([]);
    for (const gfn of [10, 11]) {
      expect(ms.some((m) => new RegExp(`vcpu1's TLB holds page frame \\d+ ro for gfn ${gfn}, but the tables hold block frame \\d+ rw at the PMD: TLB conflict`).test(m))).toBe(true);
    }
  });

  it('fixed (5.1): the range is unmapped before the block: silent', () => {
    const kvm = blockOverTable('fixed');
    expect(bbm(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it("v14's dissolve flushes the block's output address: on armv7 (TLBIALLIS) legal, on arm64 the new table is written before a flush covers the block", () => {
    for (const arch of ['armv7', 'arm64'] as const) {
      const w = world({ profile: 'v14', backing: 'thp', arch });
      const { kvm } = w;
      const [v0] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, true, wval(v0));
      const ms = messages(bbm(kvm));
      if (arch === 'armv7') expect(ms).toEqual([]);
      else expect(ms.some((m) => /the PMD entry for gfn 0\.\.511 was cleared and written again \(table#\d+\) before a TLB flush covered it \(arm64\)/.test(m))).toBe(true);
    }
  });
});

describe('break-before-make: write-protection flushed after the unlock', () => {
  it('a harvest write-protects under mmu_lock and flushes after releasing it (kvm_vm_ioctl_get_dirty_log): silent, although the TLBs are stale at the release', () => {
    const w = world({ profile: 'fixed', backing: 'anon' });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    guestAccess(kvm, v1, 5, false, 0);
    expect(tlbPage(kvm, 1, 5)).not.toBeNull();
    const { actor: mig, sched } = scripted(kvm, w.migrator.id);
    let staleAtFlush = false;
    sched.at('tlb.flush', () => {
      staleAtFlush = checkTlbCoherent(kvm).length > 0;
    });
    kvmGetDirtyLog(kvm, mig, RAM_SLOT, newSnapshot(kvm));
    expect(staleAtFlush).toBe(true); // vCPU1's writable entry outlived the unlock, as in the kernel
    expect(bbm(kvm)).toEqual([]);
  });

  it('(bug harvest-no-flush) the write-protected entries are never flushed: reported when slots_lock is released', () => {
    const w = world({ profile: 'fixed', backing: 'anon', bugs: ['harvest-no-flush'] });
    const { kvm } = w;
    const [v0] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    guestAccess(kvm, v0, 6, true, wval(v0));
    kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, newSnapshot(kvm));
    const vs = bbm(kvm);
    expect(vs.map((v) => [v.actor, v.gfn])).toEqual([['migrator', 5]]);
    expect(vs[0].message).toMatch(/^2 entries were write-protected under mmu_lock \(first: the PTE for gfn 5\) and slots_lock was released without the TLB flush/);
  });
});

describe('TLB semantics by architecture', () => {
  it('arm64: a by-IPA flush takes the stage-2-only entries of that IPA and every combined entry; armv7: everything', () => {
    for (const arch of ['arm64', 'armv7'] as const) {
      const w = world({ profile: 'fixed', backing: 'anon', arch });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      for (const gfn of [4, 5, 6]) guestAccess(kvm, v0, gfn, true, wval(v0));
      const cache = (gfn: number, s2Only: boolean): void => {
        tlbLocalInvalidate(kvm, 1, gfn);
        nextFill(kvm, 1, s2Only);
        guestAccess(kvm, v1, gfn, false, 0);
      };
      cache(4, true);
      cache(5, true);
      cache(6, false);
      kvmTlbFlushVmidIpa(kvm, v0, 5);
      const held = [4, 5, 6].map((g) => tlbPage(kvm, 1, g) !== null);
      expect(held, arch).toEqual(arch === 'arm64' ? [true, false, false] : [false, false, false]);
      cache(4, true);
      kvmFlushRemoteTlbs(kvm, v0);
      expect(tlbPage(kvm, 1, 4), arch).toBeNull();
    }
  });

  it('v14 runs with armv7 semantics unless asked; every later profile with arm64', () => {
    expect(world({ profile: 'v14' }).kvm.proto.arch).toBe('armv7');
    expect(world({ profile: 'v14', arch: 'arm64' }).kvm.proto.arch).toBe('arm64');
    for (const profile of ['4.0', '4.7', 'v15', 'fixed'] as const) expect(world({ profile }).kvm.proto.arch).toBe('arm64');
  });

  it('a TLB entry outlives 300 flushes elsewhere only if it is stage-2-only, and its generation never comes round again', () => {
    const w = world({ profile: 'fixed', backing: 'anon' });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    guestAccess(kvm, v0, 4, true, wval(v0));
    guestAccess(kvm, v0, 5, true, wval(v0));
    tlbLocalInvalidate(kvm, 1, 4);
    nextFill(kvm, 1, true);
    guestAccess(kvm, v1, 4, false, 0);
    tlbLocalInvalidate(kvm, 1, 5);
    nextFill(kvm, 1, false);
    guestAccess(kvm, v1, 5, false, 0);
    for (let i = 0; i < 300; i++) {
      kvmTlbFlushVmidIpa(kvm, v0, 700);
      expect(tlbPage(kvm, 1, 5), `after ${i + 1} flushes`).toBeNull();
    }
    expect(tlbPage(kvm, 1, 4)).not.toBeNull();
    expect(checkTlbCoherent(kvm)).toEqual([]);
    expect(Atomics.load(kvm.m, tlbPageSlot(kvm, 1, 5))).toBe(0); // swept out, not only dead
  });

  it('a write through a combined entry after a by-IPA flush elsewhere faults no more: the walk refills', () => {
    const w = world({ profile: 'fixed', backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmTlbFlushVmidIpa(kvm, v0, 700);
    const val = wval(v0);
    expect(guestAccess(kvm, v0, 5, true, val)).toBe(val);
    expect(tlbPage(kvm, 0, 5)).toBe(mkWrite(s2Lookup(kvm, 5).desc));
  });
});
