/**
 * Dirty logging at the memslot level: turning it on (publish, SRCU grace
 * period, write-protect, flush), harvesting (KVM_GET_DIRTY_LOG) and turning
 * it off (docs/kernel-notes.md). One test per rule.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkNoBlockWhileLogging, checkQuiescent, liveViolations } from '../../src/check/invariants.js';
import {
  KVM_MEM_LOG_DIRTY_PAGES,
  LOG_DISABLING,
  LOG_ENABLING,
  LOG_OFF,
  LOG_ON,
  SLOT_HAS_DIRTY_BITMAP,
  SLOTW,
  kvmDisableDirtyLogging,
  kvmEnableDirtyLogging,
  kvmGetDirtyLog,
  slotFlags,
  slotWord,
} from '../../src/kvm/memslot.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { userMemAbort } from '../../src/kvm/mmu.js';
import { srcuReadLock, srcuReadUnlock } from '../../src/sync/srcu.js';
import { copyDirtyPages, compareDestination } from '../../src/check/migration.js';
import { LEVEL_PMD, LEVEL_PTE, descOa, descValid, descWritable } from '../../src/arch/stage2.js';
import { RAM_SLOT } from '../../src/vm.js';
import {
  PROFILES,
  counter,
  dirtyGfns,
  newSnapshot,
  scripted,
  snapshotGfns,
  tlbBlock,
  tlbCount,
  tlbPage,
  traceHead,
  traceSince,
  world,
  wval,
} from './support.js';

describe('logging on', () => {
  for (const profile of PROFILES) {
    it(`${profile}: turning logging on publishes the slot, write-protects every present block and PTE of it, then flushes every vCPU's TLB`, () => {
      const w = world({ profile, backing: 'mixed' }); // regions: THP, anon, hugetlb, THP; then a device slot
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      const pages = [5, 600, 1100];
      for (const gfn of pages) guestAccess(kvm, v0, gfn, true, wval(v0));
      for (const gfn of pages) guestAccess(kvm, v1, gfn + 1, false, 0);
      const before = pages.map((gfn) => s2Lookup(kvm, gfn));
      expect(before.map((r) => r.level)).toEqual([LEVEL_PMD, LEVEL_PTE, LEVEL_PMD]);
      expect(before.every((r) => descWritable(r.desc))).toBe(true);
      expect(tlbCount(kvm, 0)).toBeGreaterThan(0);
      expect(tlbCount(kvm, 1)).toBeGreaterThan(0);
      const mark = traceHead(kvm, w.migrator.id);

      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);

      const after = pages.map((gfn) => s2Lookup(kvm, gfn));
      expect(after.map((r) => r.level)).toEqual([LEVEL_PMD, LEVEL_PTE, LEVEL_PMD]);
      expect(after.map((r) => descWritable(r.desc))).toEqual([false, false, false]);
      expect(after.map((r) => descOa(r.desc))).toEqual(before.map((r) => descOa(r.desc)));
      expect(tlbCount(kvm, 0)).toBe(0);
      expect(tlbCount(kvm, 1)).toBe(0);
      expect(traceSince(kvm, w.migrator.id, mark).map((e) => e.ev)).toEqual(['log.on', 'wp', 'flush.all']);
      expect(Atomics.load(kvm.m, slotWord(kvm, RAM_SLOT, SLOTW.LOG_STATE))).toBe(LOG_ON);
      expect(slotFlags(kvm, RAM_SLOT) & (KVM_MEM_LOG_DIRTY_PAGES | SLOT_HAS_DIRTY_BITMAP)).toBe(KVM_MEM_LOG_DIRTY_PAGES | SLOT_HAS_DIRTY_BITMAP);
      expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    });
  }

  for (const bug of [null, 'wp-before-grace'] as const) {
    const name = bug
      ? '(bug wp-before-grace) logging on that write-protects before the SRCU grace period leaves the writable block a fault that read the old slot installed'
      : 'v15: logging on publishes the slot, waits for the SRCU grace period, then write-protects: a fault that read the old slot cannot leave a writable block';
    it(name, () => {
      const w = world({ profile: 'v15', backing: 'thp', bugs: bug ? [bug] : [] });
      const { kvm } = w;
      const [v0] = w.vcpus;
      // vCPU0's fault entered its SRCU read section and read the slot before the publish.
      srcuReadLock(kvm, v0);
      const oldFlags = slotFlags(kvm, RAM_SLOT);
      const { actor: migrator, sched } = scripted(kvm, w.migrator.id);
      let atWait: { published: boolean; state: number; mapped: number } | null = null;
      sched.onWait = (wr) => {
        expect(wr.index).toBe(kvm.layout.srcuReaders + v0.id);
        atWait = {
          published: (slotFlags(kvm, RAM_SLOT) & SLOT_HAS_DIRTY_BITMAP) !== 0,
          state: Atomics.load(kvm.m, slotWord(kvm, RAM_SLOT, SLOTW.LOG_STATE)),
          mapped: s2Lookup(kvm, 5).level,
        };
        // The old-slot fault finishes while the migrator waits: not logging, THP -> a writable block.
        expect(userMemAbort(kvm, v0, 5, true, false, RAM_SLOT, oldFlags)).toBe(0);
        srcuReadUnlock(kvm, v0);
      };

      kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);

      expect(sched.waits.map((x) => x.site)).toEqual(['srcu.sync']);
      expect(atWait).toEqual({ published: true, state: LOG_ENABLING, mapped: 0 });
      const r = s2Lookup(kvm, 5);
      expect(r.level).toBe(LEVEL_PMD);
      expect(descWritable(r.desc)).toBe(bug !== null);
      expect(checkNoBlockWhileLogging(kvm).map((v) => v.gfn)).toEqual(bug ? [0] : []);
    });
  }
});

describe('harvest (KVM_GET_DIRTY_LOG)', () => {
  for (const profile of PROFILES) {
    it(`${profile}: harvest returns and clears the set bits, write-protects exactly the dirty span of each word, and flushes the TLBs: the next write faults and is dirty again`, () => {
      const w = world({ profile, backing: 'anon' });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      for (const gfn of [3, 5, 40]) guestAccess(kvm, v0, gfn, true, wval(v0));
      for (const gfn of [3, 5, 40]) guestAccess(kvm, v1, gfn, false, 0);
      expect(dirtyGfns(kvm)).toEqual([3, 5, 40]);
      expect(descWritable(tlbPage(kvm, 0, 3) ?? 0)).toBe(true);
      const mark = traceHead(kvm, w.migrator.id);
      const snap = newSnapshot(kvm);

      expect(kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, snap)).toBe(3);

      expect(snapshotGfns(kvm, snap)).toEqual([3, 5, 40]);
      expect(dirtyGfns(kvm)).toEqual([]);
      const events = traceSince(kvm, w.migrator.id, mark);
      expect(events.filter((e) => e.ev === 'wp').map((e) => [e.a, e.a + e.b])).toEqual([
        [3, 6],
        [40, 41],
      ]);
      expect(events.map((e) => e.ev).filter((ev) => ev !== 'wp')).toEqual(['flush.all', 'harvest']);
      for (const gfn of [3, 5, 40]) {
        const r = s2Lookup(kvm, gfn);
        expect(descValid(r.desc) && !descWritable(r.desc)).toBe(true);
      }
      expect(tlbCount(kvm, 0)).toBe(0);
      expect(tlbCount(kvm, 1)).toBe(0);

      const faults = counter(kvm, 'faults');
      guestAccess(kvm, v0, 3, true, wval(v0));
      expect(counter(kvm, 'faults')).toBe(faults + 1);
      expect(dirtyGfns(kvm)).toEqual([3]);
      expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    });
  }

  it('v14: harvest write-protects the whole span from the lowest to the highest dirty bit of a word, clean pages inside it too, and nothing outside it', () => {
    const w = world({ profile: 'v14', backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    // v14 read faults map writable without marking dirty: 4 is inside the span, 10 outside
    for (const gfn of [4, 10]) guestAccess(kvm, v0, gfn, false, 0);
    for (const gfn of [3, 5]) guestAccess(kvm, v0, gfn, true, wval(v0));
    expect([3, 4, 5, 10].map((g) => descWritable(s2Lookup(kvm, g).desc))).toEqual([true, true, true, true]);
    expect(dirtyGfns(kvm)).toEqual([3, 5]);

    kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, newSnapshot(kvm));

    expect([3, 4, 5, 10].map((g) => descWritable(s2Lookup(kvm, g).desc))).toEqual([false, false, false, true]);
  });

  for (const profile of PROFILES) {
    it(`${profile}: a write through a stale writable TLB entry after the write-protect but before the flush lands in a page of the same snapshot`, () => {
      const w = world({ profile, backing: 'anon' });
      const { kvm } = w;
      const [v0] = w.vcpus;
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, true, wval(v0));
      const { actor: migrator, sched } = scripted(kvm, w.migrator.id);
      const late = wval(v0);
      let faultsDuringStaleWrite = -1;
      sched.at('tlb.flush', () => {
        expect(descWritable(s2Lookup(kvm, 5).desc)).toBe(false); // already write-protected
        expect(descWritable(tlbPage(kvm, 0, 5) ?? 0)).toBe(true); // not yet flushed
        const faults = counter(kvm, 'faults');
        guestAccess(kvm, v0, 5, true, late);
        faultsDuringStaleWrite = counter(kvm, 'faults') - faults;
      });
      const snap = newSnapshot(kvm);

      kvmGetDirtyLog(kvm, migrator, RAM_SLOT, snap);

      expect(sched.pending()).toEqual([]);
      expect(faultsDuringStaleWrite).toBe(0);
      expect(snapshotGfns(kvm, snap)).toEqual([5]);
      copyDirtyPages(kvm, migrator, RAM_SLOT, snap);
      expect(Atomics.load(kvm.m, kvm.layout.dest + 5)).toBe(late);
      expect(compareDestination(kvm, migrator, RAM_SLOT).mismatches).toBe(0);
      expect(tlbPage(kvm, 0, 5)).toBeNull();
    });
  }
});

describe('logging off', () => {
  for (const profile of PROFILES) {
    it(`${profile}: after logging is cancelled a fault on an empty PMD of a THP region maps a block again, and the PTEs made while logging stay (nothing is remapped eagerly)`, () => {
      const w = world({ profile, backing: 'thp' });
      const { kvm } = w;
      const [v0] = w.vcpus;
      guestAccess(kvm, v0, 5, true, wval(v0));
      kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
      guestAccess(kvm, v0, 5, true, wval(v0));
      guestAccess(kvm, v0, 600, true, wval(v0));
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
      expect(s2Lookup(kvm, 600).level).toBe(LEVEL_PTE);
      const maps = counter(kvm, 'pteMaps') + counter(kvm, 'blockMaps');

      kvmDisableDirtyLogging(kvm, w.migrator, RAM_SLOT);

      expect(counter(kvm, 'pteMaps') + counter(kvm, 'blockMaps')).toBe(maps);
      expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
      expect(s2Lookup(kvm, 600).level).toBe(LEVEL_PTE);
      expect(s2Lookup(kvm, 1100).level).toBe(0);
      guestAccess(kvm, v0, 1100, true, wval(v0));
      const r = s2Lookup(kvm, 1100);
      expect(r.level).toBe(LEVEL_PMD);
      expect(descWritable(r.desc)).toBe(true);
      expect(tlbBlock(kvm, 0, 1100)).not.toBeNull();
      expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
    });
  }

  it('logging off publishes the slot without its bitmap, then waits for the SRCU grace period; logging on again starts from an empty bitmap', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(dirtyGfns(kvm)).toEqual([5]);
    srcuReadLock(kvm, v0);
    const { actor: migrator, sched } = scripted(kvm, w.migrator.id);
    let atWait: { bitmap: boolean; state: number } | null = null;
    sched.onWait = () => {
      atWait = {
        bitmap: (slotFlags(kvm, RAM_SLOT) & SLOT_HAS_DIRTY_BITMAP) !== 0,
        state: Atomics.load(kvm.m, slotWord(kvm, RAM_SLOT, SLOTW.LOG_STATE)),
      };
      srcuReadUnlock(kvm, v0);
    };

    kvmDisableDirtyLogging(kvm, migrator, RAM_SLOT);

    expect(sched.waits.map((x) => [x.site, x.index])).toEqual([['srcu.sync', kvm.layout.srcuReaders + v0.id]]);
    expect(atWait).toEqual({ bitmap: false, state: LOG_DISABLING });
    expect(Atomics.load(kvm.m, slotWord(kvm, RAM_SLOT, SLOTW.LOG_STATE))).toBe(LOG_OFF);
    guestAccess(kvm, v0, 6, true, wval(v0)); // not logged: no bitmap
    kvmEnableDirtyLogging(kvm, w.migrator, RAM_SLOT);
    expect(dirtyGfns(kvm)).toEqual([]);
  });
});
