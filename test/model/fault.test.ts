/**
 * The stage-2 fault path (user_mem_abort, stage2_set_pte, stage2_set_pmd_huge)
 * under the three profiles, one test per protocol rule (docs/kernel-notes.md
 * "Fault"). Single-threaded and deterministic: where a rule is
 * about an interleaving, a ScriptSched runs the other actor's step at a
 * named scheduling point.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { tlbLocalInvalidate } from '../../src/kvm/tlb.js';
import { checkQuiescent, checkTableConservation, checkTlbCoherent, liveViolations } from '../../src/check/invariants.js';
import { kvmDisableDirtyLogging, kvmEnableDirtyLogging, kvmGetDirtyLog, slotFlags } from '../../src/kvm/memslot.js';
import { EFAULT, TABLE_FREE, TABLE_LIVE, s2Lookup } from '../../src/kvm/pgtable.js';
import { kvmHandleGuestAbort, userMemAbort } from '../../src/kvm/mmu.js';
import { copyAllPages, copyDirtyPages, compareDestination } from '../../src/check/migration.js';
import {
  LEVEL_PMD,
  LEVEL_PTE,
  S2_MEMATTR_DEVICE,
  descIsTable,
  descOa,
  descWritable,
} from '../../src/arch/stage2.js';
import { HPTE_FRAME_MASK, HPTE_MIGRATING, HPTE_WRITE } from '../../src/mm/hostpt.js';
import { KVM_NR_MEM_OBJS } from '../../src/shm/layout.js';
import { RAM_SLOT, DEVICE_SLOT } from '../../src/vm.js';
import {
  PROFILES,
  counter,
  dirtyGfns,
  memcacheCount,
  newSnapshot,
  nextFill,
  pmdEntry,
  scripted,
  snapshotGfns,
  tableRef,
  tlbBlock,
  tlbPage,
  traceHead,
  traceSince,
  validEntries,
  world,
  wval,
} from './support.js';

describe('fault: dissolving a block while logging', () => {
  for (const profile of ['v15', 'fixed'] as const) {
    it(`${profile}: write fault while logging on a THP block dissolves it: one valid PTE in a new table, block TLB entry gone from every vCPU, exactly that page dirty`, () => {
      const w = world({ profile, backing: 'thp' });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      // Both vCPUs cache the (now read-only) block again: reads need no fault.
      guestAccess(kvm, v0, 8, false, 0);
      guestAccess(kvm, v1, 9, false, 0);
      expect(tlbBlock(kvm, 0, 5)).not.toBeNull();
      expect(tlbBlock(kvm, 1, 5)).not.toBeNull();

      const pmd = pmdEntry(kvm, 5);
      const L = kvm.layout;
      const cacheBase = L.memcache + v0.id * L.memcacheWords;
      const cached = memcacheCount(kvm, v0.id);
      const nextCachedTable = kvm.m[cacheBase + cached];
      const faults = counter(kvm, 'faults');

      const val = wval(v0);
      guestAccess(kvm, v0, 5, true, val);

      expect(counter(kvm, 'faults')).toBe(faults + 1);
      expect(counter(kvm, 'dissolves')).toBe(1);
      const pmdDesc = Atomics.load(kvm.m, pmd);
      expect(descIsTable(pmdDesc)).toBe(true);
      const table = descOa(pmdDesc);
      // a new PTE table, taken from the faulting vCPU's memory cache
      expect(table).toBe(nextCachedTable);
      expect(memcacheCount(kvm, v0.id)).toBe(cached - 1);
      expect(validEntries(kvm, table)).toBe(1);
      expect(tableRef(kvm, table)).toBe(2);
      const leaf = s2Lookup(kvm, 5);
      expect(leaf.level).toBe(LEVEL_PTE);
      expect(descWritable(leaf.desc)).toBe(true);
      // the block is gone from every vCPU's TLB
      expect(tlbBlock(kvm, 0, 5)).toBeNull();
      expect(tlbBlock(kvm, 1, 5)).toBeNull();
      expect(dirtyGfns(kvm)).toEqual([5]);
      // the other pages of the block fault back in one by one
      expect(s2Lookup(kvm, 8).level).toBe(0);
      expect(guestAccess(kvm, v1, 5, false, 0)).toBe(val);
      expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    });
  }

  /**
   * v14's dissolve flushes `pmd_pfn(*pmd) << PAGE_SHIFT`. vCPU1 caches the
   * block (as a stage-2-only entry, or a combined one), vCPU0 write-faults
   * and dissolves it. Returns whether vCPU1 still holds the block entry.
   */
  function v14Dissolve(arch: 'armv7' | 'arm64' | undefined, s2Only: boolean) {
    const w = world({ profile: 'v14', backing: 'thp', ...(arch ? { arch } : {}) });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    const blockFrame = descOa(s2Lookup(kvm, 5).desc);
    expect(blockFrame >>> 9).not.toBe(5 >>> 9); // the output address is not in this block's IPA range
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    nextFill(kvm, 1, s2Only);
    guestAccess(kvm, v1, 9, false, 0);
    expect(tlbBlock(kvm, 1, 5)).not.toBeNull();
    const mark = traceHead(kvm, v0.id);

    guestAccess(kvm, v0, 5, true, wval(v0));

    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
    const flushes = traceSince(kvm, v0.id, mark).filter((e) => e.ev === 'flush.ipa');
    expect(flushes.map((e) => e.a)).toContain(blockFrame);
    return { kvm, stale: tlbBlock(kvm, 1, 5) !== null };
  }

  it("v14 (ARMv7, as posted): the dissolve flushes the block's output address, but __kvm_tlb_flush_vmid_ipa is TLBIALLIS there: no stale entry", () => {
    const { kvm, stale } = v14Dissolve(undefined, true);
    expect(kvm.proto.arch).toBe('armv7');
    expect(stale).toBe(false);
    expect(checkTlbCoherent(kvm)).toEqual([]);
  });

  it("v14 with arm64 TLB semantics: flushing the output address by IPA leaves another vCPU's stage-2-only block entry (tlb-coherent)", () => {
    const { kvm, stale } = v14Dissolve('arm64', true);
    expect(stale).toBe(true);
    const tlb = checkTlbCoherent(kvm);
    expect(tlb.some((v) => v.actor === 'vcpu1' && v.gfn === 0)).toBe(true);
  });

  it('v14 with arm64 TLB semantics: a combined stage-1+2 block entry goes with the vmalle1is of any by-IPA flush', () => {
    const { kvm, stale } = v14Dissolve('arm64', false);
    expect(stale).toBe(false);
    expect(checkTlbCoherent(kvm)).toEqual([]);
  });
});

