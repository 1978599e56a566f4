/**
 * Every invariant check fails on a state broken by hand, and passes on the
 * same state intact just before: none can pass vacuously (docs/design.md
 * section 3).
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import {
  checkFramesMappedAreLive,
  checkLockFree,
  checkLoggingOnReturned,
  checkStoppedWorld,
  checkNoBlockWhileLogging,
  checkShadowEqual,
  checkTableConservation,
  checkTlbCoherent,
  liveViolations,
} from '../../src/check/invariants.js';
import { copyAllPages, compareDestination, mismatchViolations } from '../../src/check/migration.js';
import { kvmEnableDirtyLogging, SLOTW, slotWord, LOG_ON } from '../../src/kvm/memslot.js';
import { s2Lookup, s2Write, tableOf } from '../../src/kvm/pgtable.js';
import { kvmMmuNotifierInvalidateRangeEnd, kvmMmuNotifierInvalidateRangeStart } from '../../src/kvm/notifier.js';
import { LEVEL_PMD, LEVEL_PTE, S2_OA_SHIFT, descOa, mkWrite, pfnPte } from '../../src/arch/stage2.js';
import { HPTE_FRAME_MASK } from '../../src/mm/hostpt.js';
import { tlbPageSlot } from '../../src/kvm/tlb.js';
import { RAM_SLOT } from '../../src/vm.js';
import { LS } from '../../src/sync/locksites.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { LockStats, mergeLockStats } from '../../src/sync/lockstat.js';
import { pmdEntry, tlbBlock, tlbPage, world, wval } from './support.js';

function hostFrame(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn) & HPTE_FRAME_MASK;
}

describe('shadow-equal', () => {
  it('checkShadowEqual reports a page whose memory differs from what the guest wrote last', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    const val = wval(v0);
    guestAccess(kvm, v0, 5, true, val);
    expect(checkShadowEqual(kvm)).toEqual([]);

    Atomics.store(kvm.m, kvm.layout.frameData + hostFrame(kvm, 5), val ^ 0x100);

    const vs = checkShadowEqual(kvm);
    expect(vs.map((v) => [v.invariant, v.gfn])).toEqual([['shadow-equal', 5]]);
  });
});

describe('table-conservation', () => {
  it('checkTableConservation reports a PTE table unlinked from its PMD but still allocated (leaked)', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(checkTableConservation(kvm)).toEqual([]);

    const pmd = pmdEntry(kvm, 5);
    const table = descOa(Atomics.load(kvm.m, pmd));
    Atomics.store(kvm.m, pmd, 0);
    Atomics.sub(kvm.m, kvm.layout.tableRef + tableOf(kvm, pmd), 1); // the PMD table's count stays right

    const vs = checkTableConservation(kvm);
    expect(vs.map((v) => [v.invariant, v.table])).toEqual([['table-conservation', table]]);
    expect(vs[0].message).toMatch(/leaked/);
  });

  it('checkTableConservation reports a table page whose refcount is not 1 + its valid entries', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(checkTableConservation(kvm)).toEqual([]);
    const table = tableOf(kvm, s2Lookup(kvm, 5).entry);

    Atomics.add(kvm.m, kvm.layout.tableRef + table, 1);

    const vs = checkTableConservation(kvm);
    expect(vs.map((v) => [v.invariant, v.table])).toEqual([['table-conservation', table]]);
    expect(vs[0].message).toMatch(/refcount 3 but 1 valid entries/);
  });
});

describe('no-block-while-logging', () => {
  it('checkNoBlockWhileLogging reports a writable block in a slot whose LOG_STATE is LOG_ON', () => {
    const w = world({ backing: 'thp' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(checkNoBlockWhileLogging(kvm)).toEqual([]); // not logging: blocks are fine
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(Atomics.load(kvm.m, slotWord(kvm, RAM_SLOT, SLOTW.LOG_STATE))).toBe(LOG_ON);
    const block = s2Lookup(kvm, 5);
    expect(block.level).toBe(LEVEL_PMD);
    expect(checkNoBlockWhileLogging(kvm)).toEqual([]); // logging: the block is read-only

    Atomics.store(kvm.m, block.entry, mkWrite(block.desc));

    expect(checkNoBlockWhileLogging(kvm).map((v) => [v.invariant, v.gfn])).toEqual([['no-block-while-logging', 0]]);
  });

  it('checkLoggingOnReturned records a live violation for a writable block when logging-on returns, and nothing otherwise', () => {
    const w = world({ backing: 'thp' });
    const { kvm, migrator } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(checkLoggingOnReturned(kvm, migrator, RAM_SLOT)).toBe(0); // not logging: nothing to check
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    expect(checkLoggingOnReturned(kvm, migrator, RAM_SLOT)).toBe(0); // the enable write-protected the block
    expect(liveViolations(kvm)).toEqual([]);
    expect(kvm.mmuLock.owner()).toBe(-1);

    // a fault that raced the enable left the block writable
    const block = s2Lookup(kvm, 5);
    Atomics.store(kvm.m, block.entry, mkWrite(block.desc));

    expect(checkLoggingOnReturned(kvm, migrator, RAM_SLOT)).toBe(1);
    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.gfn, v.actor])).toEqual([['no-block-while-logging', 0, 'migrator']]);
    expect(vs[0].message).toMatch(/when logging-on returned, gfn 0\.\.511 was mapped by a writable block/);
    expect(kvm.mmuLock.owner()).toBe(-1);
  });
});

describe('tlb-coherent', () => {
  it('checkTlbCoherent reports a TLB entry for a page the tables no longer map (stale entry)', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 4, true, wval(v0));
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(tlbPage(kvm, 0, 5)).not.toBeNull();
    expect(checkTlbCoherent(kvm)).toEqual([]);

    Atomics.store(kvm.m, s2Lookup(kvm, 5).entry, 0);

    const vs = checkTlbCoherent(kvm);
    expect(vs.map((v) => [v.invariant, v.actor, v.gfn])).toEqual([['tlb-coherent', 'vcpu0', 5]]);
    expect(vs[0].message).toMatch(/stale entry/);
  });

  it('checkTlbCoherent reports a TLB entry that translates to another frame than the tables', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(checkTlbCoherent(kvm)).toEqual([]);
    const slot = tlbPageSlot(kvm, 0, 5);
    const desc = Atomics.load(kvm.m, slot + 1);

    Atomics.store(kvm.m, slot + 1, (desc & ((1 << S2_OA_SHIFT) - 1)) | (hostFrame(kvm, 6) << S2_OA_SHIFT));

    const vs = checkTlbCoherent(kvm);
    expect(vs.map((v) => [v.actor, v.gfn])).toEqual([['vcpu0', 5]]);
    expect(vs[0].message).toMatch(/stale translation/);
  });

  it('checkTlbCoherent reports a TLB entry with write permission the tables do not give', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, false, 0);
    const slot = tlbPageSlot(kvm, 0, 5);
    expect(tlbPage(kvm, 0, 5)).not.toBeNull();
    expect(checkTlbCoherent(kvm)).toEqual([]);

    Atomics.store(kvm.m, slot + 1, mkWrite(Atomics.load(kvm.m, slot + 1)));

    const vs = checkTlbCoherent(kvm);
    expect(vs.map((v) => [v.actor, v.gfn])).toEqual([['vcpu0', 5]]);
    expect(vs[0].message).toMatch(/stale write permission/);
  });

  it('checkTlbCoherent reports a 4 KiB TLB entry inside a range the tables map with a block (TLB conflict)', () => {
    const w = world({ backing: 'thp' });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    guestAccess(kvm, v1, 6, false, 0);
    expect(tlbBlock(kvm, 1, 6)).not.toBeNull();
    expect(checkTlbCoherent(kvm)).toEqual([]);

    const slot = tlbPageSlot(kvm, 1, 6);
    Atomics.store(kvm.m, slot + 1, pfnPte(hostFrame(kvm, 6), false));
    Atomics.store(kvm.m, slot, 6 + 1);

    const vs = checkTlbCoherent(kvm);
    expect(vs.map((v) => [v.actor, v.gfn])).toEqual([['vcpu1', 6]]);
    expect(vs[0].message).toMatch(/TLB conflict/);
  });
});

describe('frame-use-after-free', () => {
  it('a guest write into a frame whose refcount is zero is reported live', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    guestAccess(kvm, v0, 5, true, wval(v0)); // a TLB hit: no violation
    expect(liveViolations(kvm)).toEqual([]);

    Atomics.store(kvm.m, kvm.layout.frameRef + hostFrame(kvm, 5), 0);
    guestAccess(kvm, v0, 5, true, wval(v0));

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor, v.gfn])).toEqual([['frame-use-after-free', 'vcpu0', 5]]);
  });

  it('checkFramesMappedAreLive reports host and stage-2 mappings of a freed frame', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(checkFramesMappedAreLive(kvm)).toEqual([]);

    Atomics.store(kvm.m, kvm.layout.frameRef + hostFrame(kvm, 5), 0);

    const vs = checkFramesMappedAreLive(kvm);
    expect(vs.map((v) => [v.invariant, v.gfn])).toEqual([
      ['frame-use-after-free', 5],
      ['frame-use-after-free', 5],
    ]);
    expect(vs.map((v) => v.message.split(' ')[0])).toEqual(['the', 'stage-2']);
  });
});

describe('lock-held', () => {
  it('a stage-2 entry written without mmu_lock is reported live', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    const r = s2Lookup(kvm, 5);
    expect(r.level).toBe(LEVEL_PTE);
    kvm.mmuLock.lock(host, LS.other);
    s2Write(kvm, host, r.entry, r.desc);
    kvm.mmuLock.unlock(host);
    expect(liveViolations(kvm)).toEqual([]);

    s2Write(kvm, host, r.entry, r.desc);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor])).toEqual([['lock-held', 'hostmm']]);
    expect(vs[0].message).toMatch(/without mmu_lock/);
  });

  it('checkLockFree reports mmu_lock held, or an invalidation that never ended, at a stop-the-world point', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    expect(checkLockFree(kvm)).toEqual([]);

    kvm.mmuLock.lock(host, LS.other);
    const held = checkLockFree(kvm);
    expect(held.map((v) => v.invariant)).toEqual(['lock-held']);
    expect(held[0].message).toMatch(/held by hostmm/);
    kvm.mmuLock.unlock(host);
    expect(checkLockFree(kvm)).toEqual([]);

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 5, 1);
    expect(checkLockFree(kvm).map((v) => v.message)).toEqual([expect.stringMatching(/mmu_notifier_count is 1/)]);
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 5, 1);
    expect(checkLockFree(kvm)).toEqual([]);
  });

  it('checkStoppedWorld walks the tables under mmu_lock (the `check` site), and without it when a parked actor holds it', () => {
    const stats = new LockStats(1);
    const w = world({ backing: 'anon' }, stats);
    const { kvm, host, checker } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    const before = mergeLockStats('ticket', [stats.snapshot()]).sites.find((x) => x.site === 'check');
    expect(before, 'the fault took mmu_lock at its own site').toBeUndefined();
    expect(checkStoppedWorld(kvm, checker)).toEqual([]);
    expect(kvm.mmuLock.owner()).toBe(-1);
    const row = mergeLockStats('ticket', [stats.snapshot()]).sites.find((x) => x.site === 'check');
    expect([row?.acquisitions, row?.holdTimed]).toEqual([1, 1]);

    // a table broken by hand is still reported under the lock
    Atomics.store(kvm.m, s2Lookup(kvm, 5).entry, 0);
    expect(checkStoppedWorld(kvm, checker).map((v) => v.invariant)).toContain('tlb-coherent');
    expect(kvm.mmuLock.owner()).toBe(-1);

    // a parked holder: reported, and the walks run without waiting for it
    kvm.mmuLock.lock(host, LS.other);
    const vs = checkStoppedWorld(kvm, checker);
    expect(vs.map((v) => v.invariant)).toContain('lock-held');
    expect(vs.map((v) => v.invariant)).toContain('tlb-coherent');
    expect(kvm.mmuLock.owner()).toBe(host.id);
    kvm.mmuLock.unlock(host);

    // an actor stopped while it waited holds a ticket: no owner, but not free
    const w0 = Atomics.load(kvm.m, kvm.layout.mmuLock);
    Atomics.add(kvm.m, kvm.layout.mmuLock, 1 << 16);
    expect(checkStoppedWorld(kvm, checker).map((v) => v.invariant)).toContain('tlb-coherent'); // returns: no wait for a ticket nobody serves
    expect(Atomics.load(kvm.m, kvm.layout.mmuLock)).toBe((w0 + (1 << 16)) | 0);
    expect(mergeLockStats('ticket', [stats.snapshot()]).sites.find((x) => x.site === 'check')?.acquisitions).toBe(2);
  });
});

describe('migration-equal', () => {
  it('compareDestination reports a destination page that differs from the source', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    for (const gfn of [5, 6]) guestAccess(kvm, v0, gfn, true, wval(v0));
    copyAllPages(kvm, w.migrator, RAM_SLOT);
    const intact = compareDestination(kvm, w.migrator, RAM_SLOT);
    expect([intact.verified, intact.mismatches]).toEqual([kvm.layout.ramPages, 0]);

    Atomics.add(kvm.m, kvm.layout.dest + 6, 1);

    const cmp = compareDestination(kvm, w.migrator, RAM_SLOT);
    expect(cmp.mismatches).toBe(1);
    const vs = mismatchViolations(cmp.bad, cmp.mismatches);
    expect(vs.map((v) => [v.invariant, v.gfn])).toEqual([['migration-equal', 6]]);
  });
});
