/**
 * Manual-protect dirty logging (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): GET
 * copies the bitmap, CLEAR clears the bits of a 64-page aligned range and
 * write-protects those pages under mmu_lock, then flushes; with
 * KVM_DIRTY_LOG_INITIALLY_SET the bitmap starts all ones and logging-on
 * write-protects nothing, so `no-block-while-logging` holds only on ranges
 * a CLEAR covered. Scripted, single-threaded.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkLoggingOnReturned, checkNoBlockWhileLogging, checkTableConservation, liveViolations } from '../../src/check/invariants.js';
import { ClearDirtyLogError, kvmClearDirtyLog, kvmEnableDirtyLogging, kvmGetDirtyLogManual } from '../../src/kvm/memslot.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { LEVEL_PMD, LEVEL_PTE, descWritable, mkWrite } from '../../src/arch/stage2.js';
import { RAM_SLOT } from '../../src/vm.js';
import { harvestDirtyLog } from '../../src/actors/migrator.js';
import { counter, dirtyGfns, invariantsOf, newSnapshot, snapshotGfns, tlbPage, world, wval } from './support.js';

const RW = { lock: 'rwlock' as const };

function writable(kvm: Parameters<typeof s2Lookup>[0], gfn: number): boolean {
  return descWritable(s2Lookup(kvm, gfn).desc);
}

describe('KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG (manual protect on)', () => {
  it('GET only copies the bitmap; CLEAR of [0, 64) clears and write-protects only that range, then flushes', () => {
    const w = world({ profile: '6.10', backing: 'anon', manualProtect: 'on', ...RW });
    const { kvm, migrator } = w;
    const v0 = w.vcpus[0];
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    guestAccess(kvm, v0, 3, true, wval(v0));
    guestAccess(kvm, v0, 100, true, wval(v0));
    expect(writable(kvm, 3) && writable(kvm, 100)).toBe(true);
    const snap = newSnapshot(kvm);
    expect(kvmGetDirtyLogManual(kvm, migrator, RAM_SLOT, snap)).toBe(2);
    expect(snapshotGfns(kvm, snap)).toEqual([3, 100]);
    // Nothing cleared, nothing write-protected by GET.
    expect(dirtyGfns(kvm)).toEqual([3, 100]);
    expect(writable(kvm, 3) && writable(kvm, 100)).toBe(true);
    expect(tlbPage(kvm, 0, 3)).not.toBeNull();
    expect(kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 0, 64, snap)).toBe(1);
    expect(writable(kvm, 3)).toBe(false);
    expect(writable(kvm, 100)).toBe(true); // not cleared yet
    expect(dirtyGfns(kvm)).toEqual([100]);
    expect(tlbPage(kvm, 0, 3)).toBeNull(); // the flush after the unlock
    // A write to the cleared page faults again and is logged again.
    guestAccess(kvm, v0, 3, true, wval(v0));
    expect(dirtyGfns(kvm)).toEqual([3, 100]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('CLEAR refuses a first page that is not a multiple of 64, and a length not a multiple of 64 short of the slot end (-EINVAL)', () => {
    const w = world({ profile: '6.10', backing: 'anon', manualProtect: 'on', ...RW });
    const { kvm, migrator } = w;
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    const snap = newSnapshot(kvm);
    expect(() => kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 32, 64, snap)).toThrow(ClearDirtyLogError);
    expect(() => kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 0, 100, snap)).toThrow(/-EINVAL/);
    const npages = kvm.layout.ramPages;
    expect(kvmClearDirtyLog(kvm, migrator, RAM_SLOT, npages - 64, 64, snap)).toBe(0);
  });

  it('a harvest in chunks clears every reported bit, copies every dirty page after its clear, and leaves the cleared pages write-protected', () => {
    const w = world({ profile: '6.10', backing: 'anon', manualProtect: 'on', ...RW });
    const { kvm, migrator } = w;
    const v0 = w.vcpus[0];
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    const gfns = [1, 70, 700, 2047];
    for (const g of gfns) guestAccess(kvm, v0, g, true, wval(v0));
    const snap = newSnapshot(kvm);
    harvestDirtyLog(kvm, migrator, RAM_SLOT, snap, 64);
    expect(counter(kvm, 'dirtyLogClears')).toBe(4); // one CLEAR per chunk holding a dirty bit
    expect(dirtyGfns(kvm)).toEqual([]);
    for (const g of gfns) {
      expect(writable(kvm, g)).toBe(false);
      expect(Atomics.load(kvm.m, kvm.layout.dest + g)).toBe(Atomics.load(kvm.m, kvm.layout.shadow + g));
    }
  });

  it('clear-no-flush: a vCPU keeps writing through its writable TLB entry after the CLEAR, unlogged; break-before-make reports the missing flush at slots_lock release', () => {
    for (const bugs of [[], ['clear-no-flush']]) {
      const w = world({ profile: 'modern', backing: 'anon', manualProtect: 'on', bugs, ...RW });
      const { kvm, migrator } = w;
      const v0 = w.vcpus[0];
      kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, true, wval(v0)); // fault, logged, writable TLB entry
      const snap = newSnapshot(kvm);
      kvmGetDirtyLogManual(kvm, migrator, RAM_SLOT, snap);
      kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 0, 64, snap);
      guestAccess(kvm, v0, 5, true, wval(v0));
      if (bugs.length === 0) {
        expect(dirtyGfns(kvm)).toEqual([5]);
        expect(liveViolations(kvm)).toEqual([]);
      } else {
        expect(dirtyGfns(kvm)).toEqual([]); // the write went through the stale TLB entry
        expect(invariantsOf(liveViolations(kvm))).toContain('break-before-make');
      }
    }
  });
});

describe('KVM_DIRTY_LOG_INITIALLY_SET', () => {
  /** A THP world with a writable block over gfns 0..511 and one over 512..1023, then logging on. */
  function blocksThenLogging(bugs: string[] = [], eagerSplitChunk?: number) {
    const w = world({ profile: '6.10', backing: 'thp', manualProtect: 'initially-set', bugs, ...(eagerSplitChunk ? { eagerSplitChunk } : {}), ...RW });
    const { kvm, migrator } = w;
    const v0 = w.vcpus[0];
    guestAccess(kvm, v0, 5, true, wval(v0));
    guestAccess(kvm, v0, 600, true, wval(v0));
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
    expect(s2Lookup(kvm, 600).level).toBe(LEVEL_PMD);
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    return { w, kvm, migrator, v0 };
  }

  it('the bitmap starts all ones, logging-on write-protects nothing, and the checker accepts the writable blocks of ranges not cleared yet', () => {
    const { kvm, migrator } = blocksThenLogging();
    expect(dirtyGfns(kvm).length).toBe(kvm.layout.ramPages);
    expect(writable(kvm, 5) && writable(kvm, 600)).toBe(true);
    expect(checkLoggingOnReturned(kvm, migrator, RAM_SLOT)).toBe(0);
    expect(checkNoBlockWhileLogging(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('a CLEAR of [0, 64) write-protects the whole first block; the second stays writable and legal; a writable block on the cleared range is reported', () => {
    const { kvm, migrator } = blocksThenLogging();
    const snap = newSnapshot(kvm);
    kvmGetDirtyLogManual(kvm, migrator, RAM_SLOT, snap);
    kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 0, 64, snap);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
    expect(writable(kvm, 5)).toBe(false);
    expect(writable(kvm, 600)).toBe(true);
    expect(checkNoBlockWhileLogging(kvm)).toEqual([]);
    // A broken state: the cleared range's block made writable again.
    const e = s2Lookup(kvm, 5).entry;
    Atomics.store(kvm.m, e, mkWrite(Atomics.load(kvm.m, e)));
    const v = checkNoBlockWhileLogging(kvm);
    expect(v.length).toBe(1);
    expect(v[0].message).toMatch(/gfn 0\.\.511 is mapped by a writable block/);
  });

  it('initially-set-skips-wp: the CLEAR leaves the block writable (no-block-while-logging) and a later write to a cleared page is never logged', () => {
    const { kvm, migrator, v0 } = blocksThenLogging(['initially-set-skips-wp']);
    const snap = newSnapshot(kvm);
    kvmGetDirtyLogManual(kvm, migrator, RAM_SLOT, snap);
    kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 0, 64, snap);
    expect(writable(kvm, 5)).toBe(true);
    expect(invariantsOf(checkNoBlockWhileLogging(kvm))).toEqual(['no-block-while-logging']);
    guestAccess(kvm, v0, 6, true, wval(v0));
    expect(dirtyGfns(kvm)).not.toContain(6);
  });

  it('with eager splitting (6.5 on) the CLEAR splits the cleared range: no block there, write-protected PTEs; the other block stays', () => {
    const { kvm, migrator } = blocksThenLogging([], 2 * 1024 * 1024);
    expect(counter(kvm, 'eagerSplits')).toBe(0); // not at logging-on
    const snap = newSnapshot(kvm);
    kvmGetDirtyLogManual(kvm, migrator, RAM_SLOT, snap);
    kvmClearDirtyLog(kvm, migrator, RAM_SLOT, 0, 64, snap);
    expect(counter(kvm, 'eagerSplits')).toBe(1);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
    expect(writable(kvm, 5)).toBe(false);
    // stage2_wp_range() of [0, 64) write-protected the whole block before the split: every PTE inherits it.
    expect(s2Lookup(kvm, 300).level).toBe(LEVEL_PTE);
    expect(writable(kvm, 300)).toBe(false);
    expect(s2Lookup(kvm, 600).level).toBe(LEVEL_PMD);
    expect(checkNoBlockWhileLogging(kvm)).toEqual([]);
    expect(checkTableConservation(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
  });
});