describe('fault: read faults while logging', () => {
  for (const profile of PROFILES) {
    const v14 = profile === 'v14';
    it(`${profile}: a read fault while logging on a page the host maps writable maps it ${v14 ? 'writable and not dirty' : 'read-only'}`, () => {
      const w = world({ profile, backing: 'thp' });
      const { kvm } = w;
      const [v0] = w.vcpus;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      expect(Atomics.load(kvm.m, kvm.layout.hpte + 5) & HPTE_WRITE).not.toBe(0);

      guestAccess(kvm, v0, 5, false, 0);

      const leaf = s2Lookup(kvm, 5);
      expect(leaf.level).toBe(LEVEL_PTE);
      expect(descWritable(leaf.desc)).toBe(v14);
      expect(dirtyGfns(kvm)).toEqual([]);
    });

    it(`${profile}: a write through a page first mapped by a read fault while logging is ${v14 ? 'missing from' : 'in'} the next harvest`, () => {
      const w = world({ profile, backing: 'thp' });
      const { kvm } = w;
      const [v0] = w.vcpus;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      copyAllPages(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, false, 0);
      const faults = counter(kvm, 'faults');

      guestAccess(kvm, v0, 5, true, wval(v0));

      expect(counter(kvm, 'faults') - faults).toBe(v14 ? 0 : 1);
      const snap = newSnapshot(kvm);
      kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, snap);
      expect(snapshotGfns(kvm, snap)).toEqual(v14 ? [] : [5]);
      copyDirtyPages(kvm, w.migrator, RAM_SLOT, snap);
      const cmp = compareDestination(kvm, w.migrator, RAM_SLOT);
      expect(cmp.bad.map(([gfn]) => gfn)).toEqual(v14 ? [5] : []);
    });
  }
});

