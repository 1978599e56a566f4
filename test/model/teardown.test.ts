/**
 * Lock drops inside long stage-2 walks (cond_resched_lock), the 4.12
 * re-check of kvm->arch.pgd after them, the `table-use-after-free`
 * invariant, memslot delete and VM teardown (docs/kernel-notes.md,
 * "Lock drops inside walks"; 0c428a6a9256, 8b3405e345b5, 293f293637b5).
 *
 * Interleavings are scripted: an action registered at a scheduling point of
 * one actor runs another actor's code there, as if the scheduler switched.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkQuiescent, checkTableConservation, liveViolations } from '../../src/check/invariants.js';
import {
  KVM_PHYS_PAGES,
  TABLE_CACHED,
  TABLE_FREE,
  condReschedLock,
  freeTable,
  kvmFreeStage2Pgd,
  kvmPgd,
  mmuTopupMemoryCache,
  putTablePage,
  s2Lookup,
  stage2WpRange,
  tableOf,
  unmapStage2Range,
} from '../../src/kvm/pgtable.js';
import { kvmHandleGuestAbort } from '../../src/kvm/mmu.js';
import { kvmMmuNotifierInvalidateRangeEnd, kvmMmuNotifierInvalidateRangeStart } from '../../src/kvm/notifier.js';
import { gfnToMemslot, kvmCreateMemslot, kvmDeleteMemslot } from '../../src/kvm/memslot.js';
import { kvmArchFlushShadowAll, kvmCreateVmLife, kvmDestroyVm, mmuNotifierReleaseAtExit } from '../../src/kvm/vmlife.js';
import { LEVEL_PTE, descIsTable, descOa, descWritable } from '../../src/arch/stage2.js';
import { CTRL, KVM_NR_MEM_OBJS } from '../../src/shm/layout.js';
import { LOCKW } from '../../src/sync/spinlock.js';
import { LS } from '../../src/sync/locksites.js';
import { EFAULT } from '../../src/kvm/pgtable.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import type { ProfileName } from '../../src/config.js';
import { MiB, counter, scripted, tablesAvailable, world, wval } from './support.js';
import { parseRunArgs, replayCommand, toModelConfig } from '../../stress/options.js';
import { ConfigError } from '../../src/config.js';

function tableState(kvm: Kvm, t: number): number {
  return Atomics.load(kvm.m, kvm.layout.tableState + t);
}

/** The PTE table that maps gfn. */
function pteTableOf(kvm: Kvm, gfn: number): number {
  const r = s2Lookup(kvm, gfn);
  expect(r.level).toBe(LEVEL_PTE);
  return tableOf(kvm, r.entry);
}

/** Another thread frees table page t under a walk (its last reference dropped). */
function freeUnderTheWalk(kvm: Kvm, t: number, by: import('../../src/sync/actor.js').Actor): void {
  Atomics.store(kvm.m, kvm.layout.tableRef + t, 1);
  freeTable(kvm, by, t);
}

function uaf(kvm: Kvm): string[] {
  return liveViolations(kvm)
    .filter((v) => v.invariant === 'table-use-after-free')
    .map((v) => v.message);
}

