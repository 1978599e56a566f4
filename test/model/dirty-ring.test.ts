/**
 * The dirty ring (`--dirty-log ring`, arm64 from 6.2): push, collect and
 * reset in order; the soft-full exit and the wait for a reset; the reset's
 * write-protect under the write side of mmu_lock; writes without a running
 * vCPU in the backup bitmap, collected at stop-and-copy; and each ring
 * defect of the zoo caught by its invariant. Single-threaded and scripted
 * (ScriptSched), plus one short sim run.
 */
import { describe, it, expect } from 'vitest';
import { ACCESS_RING_FULL, guestAccess } from '../../src/kvm/vcpu.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../../src/kvm/memslot.js';
import {
  dirtyRingCollectAll,
  dirtyRingFullWait,
  dirtyRingReap,
  itsTableGfn,
  kvmDirtyRingSoftFull,
  kvmDirtyRingSoftLimit,
  kvmDirtyRingUsed,
  kvmVmIoctlResetDirtyPages,
  kvmWriteGuestPage,
  ringBase,
  ringEntry,
  RE,
  vgicItsSaveTables,
} from '../../src/kvm/dirtyring.js';
import { migrateOnceRing } from '../../src/actors/migrator.js';
import { copyAllPages, copyDirtyPages, compareDestination } from '../../src/check/migration.js';
import { liveViolations } from '../../src/check/invariants.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { descValid, descWritable } from '../../src/arch/stage2.js';
import { CTRL, KVM_DIRTY_GFN_F_DIRTY, KVM_DIRTY_GFN_F_RESET, RING } from '../../src/shm/layout.js';
import { LOCKW } from '../../src/sync/spinlock.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { ActorParams } from '../../src/actors/params.js';
import { parseRunArgs } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import { counter, invariantsOf, scripted, snapshotGfns, world, wval } from './support.js';

/** A 6.10 anon world logging with rings (256 entries: soft limit 192). */
function ringWorld(bugs: string[] = []) {
  const w = world({ profile: '6.10', backing: 'anon', lock: 'rwlock', dirtyLog: 'ring', bugs });
  kvmEnableDirtyLogging(w.kvm, w.migrator, RAM_SLOT);
  return w;
}

function entries(kvm: ReturnType<typeof world>['kvm'], v: number): Array<{ flags: number; offset: number }> {
  const b = ringBase(kvm, v);
  const out: Array<{ flags: number; offset: number }> = [];
  for (let i = Atomics.load(kvm.m, b + RING.RESET_INDEX); i !== Atomics.load(kvm.m, b + RING.DIRTY_INDEX); i++) {
    const e = ringEntry(kvm, b, i);
    out.push({ flags: kvm.m[e + RE.FLAGS], offset: kvm.m[e + RE.OFFSET] });
  }
  return out;
}

function writable(kvm: ReturnType<typeof world>['kvm'], gfn: number): boolean {
  const l = s2Lookup(kvm, gfn);
  return descValid(l.desc) && descWritable(l.desc);
}

