/**
 * The zoo's defect-class mutants, each driven deterministically through the
 * interleaving that exposes it, and caught by the invariant it names; the
 * same script on the `fixed` profile stays clean. (How often a randomized
 * run reaches that interleaving is measured by the zoo, not here.)
 */
import { describe, it, expect } from 'vitest';
import { ACCESS_LIVELOCK, guestAccess } from '../../src/kvm/vcpu.js';
import { FAULT_RETRY, kvmHandleGuestAbort } from '../../src/kvm/mmu.js';
import { checkFrameConservation, checkFramesMappedAreLive, checkQuiescent, liveViolations } from '../../src/check/invariants.js';
import { copyAllPages, copyDirtyPages, compareDestination } from '../../src/check/migration.js';
import { kvmMmuNotifierInvalidateRangeEnd, kvmMmuNotifierInvalidateRangeStart } from '../../src/kvm/notifier.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../../src/kvm/memslot.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { zapRange } from '../../src/mm/hostops.js';
import { HPTE_FRAME_MASK } from '../../src/mm/hostpt.js';
import { descOa, descWritable } from '../../src/arch/stage2.js';
import { FRAMES_PER_GROUP } from '../../src/shm/layout.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { invariantsOf, newSnapshot, scripted, world, wval } from './support.js';

function hostFrame(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn) & HPTE_FRAME_MASK;
}
function scratch(): Int32Array {
  return new Int32Array(2 * FRAMES_PER_GROUP);
}

describe('retry-leaks-page (a refcount off by one)', () => {
  for (const bug of [[], ['retry-leaks-page']]) {
    it(`${bug.length ? 'with' : 'without'} the bug: a fault told to retry ${bug.length ? 'keeps its page reference: frame-conservation names the pinned frame' : 'drops its page reference'}`, () => {
      const w = world({ backing: 'anon', bugs: bug });
      const { kvm, host } = w;
      const { actor: v0, sched } = scripted(kvm, 0);
      const gfn = 40;
      // an invalidation elsewhere completes between the fault's sequence snapshot and mmu_lock
      sched.at('fault.gfn_to_pfn', () => {
        kvmMmuNotifierInvalidateRangeStart(kvm, host, 900, 1);
        kvmMmuNotifierInvalidateRangeEnd(kvm, host, 900, 1);
      });

      expect(kvmHandleGuestAbort(kvm, v0, gfn, true, false)).toBe(0);
      expect(v0.faultResult).toBe(FAULT_RETRY);

      const f = hostFrame(kvm, gfn);
      const vs = checkFrameConservation(kvm).map((v) => v.message);
      if (bug.length) {
        expect(vs).toEqual([
          `frame ${f} has refcount 2 but the host maps it 1 time (at gfn ${gfn}): 1 reference nothing explains (a leaked get_page: the frame is pinned for ever, page migration and THP collapse refuse it)`,
        ]);
      } else {
        expect(vs).toEqual([]);
      }
    });
  }
});

describe('seq-after-lookup (two steps in the wrong order)', () => {
  for (const bug of [[], ['seq-after-lookup']]) {
    it(`${bug.length ? 'with' : 'without'} the bug: a zap that completes between the host lookup and mmu_lock ${bug.length ? 'goes unseen: stage 2 maps the freed frame' : 'makes the fault retry'}`, () => {
      const w = world({ backing: 'anon', bugs: bug });
      const { kvm, host } = w;
      const { actor: v0, sched } = scripted(kvm, 0);
      const gfn = 50;
      const old = hostFrame(kvm, gfn);
      sched.at('fault.gfn_to_pfn', () => {
        expect(zapRange(kvm, host, gfn, 1, scratch())).toBe(true);
      });

      kvmHandleGuestAbort(kvm, v0, gfn, true, false);

      if (bug.length) {
        expect(v0.faultResult).toBe(0);
        expect(descOa(s2Lookup(kvm, gfn).desc)).toBe(old);
        expect(invariantsOf(checkFramesMappedAreLive(kvm))).toEqual(['frame-use-after-free']);
        expect(checkFrameConservation(kvm).map((v) => v.message)).toContain(`stage 2 maps gfn ${gfn} to frame ${old}, which is on the free lists`);
      } else {
        expect(v0.faultResult).toBe(FAULT_RETRY);
        expect(s2Lookup(kvm, gfn).level).toBe(0);
        expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
      }
    });
  }
});

