/**
 * Eager page splitting (6.5, KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE): at
 * logging-on the slot is write-protected, then its blocks are split chunk by
 * chunk under the write side of mmu_lock, which is dropped between chunks to
 * top up the per-VM split cache or reschedule; the new PTEs inherit the
 * block's permissions; the cache is freed when logging goes off. Scripted,
 * single-threaded.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkLoggingOnReturned, checkNoBlockWhileLogging, checkTableConservation, liveViolations } from '../../src/check/invariants.js';
import { kvmDisableDirtyLogging, kvmEnableDirtyLogging } from '../../src/kvm/memslot.js';
import { s2Lookup, splitCacheCount } from '../../src/kvm/pgtable.js';
import { LEVEL_PMD, LEVEL_PTE, descWritable } from '../../src/arch/stage2.js';
import { RAM_SLOT } from '../../src/vm.js';
import { ConfigError } from '../../src/config.js';
import { counter, dirtyGfns, invariantsOf, scripted, world, wval } from './support.js';

const MiB = 1024 * 1024;
const RW = { lock: 'rwlock' as const };

/** 8 MiB THP guest: a write to each 2 MiB region maps 4 writable blocks. */
function fourBlocks(opts: { profile?: '6.5' | '6.10' | 'modern'; bugs?: string[]; chunk?: number } = {}) {
  const w = world({ profile: opts.profile ?? '6.10', backing: 'thp', bugs: opts.bugs ?? [], eagerSplitChunk: opts.chunk ?? 2 * MiB, ...RW });
  const v0 = w.vcpus[0];
  for (const g of [5, 600, 1100, 1600]) guestAccess(w.kvm, v0, g, true, wval(v0));
  for (const g of [5, 600, 1100, 1600]) expect(s2Lookup(w.kvm, g).level).toBe(LEVEL_PMD);
  return { w, kvm: w.kvm, v0 };
}

function blocks(kvm: Parameters<typeof s2Lookup>[0]): number {
  let n = 0;
  for (let g = 0; g < kvm.layout.ramPages; g += 512) if (s2Lookup(kvm, g).level === LEVEL_PMD) n++;
  return n;
}