describe('dirty ring: push, collect, reset', () => {
  it('write faults push {slot, offset} then DIRTY, in order; the collector hands them back RESET; the reset walks them in order, write-protects the pages and the next write faults and is pushed again', () => {
    const w = ringWorld();
    const { kvm } = w;
    const v0 = w.vcpus[0];
    for (const gfn of [5, 6, 40]) guestAccess(kvm, v0, gfn, true, wval(v0));
    expect(entries(kvm, 0)).toEqual([5, 6, 40].map((offset) => ({ flags: KVM_DIRTY_GFN_F_DIRTY, offset })));
    expect(counter(kvm, 'ringPushes')).toBe(3);
    // Writes go to the ring, not the bitmap.
    const snap = new Int32Array(kvm.layout.bitmapWords);
    expect(dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap)).toBe(3);
    expect(snapshotGfns(kvm, snap)).toEqual([5, 6, 40]);
    expect(entries(kvm, 0).map((e) => e.flags)).toEqual([KVM_DIRTY_GFN_F_RESET, KVM_DIRTY_GFN_F_RESET, KVM_DIRTY_GFN_F_RESET]);
    // Collected, not reset: the pages are still writable and the ring still used.
    expect([5, 6, 40].every((g) => writable(kvm, g))).toBe(true);
    expect(kvmDirtyRingUsed(kvm, 0)).toBe(3);
    expect(kvmVmIoctlResetDirtyPages(kvm, w.migrator)).toBe(3);
    expect(kvmDirtyRingUsed(kvm, 0)).toBe(0);
    expect([5, 6, 40].some((g) => writable(kvm, g))).toBe(false);
    const faults = counter(kvm, 'faults');
    guestAccess(kvm, v0, 6, true, wval(v0));
    expect(counter(kvm, 'faults')).toBe(faults + 1);
    expect(entries(kvm, 0)).toEqual([{ flags: KVM_DIRTY_GFN_F_DIRTY, offset: 6 }]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('a collector stops at the first entry not yet published: it sees nothing while a push is between its offset and its flag', () => {
    const w = ringWorld();
    const { kvm } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    const snap = new Int32Array(kvm.layout.bitmapWords);
    let seen = -1;
    sched.at('ring.push', () => (seen = dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap)));
    guestAccess(kvm, v0, 9, true, wval(v0));
    expect(seen).toBe(0);
    expect(dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap)).toBe(1);
    expect(snapshotGfns(kvm, snap)).toEqual([9]);
  });

  it('the reset write-protects under the write side of mmu_lock, and coalesces a run of neighbours into one lock hold', () => {
    const w = ringWorld();
    const { kvm } = w;
    const v0 = w.vcpus[0];
    for (const gfn of [12, 10, 11, 300]) guestAccess(kvm, v0, gfn, true, wval(v0));
    const snap = new Int32Array(kvm.layout.bitmapWords);
    dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap);
    const { actor: mig, sched } = scripted(kvm, kvm.layout.migrator);
    const owners: number[] = [];
    let holds = 0;
    const record = () => owners.push(Atomics.load(kvm.m, kvm.layout.mmuLock + LOCKW.OWNER));
    for (let i = 0; i < 4; i++) sched.at('pgtable.write', record);
    const acquire = () => {
      holds++;
    };
    for (let i = 0; i < 8; i++) sched.at('lock.acquire', acquire);
    expect(kvmVmIoctlResetDirtyPages(kvm, mig)).toBe(4);
    // Every write-protect store by the migrator as the write owner of mmu_lock.
    expect(owners.length).toBe(4);
    expect(owners.every((o) => o === mig.id + 1)).toBe(true);
    // 12, 10, 11 coalesce (backwards then forwards) into one mask; 300 is another.
    // Lock acquisitions: slots_lock, then mmu_lock twice.
    expect(holds).toBe(3);
    expect([10, 11, 12, 300].some((g) => writable(kvm, g))).toBe(false);
  });
});