describe('count-after-unlock (a lock released one step early)', () => {
  for (const bug of [[], ['count-after-unlock']]) {
    it(`${bug.length ? 'with' : 'without'} the bug: a fault that takes mmu_lock right after invalidate_range_start() released it ${bug.length ? 'maps the page the zap then frees' : 'sees the count and retries'}`, () => {
      const w = world({ backing: 'anon', bugs: bug });
      const { kvm } = w;
      const [v0] = w.vcpus;
      const { actor: host, sched } = scripted(kvm, kvm.layout.hostActor);
      const gfn = 60;
      const old = hostFrame(kvm, gfn);
      let ret = -1;
      // the whole fault runs in the one step after the notifier's unlock
      sched.at('notifier.start', () => {
        sched.at('lock.release', () => {
          ret = kvmHandleGuestAbort(kvm, v0, gfn, true, false);
        });
      });

      expect(zapRange(kvm, host, gfn, 1, scratch())).toBe(true);

      expect(ret).toBe(0);
      expect(sched.pending()).toEqual([]);
      if (bug.length) {
        expect(v0.faultResult).toBe(0);
        expect(descOa(s2Lookup(kvm, gfn).desc)).toBe(old);
        expect(invariantsOf(checkFramesMappedAreLive(kvm))).toEqual(['frame-use-after-free']);
        expect(checkFrameConservation(kvm).map((v) => v.message)).toContain(`stage 2 maps gfn ${gfn} to frame ${old}, which is on the free lists`);
      } else {
        expect(v0.faultResult).toBe(FAULT_RETRY);
        expect(s2Lookup(kvm, gfn).level).toBe(0);
        expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
      }
    });
  }
});

describe('harvest-wp-short (an off-by-one at a bitmap-word end)', () => {
  for (const bug of [[], ['harvest-wp-short']]) {
    it(`${bug.length ? 'with' : 'without'} the bug: after a harvest the highest dirty page of a word is ${bug.length ? 'still writable, and its next write is lost to the migration (migration-equal)' : 'write-protected, and its next write is logged'}`, () => {
      const w = world({ backing: 'anon', bugs: bug });
      const { kvm, migrator } = w;
      const [v0] = w.vcpus;
      kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
      copyAllPages(kvm, migrator, RAM_SLOT);
      guestAccess(kvm, v0, 34, true, wval(v0)); // bitmap word 1: bits 2 and 6
      guestAccess(kvm, v0, 38, true, wval(v0));
      const snap = newSnapshot(kvm);
      expect(kvmGetDirtyLog(kvm, migrator, RAM_SLOT, snap)).toBe(2);
      copyDirtyPages(kvm, migrator, RAM_SLOT, snap);

      expect(descWritable(s2Lookup(kvm, 38).desc)).toBe(bug.length > 0);
      guestAccess(kvm, v0, 38, true, wval(v0));
      kvmGetDirtyLog(kvm, migrator, RAM_SLOT, snap);
      copyDirtyPages(kvm, migrator, RAM_SLOT, snap);

      const res = compareDestination(kvm, migrator, RAM_SLOT);
      expect(res.bad.map((b) => b[0])).toEqual(bug.length ? [38] : []);
    });
  }
});

describe('write-fault-maps-readonly (an inverted condition)', () => {
  it('while logging, a write fault maps the page read-only for ever: the access is given up as a livelock (progress)', () => {
    const w = world({ backing: 'anon', bugs: ['write-fault-maps-readonly'] });
    const { kvm, migrator } = w;
    const [v0] = w.vcpus;
    expect(guestAccess(kvm, v0, 70, true, wval(v0))).not.toBe(ACCESS_LIVELOCK); // not logging: fine
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);

    expect(guestAccess(kvm, v0, 70, true, wval(v0))).toBe(ACCESS_LIVELOCK);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor, v.gfn])).toEqual([['progress', 'vcpu0', 70]]);
    expect(vs[0].message).toContain('a permission fault: each fault returns, but the entry stays read-only');
  });
});
