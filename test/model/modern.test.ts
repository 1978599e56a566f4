/**
 * The arm64 kvm_pgtable design (profiles 5.18-rc to 6.10): the shared walker
 * (compare-and-swap, LOCKED entries, -EAGAIN on a lost race), block to table
 * and table to block, tables unlinked by a shared walker freed after an RCU
 * grace period, the relax path and its TLB invalidation by version, and the
 * read side of mmu_lock. Constructed interleavings: another actor runs at a
 * named scheduling point of the first (ScriptSched).
 */
import { describe, it, expect } from 'vitest';
import { ACCESS_LIVELOCK, guestAccess } from '../../src/kvm/vcpu.js';
import { kvmHandleGuestAbort } from '../../src/kvm/mmu.js';
import { checkNoBlockWhileLogging, checkTableConservation, liveViolations } from '../../src/check/invariants.js';
import { kvmDisableDirtyLogging, kvmEnableDirtyLogging } from '../../src/kvm/memslot.js';
import { TABLE_FREE, TABLE_RCU, kvmPgtableStage2Map, s2Lookup } from '../../src/kvm/pgtable.js';
import { rcuReadLock, rcuReadUnlock } from '../../src/sync/rcu.js';
import { LEVEL_PMD, LEVEL_PTE, descIsTable, descOa, descWritable, pfnPte } from '../../src/arch/stage2.js';
import { RAM_SLOT } from '../../src/vm.js';
import { parseRunArgs } from '../../stress/options.js';
import type { ProfileName } from '../../src/config.js';
import { LS } from '../../src/sync/locksites.js';
import { counter, invariantsOf, pmdEntry, scripted, world, wval } from './support.js';

const MODERN = { lock: 'rwlock' as const };

/** A THP world of the profile: a first write maps a block over gfns 0..511. */
function thpWorld(profile: ProfileName, bugs: string[] = []) {
  const w = world({ profile, backing: 'thp', bugs, ...MODERN });
  return { w, kvm: w.kvm };
}