describe('dirty ring: soft-full', () => {
  it('at the soft limit (size - 64) the vCPU exits with KVM_EXIT_DIRTY_RING_FULL before re-entering the guest, and waits until the ring is collected and reset', () => {
    const w = ringWorld();
    const { kvm } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    const limit = kvmDirtyRingSoftLimit(kvm);
    expect(limit).toBe(192);
    let gfn = 0;
    for (; gfn < limit - 1; gfn++) expect(guestAccess(kvm, v0, gfn, true, wval(v0))).not.toBe(ACCESS_RING_FULL);
    expect(kvmDirtyRingSoftFull(kvm, 0)).toBe(false);
    // The push that reaches the limit: the fault is handled, then the vCPU exits.
    const value = wval(v0);
    expect(guestAccess(kvm, v0, gfn, true, value)).toBe(ACCESS_RING_FULL);
    expect(counter(kvm, 'ringFullExits')).toBe(1);
    expect(Atomics.load(kvm.m, kvm.layout.frameData + hostFrame(kvm, gfn))).not.toBe(value); // not written yet
    // The vCPU thread blocks on the control word; the migrator collecting
    // alone does not release it, the reset does.
    const snap = new Int32Array(kvm.layout.bitmapWords);
    let waits = 0;
    sched.onWait = (wr) => {
      expect(wr.index).toBe(CTRL.CONTROL_GEN);
      waits++;
      if (waits === 1) dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap);
      else if (waits === 2) {
        // collected but not reset: still soft-full, the vCPU still waits
        expect(kvmDirtyRingSoftFull(kvm, 0)).toBe(true);
        Atomics.add(kvm.m, CTRL.CONTROL_GEN, 1);
      } else kvmVmIoctlResetDirtyPages(kvm, w.migrator);
    };
    expect(dirtyRingFullWait(kvm, v0, gfn)).toBe(true);
    expect(waits).toBe(3);
    expect(kvmDirtyRingUsed(kvm, 0)).toBe(0);
    // Re-entered: the access faults again (the reset write-protected it) and completes.
    expect(guestAccess(kvm, v0, gfn, true, value)).toBe(value);
    expect(entries(kvm, 0).map((e) => e.offset)).toEqual([gfn]);
  });

  it('a vCPU waiting on a full ring pauses for stop-and-copy like one at its safe point', () => {
    const w = ringWorld();
    const { kvm } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    for (let g = 0; g < kvmDirtyRingSoftLimit(kvm); g++) guestAccess(kvm, v0, g, true, wval(v0));
    expect(kvmDirtyRingSoftFull(kvm, 0)).toBe(true);
    let pausedSeen = 0;
    sched.onWait = (wr, n) => {
      if (n === 0) {
        Atomics.store(kvm.m, CTRL.PAUSE_VCPUS, 1);
        Atomics.add(kvm.m, CTRL.CONTROL_GEN, 1);
      } else if (wr.site === 'park') {
        pausedSeen = Atomics.load(kvm.m, CTRL.VCPUS_PAUSED);
        dirtyRingReap(kvm, w.migrator, RAM_SLOT, new Int32Array(kvm.layout.bitmapWords));
        Atomics.store(kvm.m, CTRL.PAUSE_VCPUS, 0);
        Atomics.add(kvm.m, CTRL.CONTROL_GEN, 1);
      }
    };
    expect(dirtyRingFullWait(kvm, v0, 0)).toBe(true);
    expect(pausedSeen).toBe(1);
    expect(Atomics.load(kvm.m, CTRL.VCPUS_PAUSED)).toBe(0);
  });

  it('ring-full-no-exit: the vCPU never exits and pushes into the full ring (kernel-bug, the WARN_ON_ONCE), overwriting an entry never collected', () => {
    const w = ringWorld(['ring-full-no-exit']);
    const { kvm } = w;
    const v0 = w.vcpus[0];
    const size = kvm.layout.dirtyRingSize;
    for (let g = 0; g <= size; g++) expect(guestAccess(kvm, v0, g, true, wval(v0))).not.toBe(ACCESS_RING_FULL);
    expect(counter(kvm, 'ringFullExits')).toBe(0);
    expect(invariantsOf(liveViolations(kvm))).toContain('kernel-bug');
    const snap = new Int32Array(kvm.layout.bitmapWords);
    dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap);
    expect(snapshotGfns(kvm, snap)).not.toContain(0); // gfn 0's entry was overwritten by gfn 256's
  });
});

/** The frame the host maps at gfn. */
function hostFrame(kvm: ReturnType<typeof world>['kvm'], gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn) & ((1 << 24) - 1);
}

/**
 * A precopy by hand: copy everything, let `between` run, reap and copy,
 * then a final reap (vCPUs idle) and copy; the destination compared.
 */