describe('fault: block over a PTE table after logging is cancelled', () => {
  /**
   * THP backing, logging on, writes to a few pages of block 0 (dissolved
   * into a PTE table), reads of other pages by vCPU1 (4 KiB TLB entries),
   * logging off, then a fault on a page of block 0 not yet mapped: THP
   * adjust makes it a block over the PMD that holds the PTE table.
   */
  function blockOverTable(profile: (typeof PROFILES)[number]) {
    const w = world({ profile, backing: 'thp' });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    for (const gfn of [1, 2, 3]) guestAccess(kvm, v0, gfn, true, wval(v0));
    for (const gfn of [10, 11]) {
      guestAccess(kvm, v1, gfn, false, 0);
      // cached again as stage-2-only entries: on arm64 a by-IPA flush elsewhere spares them
      tlbLocalInvalidate(kvm, 1, gfn);
      nextFill(kvm, 1, true);
      guestAccess(kvm, v1, gfn, false, 0);
    }
    expect(tlbPage(kvm, 1, 10)).not.toBeNull();
    expect(tlbPage(kvm, 1, 11)).not.toBeNull();
    kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    const pmdDesc = Atomics.load(kvm.m, pmdEntry(kvm, 20));
    expect(descIsTable(pmdDesc)).toBe(true);
    const table = descOa(pmdDesc);
    expect(s2Lookup(kvm, 20).level).toBe(0);

    guestAccess(kvm, v0, 20, true, wval(v0));

    expect(s2Lookup(kvm, 20).level).toBe(LEVEL_PMD);
    return { w, kvm, table };
  }

  for (const profile of ['v14', 'v15'] as const) {
    const armv7 = profile === 'v14';
    it(`${profile}: a block installed over a PMD holding a PTE table leaks the table${armv7 ? ' (the TLBIALLIS of ARMv7 takes the 4 KiB entries)' : ' and leaves stale stage-2-only 4 KiB TLB entries'}`, () => {
      const { kvm, table } = blockOverTable(profile);
      expect(Atomics.load(kvm.m, kvm.layout.tableState + table)).toBe(TABLE_LIVE);
      const tc = checkTableConservation(kvm);
      expect(tc.some((v) => v.table === table && /not reachable from the root: leaked/.test(v.message))).toBe(true);
      const tlb = checkTlbCoherent(kvm);
      for (const gfn of [10, 11]) {
        expect(tlb.some((v) => v.actor === 'vcpu1' && v.gfn === gfn && /TLB conflict/.test(v.message))).toBe(!armv7);
      }
    });
  }

  it('fixed: a block over a PMD holding a PTE table first unmaps the 2 MiB range: table freed, no 4 KiB TLB entry left, every quiescent check clean', () => {
    const { w, kvm, table } = blockOverTable('fixed');
    expect(Atomics.load(kvm.m, kvm.layout.tableState + table)).toBe(TABLE_FREE);
    expect(tlbPage(kvm, 1, 10)).toBeNull();
    expect(tlbPage(kvm, 1, 11)).toBeNull();
    expect(tlbPage(kvm, 0, 1)).toBeNull();
    expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    // what the guest wrote through the PTEs reads back through the block
    const [, v1] = w.vcpus;
    for (const gfn of [1, 2, 3, 20]) expect(guestAccess(kvm, v1, gfn, false, 0)).toBe(kvm.m[kvm.layout.shadow + gfn]);
  });
});

describe('fault: mark_page_dirty', () => {
  for (const profile of PROFILES) {
    const v14 = profile === 'v14';
    it(`${profile}: mark_page_dirty runs under mmu_lock ${v14 ? 'after stage2_set_pte (if write_fault)' : 'before stage2_set_pte (if the new entry is writable)'}`, () => {
      const w = world({ profile, backing: 'anon' });
      const { kvm } = w;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      const { actor: v0, sched } = scripted(kvm, 0);
      let seen: { level: number; writable: boolean; locked: boolean } | null = null;
      sched.at('dirty.mark', () => {
        const r = s2Lookup(kvm, 5);
        seen = { level: r.level, writable: descWritable(r.desc), locked: kvm.mmuLock.heldBy(v0) };
      });

      guestAccess(kvm, v0, 5, true, wval(v0));

      expect(sched.pending()).toEqual([]);
      expect(seen).toEqual(v14 ? { level: LEVEL_PTE, writable: true, locked: true } : { level: 0, writable: false, locked: true });
      expect(dirtyGfns(kvm)).toEqual([5]);
    });
  }
});

