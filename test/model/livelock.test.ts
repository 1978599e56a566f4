/**
 * An access that keeps faulting without anything changing is given up and
 * reported as a livelock (`progress`), naming the vCPU, the page, the
 * faults, the stage-2 entry and what the faults keep meeting; faults that
 * change something (the entry, or mmu_notifier_seq: the host moved memory
 * under the fault) do not count towards it.
 */
import { describe, it, expect } from 'vitest';
import { ACCESS_LIVELOCK, MAX_FAULTS_PER_ACCESS, guestAccess } from '../../src/kvm/vcpu.js';
import { liveViolations } from '../../src/check/invariants.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { kvmMmuNotifierInvalidateRangeEnd, kvmMmuNotifierInvalidateRangeStart } from '../../src/kvm/notifier.js';
import { LEVEL_PTE, descWritable, mkReadonly } from '../../src/arch/stage2.js';
import { HPTE_WRITE } from '../../src/mm/hostpt.js';
import { CTRL } from '../../src/shm/layout.js';
import { Actor } from '../../src/sync/actor.js';
import type { Sched } from '../../src/sync/sched.js';
import { SITE } from '../../src/sync/sites.js';
import { counter, scripted, world, wval } from './support.js';

/** A scheduler that calls back at points and waits (a wait that returns at once is a spurious wake-up, which the Sched contract allows). */
class HookSched implements Sched {
  constructor(
    private readonly onPoint: (site: number) => void,
    private readonly onWait: (index: number, value: number) => void,
  ) {}
  point(site: number): void {
    this.onPoint(site);
  }
  waitWhile(index: number, value: number, _site: number): void {
    this.onWait(index, value);
  }
  idle(_ms: number): void {}
}

/** A scheduler whose waits return at once, as the Sched contract allows (spurious wake-ups). */
class SpuriousSched implements Sched {
  waits = 0;
  point(_site: number): void {}
  waitWhile(_index: number, _value: number, _site: number): void {
    this.waits++;
  }
  idle(_ms: number): void {}
}

describe('progress: an access given up is a livelock', () => {
  it('a write whose fault keeps returning but leaves the entry read-only is given up after MAX_FAULTS_PER_ACCESS faults, naming vCPU, gfn, faults, entry and the permission fault', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const { actor: v1, sched } = scripted(kvm, 1);
    const gfn = 7;
    // Every time the fault has mapped the page writable, the entry is put
    // back read-only before the guest re-executes: it never becomes writable.
    const reprotect = (): void => {
      const leaf = s2Lookup(kvm, gfn);
      if (leaf.level !== 0) Atomics.store(kvm.m, leaf.entry, mkReadonly(leaf.desc));
    };
    for (let i = 0; i < MAX_FAULTS_PER_ACCESS + 8; i++) sched.at('fault.done', reprotect);

    expect(guestAccess(kvm, v1, gfn, true, wval(v1))).toBe(ACCESS_LIVELOCK);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor, v.gfn])).toEqual([['progress', 'vcpu1', gfn]]);
    const leaf = s2Lookup(kvm, gfn);
    expect(leaf.level).toBe(LEVEL_PTE);
    expect(descWritable(leaf.desc)).toBe(false);
    // the first fault mapped the page (a change); every later one changed nothing
    expect(vs[0].message).toContain(`livelock: gave up a guest write of gfn ${gfn} after ${MAX_FAULTS_PER_ACCESS + 1} faults, the last ${MAX_FAULTS_PER_ACCESS} in a row changing nothing`);
    expect(vs[0].message).toContain('stage-2 entry at level 3');
    expect(vs[0].message).toContain('a permission fault: each fault returns, but the entry stays read-only');
    expect(counter(kvm, 'writes')).toBe(0);
  });

  it('a write to a device page the host maps read-only keeps getting -EFAULT and is given up, naming -EFAULT', () => {
    const w = world({ backing: 'mixed' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    const gfn = kvm.layout.ramPages + 2;
    Atomics.and(kvm.m, kvm.layout.hpte + gfn, ~HPTE_WRITE);

    expect(guestAccess(kvm, v0, gfn, true, wval(v0))).toBe(ACCESS_LIVELOCK);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor, v.gfn])).toEqual([['progress', 'vcpu0', gfn]]);
    expect(vs[0].message).toContain(`the last ${MAX_FAULTS_PER_ACCESS} in a row changing nothing`);
    expect(vs[0].message).toMatch(/stage-2 entry at level 3: .*device/);
    expect(vs[0].message).toContain('user_mem_abort() returning -EFAULT (-14)');
  });

  it('a fault that retries against an mmu_notifier_count that never drops is given up, naming the retry and the count', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const sched = new SpuriousSched();
    const v0 = new Actor(0, sched);
    Atomics.store(kvm.m, CTRL.MMU_NOTIFIER_COUNT, 1); // an invalidation that never ends

    expect(guestAccess(kvm, v0, 9, false, 0)).toBe(ACCESS_LIVELOCK);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor, v.gfn])).toEqual([['progress', 'vcpu0', 9]]);
    expect(vs[0].message).toContain('gave up a guest read of gfn 9');
    expect(vs[0].message).toContain('no stage-2 entry');
    expect(vs[0].message).toContain('mmu_notifier_retry(): user_mem_abort() returns -EAGAIN every time (mmu_notifier_count 1');
    // it waited for the count to move between retries (each wait returned spuriously)
    expect(sched.waits).toBeGreaterThanOrEqual(MAX_FAULTS_PER_ACCESS - 1);
    expect(counter(kvm, 'faultRetries')).toBe(MAX_FAULTS_PER_ACCESS);
  });

  it('retries while invalidations come and go are not a livelock: each ended invalidation moves the sequence, and the access completes', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const gfn = 11;
    let rounds = 3 * MAX_FAULTS_PER_ACCESS;
    let waits = 0;
    // The host keeps invalidating the page: right after each fault's
    // snapshot of the sequence, one invalidation ends and the next begins,
    // so the fault retries; at the last wait, the last one ends.
    const sched = new HookSched(
      (site) => {
        if (site !== SITE['fault.seq'] || rounds === 0) return;
        rounds--;
        kvmMmuNotifierInvalidateRangeEnd(kvm, host, gfn, 1);
        kvmMmuNotifierInvalidateRangeStart(kvm, host, gfn, 1);
      },
      (index, value) => {
        expect([index, value]).toEqual([CTRL.MMU_NOTIFIER_COUNT, 1]);
        waits++;
        if (rounds === 0) kvmMmuNotifierInvalidateRangeEnd(kvm, host, gfn, 1);
      },
    );
    const v0 = new Actor(0, sched);
    kvmMmuNotifierInvalidateRangeStart(kvm, host, gfn, 1);
    const val = wval(v0);

    expect(guestAccess(kvm, v0, gfn, true, val)).toBe(val);

    expect(liveViolations(kvm)).toEqual([]);
    expect(counter(kvm, 'faultRetries')).toBe(3 * MAX_FAULTS_PER_ACCESS);
    expect(waits).toBe(3 * MAX_FAULTS_PER_ACCESS);
    expect(Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT)).toBe(0);
  });
});