function miniMigration(w: ReturnType<typeof ringWorld>, between: () => void): number {
  const { kvm } = w;
  const snap = new Int32Array(kvm.layout.bitmapWords);
  copyAllPages(kvm, w.migrator, RAM_SLOT);
  between();
  dirtyRingReap(kvm, w.migrator, RAM_SLOT, snap);
  copyDirtyPages(kvm, w.migrator, RAM_SLOT, snap);
  return compareDestination(kvm, w.migrator, RAM_SLOT).mismatches;
}

describe('dirty ring defects, each caught by its invariant', () => {
  function publishRace(bugs: string[]): number {
    const w = ringWorld(bugs);
    const { kvm } = w;
    const v0 = w.vcpus[0];
    // gfn 3's entry (0) waits in the ring; entry 1, gfn 77's, is fresh: a stale offset reads 0.
    guestAccess(kvm, v0, 3, true, wval(v0));
    const { actor: sv0, sched } = scripted(kvm, 0);
    const snap = new Int32Array(kvm.layout.bitmapWords);
    const mismatches = miniMigration(w, () => {
      // The collector runs while gfn 77's push is between its two stores
      // (the vCPU holds mmu_lock's read side there: the reset comes after
      // its fault); then the reset, then the copy of what was collected.
      sched.at('ring.push', () => dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap));
      guestAccess(kvm, sv0, 77, true, wval(sv0));
      kvmVmIoctlResetDirtyPages(kvm, w.migrator);
      copyDirtyPages(kvm, w.migrator, RAM_SLOT, snap);
    });
    return mismatches;
  }

  it('ring-publish-before-offset: a collector between the flag and the offset reports a stale page; the write of the right one is never copied (migration-equal); the correct order loses nothing', () => {
    expect(publishRace([])).toBe(0);
    expect(publishRace(['ring-publish-before-offset'])).toBeGreaterThan(0);
  });

  function resetThenWrite(bugs: string[]): { mismatches: number; writableAfterReset: boolean } {
    const w = ringWorld(bugs);
    const { kvm } = w;
    const v0 = w.vcpus[0];
    let writableAfterReset = false;
    const mismatches = miniMigration(w, () => {
      guestAccess(kvm, v0, 20, true, wval(v0));
      dirtyRingReap(kvm, w.migrator, RAM_SLOT, new Int32Array(kvm.layout.bitmapWords));
      copyAllPages(kvm, w.migrator, RAM_SLOT);
      writableAfterReset = writable(kvm, 20);
      guestAccess(kvm, v0, 20, true, wval(v0)); // must fault and push
    });
    return { mismatches, writableAfterReset };
  }

  it('the copy comes after the reset: collect, copy, then reset loses a write made between the copy and the reset (the page stays writable until the reset write-protects it, with no new entry)', () => {
    const run = (copyFirst: boolean): number => {
      const w = ringWorld();
      const { kvm } = w;
      const v0 = w.vcpus[0];
      const snap = new Int32Array(kvm.layout.bitmapWords);
      return miniMigration(w, () => {
        guestAccess(kvm, v0, 30, true, wval(v0));
        dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap);
        if (copyFirst) copyDirtyPages(kvm, w.migrator, RAM_SLOT, snap);
        guestAccess(kvm, v0, 30, true, wval(v0)); // no fault: still writable
        kvmVmIoctlResetDirtyPages(kvm, w.migrator);
        if (!copyFirst) copyDirtyPages(kvm, w.migrator, RAM_SLOT, snap);
      });
    };
    expect(run(false)).toBe(0);
    expect(run(true)).toBe(1);
  });

  it('ring-reset-no-wp: the reset leaves the page writable, its next write pushes nothing (migration-equal); with the write-protect it is pushed and copied', () => {
    expect(resetThenWrite([])).toEqual({ mismatches: 0, writableAfterReset: false });
    expect(resetThenWrite(['ring-reset-no-wp'])).toEqual({ mismatches: 1, writableAfterReset: true });
  });
});