describe('eager page splitting at logging-on', () => {
  it('leaves no block: every page of the slot mapped by a write-protected PTE; tables and the split cache accounted', () => {
    const { w, kvm } = fourBlocks();
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(counter(kvm, 'eagerSplits')).toBe(4);
    expect(blocks(kvm)).toBe(0);
    for (let g = 0; g < kvm.layout.ramPages; g++) {
      const r = s2Lookup(kvm, g);
      expect(r.level).toBe(LEVEL_PTE);
      expect(descWritable(r.desc)).toBe(false);
    }
    expect(splitCacheCount(kvm)).toBeGreaterThan(0); // kept for later splits while logging
    expect(checkLoggingOnReturned(kvm, w.migrator, RAM_SLOT)).toBe(0);
    expect(checkTableConservation(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
    // A write faults on its PTE and is logged.
    guestAccess(kvm, w.vcpus[0], 7, true, wval(w.vcpus[0]));
    expect(dirtyGfns(kvm)).toEqual([7]);
  });

  it('with the dirty ring, a page written after logging-on is dirty by its ring entry: the logging-on check accepts its writable PTE, and reports it once the entry is gone', () => {
    const w = world({ profile: '6.10', backing: 'thp', eagerSplitChunk: 2 * MiB, dirtyLog: 'ring', ...RW });
    const { kvm } = w;
    const v0 = w.vcpus[0];
    for (const g of [5, 600]) guestAccess(kvm, v0, g, true, wval(v0));
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(blocks(kvm)).toBe(0);
    guestAccess(kvm, v0, 7, true, wval(v0));
    expect(descWritable(s2Lookup(kvm, 7).desc)).toBe(true);
    expect(dirtyGfns(kvm)).toEqual([]); // the bitmap is the backup one: the page is in vcpu0's ring
    expect(checkLoggingOnReturned(kvm, w.migrator, RAM_SLOT)).toBe(0);
    // Broken state: the ring forgets the entry (reset_index moved past it without the reset's write-protect).
    const b = kvm.layout.dirtyRings;
    Atomics.store(kvm.m, b + 1, Atomics.load(kvm.m, b + 0));
    expect(checkLoggingOnReturned(kvm, w.migrator, RAM_SLOT)).toBe(1);
    expect(invariantsOf(liveViolations(kvm))).toEqual(['no-block-while-logging']);
  });

  it('a 1G chunk splits the whole 8 MiB slot in one chunk: the cache is topped up to kvm_mmu_split_nr_page_tables(1G) = 513 once', () => {
    const { w, kvm } = fourBlocks({ chunk: 1024 * MiB });
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(kvm.layout.splitCacheCap).toBe(513);
    expect(counter(kvm, 'splitLockDrops')).toBe(1);
    expect(splitCacheCount(kvm)).toBe(513 - 4);
    expect(blocks(kvm)).toBe(0);
    expect(checkTableConservation(kvm)).toEqual([]);
  });

  it('drops mmu_lock between chunks: a vCPU fault runs between two chunks, then the split goes on; no block is left and nothing is reported', () => {
    const { w, kvm } = fourBlocks();
    const { actor: mig, sched } = scripted(kvm, w.migrator.id);
    const v1 = w.vcpus[1];
    let ranBetween = false;
    // 2M chunks, a cache of 2: the first drop tops the cache up before chunk 0,
    // the second (the cache below its capacity) comes before chunk 1.
    sched.at('split.resched', () => undefined);
    sched.at('split.resched', () => {
      expect(kvm.mmuLock.heldBy(mig)).toBe(false);
      expect(counter(kvm, 'eagerSplits')).toBe(1);
      // Region 3's block is write-protected and not split yet: a write faults and splits it itself.
      guestAccess(kvm, v1, 1600, true, wval(v1));
      ranBetween = true;
    });
    kvmEnableDirtyLogging(kvm, mig, RAM_SLOT);
    expect(ranBetween).toBe(true);
    expect(sched.pending()).toEqual([]);
    expect(counter(kvm, 'splitLockDrops')).toBeGreaterThanOrEqual(2);
    expect(counter(kvm, 'eagerSplits')).toBe(3); // the fault split the fourth
    expect(counter(kvm, 'blockSplits')).toBe(1);
    expect(blocks(kvm)).toBe(0);
    expect(descWritable(s2Lookup(kvm, 1600).desc)).toBe(true);
    expect(dirtyGfns(kvm)).toEqual([1600]);
    expect(checkLoggingOnReturned(kvm, mig, RAM_SLOT)).toBe(0);
    expect(checkTableConservation(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('the split cache is freed when logging goes off (kvm_arch_commit_memory_region); split-cache-leak keeps it and table-conservation reports it', () => {
    for (const bugs of [[], ['split-cache-leak']]) {
      const { w, kvm } = fourBlocks({ bugs });
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      expect(splitCacheCount(kvm)).toBeGreaterThan(0);
      expect(checkTableConservation(kvm)).toEqual([]); // while logging, the cache is legal
      kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      if (bugs.length === 0) {
        expect(splitCacheCount(kvm)).toBe(0);
        expect(checkTableConservation(kvm)).toEqual([]);
      } else {
        expect(splitCacheCount(kvm)).toBeGreaterThan(0);
        const v = checkTableConservation(kvm);
        expect(v.length).toBe(1);
        expect(v[0].message).toMatch(/eager-split cache holds \d+ table pages .* while no slot is logging/);
      }
    }
  });

  it('split-keeps-write: the split PTEs are writable under the write-protected block, a write to them is not logged, and the live check at logging-on reports them', () => {
    const { w, kvm } = fourBlocks({ bugs: ['split-keeps-write'] });
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(descWritable(s2Lookup(kvm, 9).desc)).toBe(true);
    expect(checkNoBlockWhileLogging(kvm)).toEqual([]); // no block: the block check alone misses it
    expect(checkLoggingOnReturned(kvm, w.migrator, RAM_SLOT)).toBeGreaterThan(0);
    expect(invariantsOf(liveViolations(kvm))).toContain('no-block-while-logging');
    guestAccess(kvm, w.vcpus[0], 9, true, wval(w.vcpus[0]));
    expect(dirtyGfns(kvm)).toEqual([]);
  });

  it('is refused before 6.5 and for chunk sizes the kernel refuses (ConfigError naming --eager-split-chunk)', () => {
    expect(() => world({ profile: '6.2', backing: 'thp', eagerSplitChunk: 2 * MiB, ...RW })).toThrow(ConfigError);
    expect(() => world({ profile: '6.2', backing: 'thp', eagerSplitChunk: 2 * MiB, ...RW })).toThrow(/first profile that does is 6\.5/);
    expect(() => world({ profile: '6.5', backing: 'thp', manualProtect: 'initially-set', eagerSplitChunk: 2 * MiB, ...RW })).not.toThrow();
  });
});