describe('cond_resched_lock: long walks drop mmu_lock', () => {
  it('stage2_wp_range releases mmu_lock at the top of a step, another actor maps a page meanwhile, and the walk retakes the lock and protects that page too', () => {
    const w = world({ backing: 'anon', profile: '4.12', condReschedEvery: 1 });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    for (const gfn of [0, 2, 4]) guestAccess(kvm, v0, gfn, true, wval(v0));
    const { actor: mig, sched } = scripted(kvm, w.migrator.id);
    let ownerAtDrop = -2;
    sched.at('pgtable.resched', () => {
      ownerAtDrop = kvm.mmuLock.owner();
      guestAccess(kvm, v1, 7, true, wval(v1)); // a write fault: takes mmu_lock, maps gfn 7 writable
    });

    kvm.mmuLock.lock(mig, LS.harvest);
    stage2WpRange(kvm, mig, 0, 16);
    expect(kvm.mmuLock.heldBy(mig)).toBe(true);
    kvm.mmuLock.unlock(mig);

    expect(sched.pending()).toEqual([]);
    expect(ownerAtDrop).toBe(-1);
    expect([0, 2, 4, 7].map((g) => s2Lookup(kvm, g).level)).toEqual([LEVEL_PTE, LEVEL_PTE, LEVEL_PTE, LEVEL_PTE]);
    expect([0, 2, 4, 7].map((g) => descWritable(s2Lookup(kvm, g).desc))).toEqual([false, false, false, false]);
    expect(counter(kvm, 'reschedDrops')).toBe(1);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('uncontended and without need_resched, cond_resched_lock keeps the lock; a waiter in the slow path (spin_needbreak) makes it drop', () => {
    const w = world({ backing: 'anon', lock: 'tas', condReschedEvery: 1 << 30 });
    const { kvm } = w;
    const { actor: mig, sched } = scripted(kvm, w.migrator.id);
    let tookIt = false;
    sched.at('pgtable.resched', () => {
      tookIt = kvm.mmuLock.tryLock(w.host, LS.other);
      if (tookIt) kvm.mmuLock.unlock(w.host);
    });
    kvm.mmuLock.lock(mig, LS.other);
    expect(kvm.mmuLockIsContended()).toBe(false);
    expect(condReschedLock(kvm, mig)).toBe(false);
    expect(sched.pending()).toEqual(['pgtable.resched']);

    const waiters = kvm.layout.mmuLock + LOCKW.WAITERS;
    Atomics.store(kvm.m, waiters, 1); // another CPU spinning for the lock
    expect(kvm.mmuLockIsContended()).toBe(true);
    expect(condReschedLock(kvm, mig)).toBe(true);
    Atomics.store(kvm.m, waiters, 0);
    expect(tookIt).toBe(true);
    expect(kvm.mmuLock.heldBy(mig)).toBe(true);
    kvm.mmuLock.unlock(mig);
  });

  it('a ticket taken behind the holder is contention (next - owner > 1); none is not', () => {
    const w = world({ backing: 'anon', lock: 'ticket' });
    const { kvm } = w;
    kvm.mmuLock.lock(w.migrator, LS.other);
    expect(kvm.mmuLockIsContended()).toBe(false);
    const word = kvm.layout.mmuLock + LOCKW.NEXT;
    Atomics.add(kvm.m, word, 1 << 16); // a waiter's ticket
    expect(kvm.mmuLockIsContended()).toBe(true);
    Atomics.sub(kvm.m, word, 1 << 16);
    expect(kvm.mmuLockIsContended()).toBe(false);
    kvm.mmuLock.unlock(w.migrator);
  });

  const drops: Array<[ProfileName, number, number]> = [
    ['4.7', 0, 4],
    ['4.11', 3, 4],
    ['4.12', 3, 4],
  ];
  for (const [profile, unmapDrops, wpDrops] of drops) {
    it(`${profile}: with a 2 MiB granule over 4 mapped 2 MiB ranges, unmap_stage2_range drops the lock ${unmapDrops} times (between steps), stage2_wp_range ${wpDrops} times (before each)`, () => {
      const w = world({ backing: 'anon', profile, reschedGranule: 2 * MiB, condReschedEvery: 1 });
      const { kvm } = w;
      const [v0] = w.vcpus;
      const gfns = [3, 600, 1100, 1700];
      for (const gfn of gfns) guestAccess(kvm, v0, gfn, true, wval(v0));
      const count = (fn: (a: import('../../src/sync/actor.js').Actor) => void): number => {
        const { actor, sched } = scripted(kvm, w.migrator.id);
        sched.logPoints = true;
        kvm.mmuLock.lock(actor, LS.other);
        fn(actor);
        kvm.mmuLock.unlock(actor);
        return sched.points.filter((p) => p === 'pgtable.resched').length;
      };
      expect(count((a) => stage2WpRange(kvm, a, 0, 2048))).toBe(wpDrops);
      expect(count((a) => unmapStage2Range(kvm, a, 0, 2048))).toBe(unmapDrops);
      expect(gfns.map((g) => s2Lookup(kvm, g).level)).toEqual([0, 0, 0, 0]);
      expect(checkQuiescent(kvm)).toEqual([]);
    });
  }
});

describe('kvm_free_stage2_pgd racing kvm_free_stage2_pgd (the MMU notifier released twice)', () => {
  /**
   * The host-MM actor frees the tables; at its first lock drop the migrator
   * runs kvm_free_stage2_pgd() to the end (tables freed, pgd NULL); then the
   * first walk retakes mmu_lock.
   */
  function race(profile: ProfileName): Kvm {
    const w = world({ backing: 'anon', profile, condReschedEvery: 1 });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    for (const gfn of [5, 600, 1100, 1700]) guestAccess(kvm, v0, gfn, true, wval(v0));
    guestAccess(kvm, v1, 9, false, 0);
    const { actor: host, sched } = scripted(kvm, w.host.id);
    let ownerAtDrop = -2;
    sched.at('pgtable.resched', () => {
      ownerAtDrop = kvm.mmuLock.owner();
      kvmFreeStage2Pgd(kvm, w.migrator);
      expect(kvmPgd(kvm)).toBe(-1);
    });
    kvmFreeStage2Pgd(kvm, host);
    expect(sched.pending()).toEqual([]);
    expect(ownerAtDrop).toBe(-1);
    expect(kvm.mmuLock.owner()).toBe(-1);
    return kvm;
  }

  it('4.12 (0c428a6a9256): the walk re-checks kvm->arch.pgd after retaking the lock and stops; the tables are freed once, nothing leaks', () => {
    const kvm = race('4.12');
    expect(liveViolations(kvm)).toEqual([]);
    expect(kvmPgd(kvm)).toBe(-1);
    expect(tableState(kvm, 0)).toBe(TABLE_FREE);
    expect(checkQuiescent(kvm)).toEqual([]);
  });

  it('4.11: the walk goes on with the root it read and reads an entry of the freed root: table-use-after-free', () => {
    const kvm = race('4.11');
    expect(uaf(kvm)).toEqual([
      'a stage-2 walk read entry 1 of table #0, which was freed since the walk entered it (the page is now free): the walk dropped mmu_lock and another thread freed the tables',
    ]);
    expect(liveViolations(kvm).map((v) => [v.actor, v.table])).toEqual([['hostmm', 0]]);
  });

  it('4.7: unmap_stage2_range never drops the lock, so there is no window (and the release path does not free anyway)', () => {
    const w = world({ backing: 'anon', profile: '4.7', condReschedEvery: 1 });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    const { actor: host, sched } = scripted(kvm, w.host.id);
    sched.logPoints = true;
    kvmArchFlushShadowAll(kvm, host);
    expect(kvmPgd(kvm)).toBe(0);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
    kvmFreeStage2Pgd(kvm, host);
    expect(sched.points).not.toContain('pgtable.resched');
    expect(kvmPgd(kvm)).toBe(-1);
    kvmFreeStage2Pgd(kvm, w.migrator); // the second call sees NULL and returns
    expect(liveViolations(kvm)).toEqual([]);
    expect(checkQuiescent(kvm)).toEqual([]);
  });

  it('before 4.12 a walk that starts after the tables were freed dereferences NULL + index (reported); 4.12 breaks out', () => {
    for (const [profile, expected] of [
      ['4.11', 1],
      ['4.12', 0],
    ] as const) {
      const w = world({ backing: 'anon', profile });
      const { kvm } = w;
      kvmFreeStage2Pgd(kvm, w.host);
      kvm.mmuLock.lock(w.migrator, LS.other);
      unmapStage2Range(kvm, w.migrator, 0, 512);
      kvm.mmuLock.unlock(w.migrator);
      const found = uaf(kvm);
      expect(found.length, profile).toBe(expected);
      if (expected) expect(found[0]).toMatch(/started with kvm->arch.pgd NULL/);
    }
  });
});

describe('table-use-after-free: the pool catches a walk in a freed table page', () => {
  /** Write-protect [0, 16) with a hand-made event at the n-th walk step (1-based). */
  function walkWith(n: number, event: ((kvm: Kvm, w: ReturnType<typeof world>, table: number) => void) | null) {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    for (const gfn of [0, 1, 2, 3]) guestAccess(kvm, v0, gfn, true, wval(v0));
    const t = pteTableOf(kvm, 0);
    const { actor: mig, sched } = scripted(kvm, w.migrator.id);
    for (let i = 1; i < n; i++) sched.at('pgtable.walk', () => {});
    if (event) sched.at('pgtable.walk', () => event(kvm, w, t));
    kvm.mmuLock.lock(mig, LS.other);
    const ok = stage2WpRange(kvm, mig, 0, 16);
    kvm.mmuLock.unlock(mig);
    return { kvm, t, ok };
  }

  it('control: the same walk with nothing freed under it write-protects every page and reports nothing', () => {
    const { kvm, ok } = walkWith(4, null);
    expect(ok).toBe(true);
    expect([0, 1, 2, 3].map((g) => descWritable(s2Lookup(kvm, g).desc))).toEqual([false, false, false, false]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('a PTE table freed while the walk is in it: the next entry read is reported and the walk stops', () => {
    // steps: PGD entry 0, PMD entry 0, PTE 0, then the free before PTE 1 is read
    const { kvm, t, ok } = walkWith(4, (k, w, table) => freeUnderTheWalk(k, table, w.host));
    expect(ok).toBe(false);
    expect(uaf(kvm)).toEqual([
      `a stage-2 walk read entry 1 of table #${t}, which was freed since the walk entered it (the page is now free): the walk dropped mmu_lock and another thread freed the tables`,
    ]);
    expect(liveViolations(kvm)[0].table).toBe(t);
    // stopped: pages 2 and 3 were not touched
    expect(descWritable(s2Lookup(kvm, 0).desc)).toBe(false);
  });

  it('freed and handed out again (to a memory cache) while the walk is in it: caught by the generation, though the page is no longer free', () => {
    const { kvm, t, ok } = walkWith(4, (k, w, table) => {
      freeUnderTheWalk(k, table, w.host);
      expect(mmuTopupMemoryCache(k, w.vcpus[1], 2, KVM_NR_MEM_OBJS)).toBe(0); // the pool is LIFO: the page comes back first
      expect(tableState(k, table)).toBe(TABLE_CACHED);
    });
    expect(ok).toBe(false);
    expect(uaf(kvm)[0]).toMatch(new RegExp(`read entry 1 of table #${t}, which was freed since the walk entered it \\(the page is now in a memory cache: freed and reused\\)`));
  });

  it('a valid entry pointing to a free table page: the walk reports entering freed memory', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 0, true, wval(v0));
    const t = pteTableOf(kvm, 0);
    const pmdTable = descOa(Atomics.load(kvm.m, kvm.layout.tablesBase + 0 * 512 + 0));
    freeUnderTheWalk(kvm, t, w.host);
    kvm.mmuLock.lock(w.migrator, LS.other);
    expect(stage2WpRange(kvm, w.migrator, 0, 16)).toBe(false);
    kvm.mmuLock.unlock(w.migrator);
    expect(uaf(kvm)).toEqual([`a valid entry of table #${pmdTable} points to table #${t}, which is free: the walk enters a freed page`]);
  });

  it('a double free and a put_page on a free table page are reported', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 0, true, wval(v0));
    const t = pteTableOf(kvm, 0);
    freeUnderTheWalk(kvm, t, w.host);
    expect(uaf(kvm)).toEqual([]);
    freeTable(kvm, w.host, t);
    putTablePage(kvm, w.host, t);
    expect(uaf(kvm)).toEqual([
      `table #${t} freed twice (free_pages_exact of a page already freed; now free)`,
      `put_page() on table #${t}, a page freed under the walk (now free)`,
    ]);
  });
});

describe('memslot delete (kvm_arch_flush_shadow_memslot)', () => {
  it('while the slot is invalid faults find no slot (MMIO exit) but the notifiers still unmap it; the flush unmaps the slot; re-created, faults map it again', () => {
    const w = world({ backing: 'anon', profile: '4.12' });
    const { kvm } = w;
    const [v0, v1] = w.vcpus;
    for (const gfn of [5, 600, 1100]) guestAccess(kvm, v0, gfn, true, wval(v0));
    const { actor: mig, sched } = scripted(kvm, w.migrator.id);
    let seen: unknown = null;
    sched.at('srcu.sync', () => {
      // the slot is published KVM_MEMSLOT_INVALID, the grace period starts
      seen = {
        slot: gfnToMemslot(kvm, 600),
        fault: kvmHandleGuestAbort(kvm, v1, 601, true, false),
        levelBefore: s2Lookup(kvm, 1100).level,
      };
      kvmMmuNotifierInvalidateRangeStart(kvm, w.host, 1100, 1);
      kvmMmuNotifierInvalidateRangeEnd(kvm, w.host, 1100, 1);
    });
    const available = tablesAvailable(kvm);
    kvmDeleteMemslot(kvm, mig, RAM_SLOT);
    expect(seen).toEqual({ slot: -1, fault: EFAULT, levelBefore: LEVEL_PTE });
    expect([5, 600, 601, 1100].map((g) => s2Lookup(kvm, g).level)).toEqual([0, 0, 0, 0]);
    expect(descIsTable(Atomics.load(kvm.m, kvm.layout.tablesBase))).toBe(false); // the PMD table went too
    expect(tablesAvailable(kvm)).toBe(available + 4);
    expect(counter(kvm, 'memslotDeletes')).toBe(1);
    expect(checkQuiescent(kvm)).toEqual([]);

    kvmCreateMemslot(kvm, w.migrator, RAM_SLOT);
    expect(gfnToMemslot(kvm, 600)).toBe(RAM_SLOT);
    guestAccess(kvm, v0, 600, true, wval(v0));
    expect(s2Lookup(kvm, 600).level).toBe(LEVEL_PTE);
    expect(liveViolations(kvm)).toEqual([]);
    expect(checkQuiescent(kvm)).toEqual([]);
  });
});

describe('VM teardown and the next VM', () => {
  for (const profile of ['4.7', '4.11', '4.12', '5.1'] as const) {
    it(`${profile}: exit_mmap's release, then kvm_destroy_vm: every table and memory cache page back in the pool, pgd NULL; the next VM gets a new root and runs clean`, () => {
      const w = world({ backing: 'thp', profile });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      for (const gfn of [5, 600, 1100, 1700]) guestAccess(kvm, v0, gfn, true, wval(v0));
      guestAccess(kvm, v1, 9, false, 0);
      expect(tablesAvailable(kvm)).toBeLessThan(kvm.layout.tables - 1);

      Atomics.store(kvm.m, CTRL.MM_RELEASING, 1);
      mmuNotifierReleaseAtExit(kvm, w.host);
      // 4.11 on, the release freed the tables; before, they wait for kvm_destroy_vm
      expect(kvmPgd(kvm)).toBe(profile === '4.7' ? 0 : -1);
      const slots = kvmDestroyVm(kvm, w.migrator);

      expect(slots).toEqual([RAM_SLOT]);
      expect(kvmPgd(kvm)).toBe(-1);
      expect(Atomics.load(kvm.m, CTRL.TABLE_FREE_TOP)).toBe(kvm.layout.tables); // every page free, caches included
      expect(counter(kvm, 'teardowns')).toBe(1);
      expect(checkQuiescent(kvm)).toEqual([]);

      expect(kvmCreateVmLife(kvm, w.migrator, slots)).toBe(true);
      const root = kvmPgd(kvm);
      expect(root).toBeGreaterThanOrEqual(0);
      for (const gfn of [5, 1100]) guestAccess(kvm, v0, gfn, true, wval(v0));
      guestAccess(kvm, v1, 9, false, 0);
      expect(descOa(Atomics.load(kvm.m, kvm.layout.tablesBase + root * 512)) > 0).toBe(true);
      expect(liveViolations(kvm)).toEqual([]);
      expect(checkQuiescent(kvm)).toEqual([]);

      // the checks follow the new root: a table unlinked from it is a leak
      const pmdTable = descOa(Atomics.load(kvm.m, kvm.layout.tablesBase + root * 512));
      Atomics.store(kvm.m, kvm.layout.tablesBase + root * 512, 0);
      expect(checkTableConservation(kvm).some((v) => v.table === pmdTable && /not reachable from the root: leaked/.test(v.message))).toBe(true);
    });
  }
  it('KVM_PHYS_PAGES is the 512 GiB the root spans', () => {
    expect(KVM_PHYS_PAGES * 4096).toBe(512 * 1024 * MiB);
  });
});

describe('--resched-granule', () => {
  it('takes a power of two from 2M to 1G, goes into the model configuration and the rerun command; anything else is a usage error naming the flag', () => {
    const o = parseRunArgs(['--resched-granule', '2M', '--seed', '1']);
    expect(toModelConfig(o).reschedGranule).toBe(2 * MiB);
    expect(replayCommand(o)).toContain('--resched-granule 2M');
    expect(replayCommand(parseRunArgs(['--seed', '1']))).not.toContain('--resched-granule');
    expect(toModelConfig(parseRunArgs(['--mode', 'sim', '--seed', '1'])).condReschedEvery).toBe(1);
    for (const bad of ['3M', '1M', '2G', 'lots']) {
      let err: unknown = null;
      try {
        parseRunArgs(['--resched-granule', bad]);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).setting).toBe('--resched-granule');
      expect((err as Error).message).toMatch(/--resched-granule (must be a power of two from 2M to 1G|takes a size)/);
    }
  });
});