describe('fault: entry updates', () => {
  for (const profile of PROFILES) {
    for (const backing of ['anon', 'thp'] as const) {
      const skips = profile === 'fixed';
      const what = backing === 'anon' ? 'PTE' : 'block';
      it(`${profile}: a second vCPU faulting on a ${what} another vCPU just mapped ${skips ? 'skips the unchanged entry (skippedSame)' : 'clears, flushes and rewrites it'}`, () => {
        const w = world({ profile, backing });
        const { kvm } = w;
        const [v0] = w.vcpus;
        const { actor: v1, sched } = scripted(kvm, 1);
        // vCPU1 missed in its TLB and walk; before its fault runs, vCPU0 maps the page.
        sched.at('fault.entry', () => guestAccess(kvm, v0, 5, false, 0));
        let flushesBefore = 0;
        let descBefore = 0;
        sched.at('fault.seq', () => {
          flushesBefore = counter(kvm, 'tlbFlushes');
          descBefore = s2Lookup(kvm, 5).desc;
          expect(tlbPage(kvm, 0, 5) ?? tlbBlock(kvm, 0, 5)).not.toBeNull();
        });

        guestAccess(kvm, v1, 5, false, 0);

        expect(sched.pending()).toEqual([]);
        expect(s2Lookup(kvm, 5).desc).toBe(descBefore);
        expect(counter(kvm, 'skippedSame')).toBe(skips ? 1 : 0);
        expect(counter(kvm, 'tlbFlushes') - flushesBefore).toBe(skips ? 0 : 1);
        // the break-before-make flush takes vCPU0's entry with it (a refault)
        expect((tlbPage(kvm, 0, 5) ?? tlbBlock(kvm, 0, 5)) !== null).toBe(skips);
        expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
      });
    }
  }

  it('a read that takes a permission fault is an error (-EFAULT) and maps nothing', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    const ret = userMemAbort(kvm, v0, 5, false, true, RAM_SLOT, slotFlags(kvm, RAM_SLOT));
    expect(ret).toBe(EFAULT);
    expect(s2Lookup(kvm, 5).level).toBe(0);
    expect(counter(kvm, 'pteMaps') + counter(kvm, 'blockMaps')).toBe(0);
  });

  it('the memory cache is topped up outside mmu_lock, and the fault takes its table pages from it', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    let ownerAtTopup = -2;
    sched.at('memcache.topup', () => {
      ownerAtTopup = kvm.mmuLock.owner();
    });
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(sched.pending()).toEqual([]);
    expect(ownerAtTopup).toBe(-1);
    // one PMD table and one PTE table came out of the cache
    expect(memcacheCount(kvm, 0)).toBe(KVM_NR_MEM_OBJS - 2);
  });

  it('the host lookup waits while the page is under migration, and the fault maps the page once the migration entry is gone', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const idx = kvm.layout.hpte + 5;
    Atomics.or(kvm.m, idx, HPTE_MIGRATING);
    const { actor: v0, sched } = scripted(kvm, 0);
    let mappedDuringWait = -1;
    sched.onWait = (wr) => {
      mappedDuringWait = s2Lookup(kvm, 5).level;
      expect(wr.index).toBe(idx);
      // remove_migration_ptes()
      Atomics.and(kvm.m, idx, ~HPTE_MIGRATING);
    };
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(sched.waits.map((x) => x.site)).toEqual(['hostpt.migrating']);
    expect(mappedDuringWait).toBe(0);
    expect(descOa(s2Lookup(kvm, 5).desc)).toBe(Atomics.load(kvm.m, idx) & HPTE_FRAME_MASK);
  });
});

describe('fault: hugetlb and device memory', () => {
  for (const profile of PROFILES) {
    it(`${profile}: a hugetlb VMA gives a block only when the slot is not logging`, () => {
      const w = world({ profile, backing: 'hugetlb' });
      const { kvm } = w;
      const [v0] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 600, true, wval(v0)); // untouched region: no block while logging
      expect(s2Lookup(kvm, 600).level).toBe(LEVEL_PTE);
      guestAccess(kvm, v0, 5, true, wval(v0)); // the existing block is dissolved
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
      expect(dirtyGfns(kvm)).toEqual([5, 600]);
      kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 1100, true, wval(v0));
      expect(s2Lookup(kvm, 1100).level).toBe(LEVEL_PMD);
      expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    });

    it(`${profile}: a device page is mapped as a device PTE with IS_IOMAP (a fault on the present entry is -EFAULT) and is never logged`, () => {
      const w = world({ profile, backing: 'mixed' });
      const { kvm } = w;
      const [v0] = w.vcpus;
      const L = kvm.layout;
      const gfn = L.ramPages + 3;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      const frame = Atomics.load(kvm.m, L.hpte + gfn) & HPTE_FRAME_MASK;
      const ref = Atomics.load(kvm.m, L.frameRef + frame);
      const val = wval(v0);

      guestAccess(kvm, v0, gfn, true, val);

      const leaf = s2Lookup(kvm, gfn);
      expect(leaf.level).toBe(LEVEL_PTE);
      expect(leaf.desc & S2_MEMATTR_DEVICE).not.toBe(0);
      expect(descWritable(leaf.desc)).toBe(true);
      expect(descOa(leaf.desc)).toBe(frame);
      expect(Atomics.load(kvm.m, L.frameRef + frame)).toBe(ref); // device memory is not refcounted
      // stage2_set_pte(..., KVM_S2PTE_FLAG_IS_IOMAP) refuses a present entry
      expect(kvmHandleGuestAbort(kvm, w.vcpus[1], gfn, true, false)).toBe(EFAULT);
      expect(dirtyGfns(kvm, RAM_SLOT)).toEqual([]);
      expect(dirtyGfns(kvm, DEVICE_SLOT)).toEqual([]);
      const snap = newSnapshot(kvm);
      expect(kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, snap)).toBe(0);
      expect(guestAccess(kvm, v0, gfn, false, 0)).toBe(val);
    });
  }
});