describe('the shared walker (6.2 on)', () => {
  it('two vCPUs creating the same missing level: the one whose compare-and-swap lost returns -EAGAIN, frees its table page and maps on its next fault; every page accounted', () => {
    const w = world({ profile: '6.2', backing: 'anon', ...MODERN });
    const { kvm } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    const v1 = w.vcpus[1];
    // v0 read the empty PGD entry; v1 maps the page before v0's compare-and-swap.
    sched.at('pgtable.cas', () => guestAccess(kvm, v1, 7, true, wval(v1)));
    const value = wval(v0);
    expect(guestAccess(kvm, v0, 7, true, value)).toBe(value);
    expect(counter(kvm, 'lostRaces')).toBe(1);
    expect(counter(kvm, 'readSideFaults')).toBe(2); // v1's fault and v0's lost one: v0 re-executes through v1's entry
    expect(sched.pending()).toEqual([]);
    expect(checkTableConservation(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('lost-race-leaks-table: the same race leaks the table page the loser allocated (table-conservation)', () => {
    const w = world({ profile: 'modern', backing: 'anon', bugs: ['lost-race-leaks-table'], ...MODERN });
    const { kvm } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    const v1 = w.vcpus[1];
    sched.at('pgtable.cas', () => guestAccess(kvm, v1, 7, true, wval(v1)));
    guestAccess(kvm, v0, 7, true, wval(v0));
    expect(counter(kvm, 'lostRaces')).toBe(1);
    const v = checkTableConservation(kvm);
    expect(v.length).toBe(1);
    expect(v[0].message).toMatch(/not reachable from the root: leaked/);
  });

  it('a write fault on a block while logging splits it: the block entry LOCKED, the TLB invalidated, a new PTE table made, then the page mapped; no break-before-make report', () => {
    const { w, kvm } = thpWorld('6.2');
    const v0 = w.vcpus[0];
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    const leaf = s2Lookup(kvm, 5);
    expect(leaf.level).toBe(LEVEL_PTE);
    expect(descWritable(leaf.desc)).toBe(true);
    expect(s2Lookup(kvm, 6).level).toBe(0); // split lazily: the other pages fault later
    expect(counter(kvm, 'blockSplits')).toBe(1);
    expect(liveViolations(kvm)).toEqual([]);
    expect(checkTableConservation(kvm)).toEqual([]);
  });

  it('break-without-tlbi: the same split makes the table before any TLB invalidation covered the broken block (break-before-make)', () => {
    const { w, kvm } = thpWorld('modern', ['break-without-tlbi']);
    const v0 = w.vcpus[0];
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(invariantsOf(liveViolations(kvm))).toContain('break-before-make');
  });

  it('make-without-break: a block replaced by a table in one compare-and-swap (break-before-make: another output, no break)', () => {
    const { w, kvm } = thpWorld('modern', ['make-without-break']);
    const v0 = w.vcpus[0];
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(invariantsOf(liveViolations(kvm))).toContain('break-before-make');
  });

  it('shared-plain-store: a shared walker that stores instead of compare-and-swap is a lock-held violation (an exclusive write under the read side)', () => {
    const w = world({ profile: 'modern', backing: 'anon', bugs: ['shared-plain-store'], ...MODERN });
    guestAccess(w.kvm, w.vcpus[0], 7, true, wval(w.vcpus[0]));
    const v = liveViolations(w.kvm);
    expect(invariantsOf(v)).toContain('lock-held');
    expect(v[0].message).toMatch(/under the read side of mmu_lock only/);
  });
});

describe('tables unlinked by a shared walker wait for an RCU grace period', () => {
  /** A PTE table under gfns 0..511 (a block split while logging), logging off again: the next fault maps the block back. */
  function splitThenUnlog(profile: ProfileName, bugs: string[] = []) {
    const { w, kvm } = thpWorld(profile, bugs);
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    const table = descOa(Atomics.load(kvm.m, pmdEntry(kvm, 5)));
    expect(descIsTable(Atomics.load(kvm.m, pmdEntry(kvm, 5)))).toBe(true);
    return { w, kvm, table };
  }

  it('table to block: the PTE table waits (TABLE_RCU) while a reader that entered before is inside its section, and is freed when it leaves', () => {
    const { w, kvm, table } = splitThenUnlog('6.2');
    const [v0, v1] = w.vcpus;
    rcuReadLock(kvm, v0); // a shared walk of v0 in progress
    guestAccess(kvm, v1, 9, false, 0); // maps the block back over the table
    expect(s2Lookup(kvm, 9).level).toBe(LEVEL_PMD);
    expect(Atomics.load(kvm.m, kvm.layout.tableState + table)).toBe(TABLE_RCU);
    expect(checkTableConservation(kvm)).toEqual([]); // accounted while it waits
    guestAccess(kvm, v1, 10, false, 0); // another read section ends: the grace period is still open
    expect(Atomics.load(kvm.m, kvm.layout.tableState + table)).toBe(TABLE_RCU);
    rcuReadUnlock(kvm, v0);
    expect(Atomics.load(kvm.m, kvm.layout.tableState + table)).toBe(TABLE_FREE);
    expect(counter(kvm, 'rcuTablesFreed')).toBe(1);
    expect(checkTableConservation(kvm)).toEqual([]);
  });

  for (const bugs of [[], ['unlinked-free-no-grace']]) {
    it(`a shared walk inside the table when another vCPU unlinks it: ${bugs.length ? 'freed at once, the walk reads a freed page (rcu-use-after-free)' : 'nothing freed under it'}`, () => {
      const { w, kvm } = splitThenUnlog('modern', bugs);
      const v1 = w.vcpus[1];
      const { actor: v0, sched } = scripted(kvm, 0);
      // v0 maps a page: it read the PMD entry (the table) and is about to read
      // the table's entries when v1's fault puts the block back.
      sched.at('pgtable.descend', () => {
        sched.at('pgtable.descend', () => guestAccess(kvm, v1, 9, false, 0));
      });
      kvm.mmuLock.readLock(v0, LS.fault);
      kvmPgtableStage2Map(kvm, v0, 7, LEVEL_PTE, pfnPte(7 + 512, false), true);
      kvm.mmuReadUnlock(v0);
      const invs = invariantsOf(liveViolations(kvm));
      if (bugs.length) expect(invs).toContain('rcu-use-after-free');
      else expect(invs).toEqual([]);
      expect(sched.pending()).toEqual([]);
    });
  }
});

describe('the relax path and its TLB invalidation by version', () => {
  /**
   * Both vCPUs hold the read-only entry of a page in their TLBs (logging on:
   * read faults map read-only); v0's write relaxes it, and v1's write, at
   * v0's compare-and-swap, relaxes it first: v0 lost the race.
   */
  function lostRelax(profile: ProfileName) {
    const w = world({ profile, backing: 'anon', ...MODERN });
    const { kvm } = w;
    const v1 = w.vcpus[1];
    const { actor: v0, sched } = scripted(kvm, 0);
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 7, false, 0);
    guestAccess(kvm, v1, 7, false, 0);
    expect(descWritable(s2Lookup(kvm, 7).desc)).toBe(false);
    sched.at('pgtable.cas', () => guestAccess(kvm, v1, 7, true, wval(v1)));
    const value = wval(v0);
    expect(guestAccess(kvm, v0, 7, true, value)).toBe(value);
    expect(liveViolations(kvm)).toEqual([]);
    return { kvm };
  }

  it('6.2: the winner invalidates by broadcast, so the loser re-executes without another fault', () => {
    const { kvm } = lostRelax('6.2');
    expect(counter(kvm, 'lostRaces')).toBe(1);
    expect(counter(kvm, 'spuriousPermFaults')).toBe(0);
  });

  it('6.5: the winner invalidates its own TLB only and the loser skips its TLBI: the loser takes one more permission fault on the entry the tables already make writable (no livelock)', () => {
    const { kvm } = lostRelax('6.5');
    expect(counter(kvm, 'lostRaces')).toBe(1);
    expect(counter(kvm, 'spuriousPermFaults')).toBe(1);
  });

  it('6.7 (be097997a273): the loser invalidates its TLB after -EAGAIN too: no extra fault', () => {
    const { kvm } = lostRelax('6.7');
    expect(counter(kvm, 'lostRaces')).toBe(1);
    expect(counter(kvm, 'spuriousPermFaults')).toBe(0);
  });

  it('relax-skips-tlbi: a vCPU whose TLB keeps the read-only entry faults on it for ever (progress)', () => {
    const w = world({ profile: 'modern', backing: 'anon', bugs: ['relax-skips-tlbi'], ...MODERN });
    const { kvm } = w;
    const v0 = w.vcpus[0];
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 7, false, 0);
    expect(guestAccess(kvm, v0, 7, true, wval(v0))).toBe(ACCESS_LIVELOCK);
    expect(descWritable(s2Lookup(kvm, 7).desc)).toBe(true);
    expect(invariantsOf(liveViolations(kvm))).toEqual(['progress']);
  });
});

describe('the read side of mmu_lock before 6.2', () => {
  for (const profile of ['5.18-rc', '5.18'] as const) {
    it(`${profile}: a write fault on a read-only block while logging ${profile === '5.18-rc' ? 'takes the read side and splits the block with exclusive stores (lock-held, the WARN f587661f21eb added)' : 'takes the write side (f587661f21eb): no report'}`, () => {
      const { w, kvm } = thpWorld(profile);
      const v0 = w.vcpus[0];
      guestAccess(kvm, v0, 5, true, wval(v0));
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, true, wval(v0));
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
      const invs = invariantsOf(liveViolations(kvm));
      if (profile === '5.18-rc') expect(invs).toContain('lock-held');
      else expect(invs).toEqual([]);
    });
  }

  it('5.18: a write-permission fault on a page while logging takes the read side and relaxes the entry in place', () => {
    const w = world({ profile: '5.18', backing: 'anon', ...MODERN });
    const v0 = w.vcpus[0];
    kvmEnableDirtyLogging(w.kvm, w.migrator, RAM_SLOT);
    guestAccess(w.kvm, v0, 7, false, 0);
    guestAccess(w.kvm, v0, 7, true, wval(v0));
    expect(counter(w.kvm, 'readSideFaults')).toBe(1);
    expect(counter(w.kvm, 'relaxes')).toBe(1);
    expect(liveViolations(w.kvm)).toEqual([]);
  });
});

describe('a window nobody named: a permission fault handled after its granule changed', () => {
  /**
   * A vCPU takes a write-permission fault on a 4 KiB entry (the fault
   * granule of its ESR is a page) while logging; before the fault is
   * handled, logging goes off, another fault maps the 2 MiB block back over
   * the PTE table, and logging comes on again (the block is write-protected,
   * not split). The handler then relaxes "the entry" at the fault address:
   * kvm_pgtable_stage2_relax_perms() walks to the leaf whatever its level,
   * and makes the block writable while logging. Discussed in the review of
   * f587661f21eb ("a stage-2 fault raced with a map operation that collapsed
   * the faulted address into a larger block mapping"), not handled there.
   */
  const cases = [
    { profile: 'fixed' as ProfileName, fixes: [] as string[], window: false, why: 'the 2014 fault path maps a page whatever the fault granule: no writable block' },
    { profile: '6.2' as ProfileName, fixes: [], window: true, why: 'the stale-granule relax leaves a writable block while logging (no-block-while-logging)' },
    { profile: 'modern' as ProfileName, fixes: [], window: true, why: 'the same on the newest profile' },
    { profile: 'modern' as ProfileName, fixes: ['relax-checks-granule'], window: false, why: 'with the candidate fix --fix relax-checks-granule the relax refuses the block (-EAGAIN): no writable block' },
  ];
  for (const c of cases) {
    it(`${c.profile}${c.fixes.length ? ` --fix ${c.fixes.join(',')}` : ''}: ${c.why}`, () => {
      const w = world({ profile: c.profile, backing: 'thp', fixes: c.fixes, ...(c.profile === 'fixed' ? {} : MODERN) });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, false, 0); // a 4 KiB read-only entry under a PTE table
      kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v1, 9, true, wval(v1)); // the block comes back
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
      // v0's write-permission fault, taken on the 4 KiB entry, handled now
      kvmHandleGuestAbort(kvm, v0, 5, true, true, LEVEL_PTE);
      const v = checkNoBlockWhileLogging(kvm);
      if (c.window) expect(invariantsOf(v)).toEqual(['no-block-while-logging']);
      else expect(v).toEqual([]);
      // The access itself completes afterwards (with the fix: a new fault on the block splits it).
      guestAccess(kvm, v0, 5, true, wval(v0));
      if (!c.window) expect(checkNoBlockWhileLogging(kvm)).toEqual([]);
    });
  }
});

describe('the lock kind follows the profile', () => {
  it('the arm64 profiles from 5.18 take an rwlock, the 2014 line a ticket spinlock; --lock overrides and the report says so', () => {
    expect(parseRunArgs(['--profile', '6.2']).lock).toBe('rwlock');
    expect(parseRunArgs(['--profile', 'modern']).lock).toBe('rwlock');
    expect(parseRunArgs(['--profile', '5.18-rc']).lock).toBe('rwlock');
    expect(parseRunArgs(['--profile', 'fixed']).lock).toBe('ticket');
    expect(parseRunArgs(['--profile', 'fixed']).lockOverride).toBeNull();
    expect(parseRunArgs(['--profile', '6.2']).lockOverride).toBeNull();
    expect(parseRunArgs(['--profile', '6.2', '--lock', 'ticket']).lockOverride).toMatch(/--lock ticket overrides profile 6.2's mmu_lock, which is an rwlock/);
    expect(parseRunArgs(['--profile', 'fixed', '--lock', 'rwlock']).lockOverride).toMatch(/overrides profile fixed's mmu_lock, which is a spinlock/);
  });
});