describe('dirty ring: the backup bitmap', () => {
  it('a write without a running vCPU (a vgic/ITS table save) goes to the backup bitmap, not a ring, and KVM_GET_DIRTY_LOG collects it', () => {
    const w = ringWorld();
    const { kvm } = w;
    const its = itsTableGfn(kvm);
    vgicItsSaveTables(kvm, w.migrator, 0, 2);
    expect(counter(kvm, 'ringPushes')).toBe(0);
    expect(counter(kvm, 'backupBitmapMarks')).toBe(2);
    const snap = new Int32Array(kvm.layout.bitmapWords);
    expect(dirtyRingCollectAll(kvm, w.migrator, RAM_SLOT, snap)).toBe(0);
    expect(kvmGetDirtyLog(kvm, w.migrator, RAM_SLOT, snap)).toBe(2);
    expect(snapshotGfns(kvm, snap)).toEqual([its, its + 1]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('outside a vgic table save the same write is the WARN of kvm_arch_allow_write_without_running_vcpu() (kernel-bug)', () => {
    const w = ringWorld();
    kvmWriteGuestPage(w.kvm, w.migrator, itsTableGfn(w.kvm), 0x1234);
    expect(invariantsOf(liveViolations(w.kvm))).toEqual(['kernel-bug']);
  });

  function stopAndCopy(bugs: string[]) {
    const w = world({ profile: '6.10', backing: 'anon', lock: 'rwlock', dirtyLog: 'ring', bugs });
    const { kvm } = w;
    const v0 = w.vcpus[0];
    for (const g of [1, 2, 3]) guestAccess(kvm, v0, g, true, wval(v0));
    // No vCPU thread runs here: stop-and-copy finds them all paused.
    Atomics.store(kvm.m, CTRL.VCPUS_PAUSED, kvm.layout.vcpus);
    const p = { precopyRounds: 1 } as ActorParams;
    const { actor: mig, sched } = scripted(kvm, kvm.layout.migrator);
    // Writes during the precopy round, pushed to the ring.
    sched.at('migrate.copy', () => {
      for (const g of [2, 9]) guestAccess(kvm, v0, g, true, wval(v0));
    });
    sched.onWait = () => {
      throw new Error('unexpected wait');
    };
    expect(migrateOnceRing(kvm, mig, p, new Int32Array(kvm.layout.bitmapWords), true)).toBe(true);
    return { kvm, violations: liveViolations(kvm) };
  }

  it('stop-and-copy reaps the rings and collects the backup bitmap: the ITS tables saved at VM stop reach the destination; backup-bitmap-not-collected loses them (migration-equal)', () => {
    const ok = stopAndCopy([]);
    expect(ok.violations).toEqual([]);
    expect(counter(ok.kvm, 'backupBitmapMarks')).toBeGreaterThanOrEqual(4);
    expect(counter(ok.kvm, 'migrations')).toBe(1);
    const bad = stopAndCopy(['backup-bitmap-not-collected']);
    expect(invariantsOf(bad.violations)).toContain('migration-equal');
    expect(bad.violations[0].message).toMatch(new RegExp(`gfn ${itsTableGfn(bad.kvm)}`));
  });
});

describe('dirty ring in sim mode', () => {
  it('migrate with rings on 6.10: vCPUs exit on full rings and wait for the migrator without a deadlock; every migration verified (seed printed on failure)', async () => {
    const seed = 3;
    const o = parseRunArgs(['--profile', 'modern', '--dirty-log', 'ring', '--scenario', 'migrate', '--backing', 'anon', '--mode', 'sim', '--sched', 'pct', '--vcpus', '2', '--guest-mem', '8M', '--write-pct', '95', '--ops', '20000', '--seed', String(seed), '--quiet']);
    const r = await runSim(o);
    expect(r.result, `seed ${seed}: ${JSON.stringify(r.violations)} ${r.error ?? ''}`).toBe('pass');
    expect(r.counters.ringFullExits, `seed ${seed}`).toBeGreaterThan(0);
    expect(r.migration.migrations, `seed ${seed}`).toBeGreaterThan(0);
    expect(r.counters.backupBitmapMarks, `seed ${seed}`).toBeGreaterThan(0);
  });
});
