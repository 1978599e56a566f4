/**
 * grace-period: synchronize_srcu() returns only after every SRCU read
 * section that was open when it began has ended (rcutorture's check, made
 * live where the grace period returns).
 */
import { describe, it, expect } from 'vitest';
import { liveViolations } from '../../src/check/invariants.js';
import { graceBegin, graceEnd } from '../../src/check/grace.js';
import { srcuReadLock, srcuReadUnlock, synchronizeSrcu } from '../../src/sync/srcu.js';
import { kvmEnableDirtyLogging } from '../../src/kvm/memslot.js';
import { RAM_SLOT } from '../../src/vm.js';
import { scripted, world } from './support.js';

describe('grace-period', () => {
  it('a grace period that waits for the open read section of the last vCPU is clean', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [, v1] = w.vcpus;
    const { actor: migrator, sched } = scripted(kvm, kvm.layout.migrator);
    srcuReadLock(kvm, v1);
    sched.onWait = (wr): void => {
      expect(wr.site).toBe('srcu.sync');
      srcuReadUnlock(kvm, v1); // the reader's section ends while the updater waits
    };

    synchronizeSrcu(kvm, migrator);

    expect(sched.waits.map((x) => x.site)).toEqual(['srcu.sync']);
    expect(liveViolations(kvm)).toEqual([]);
  });

  it('a section still open, the same one, when the grace period returns is reported with the reader', () => {
    const w = world({ backing: 'anon' });
    const { kvm, migrator, host } = w;
    const [v0, v1] = w.vcpus;
    srcuReadLock(kvm, v0);
    srcuReadLock(kvm, v1);
    graceBegin(kvm);
    srcuReadUnlock(kvm, v0);
    srcuReadLock(kvm, host); // a section that began after the grace period: not waited for
    expect(graceEnd(kvm, migrator)).toBe(1);

    const vs = liveViolations(kvm);
    expect(vs.map((v) => [v.invariant, v.actor])).toEqual([['grace-period', 'migrator']]);
    expect(vs[0].message).toBe(
      'synchronize_srcu() returned while vcpu1 was still inside the SRCU read section that was open when the grace period began: a reader of the replaced memslot outlives the grace period',
    );
  });

  it('srcu-skips-reader: turning logging on while the last vCPU is inside a fault returns with the fault still open (grace-period)', () => {
    const w = world({ backing: 'anon', bugs: ['srcu-skips-reader'] });
    const { kvm, migrator } = w;
    const [, v1] = w.vcpus;
    srcuReadLock(kvm, v1); // vCPU1 read the memslot before logging is published

    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);

    expect(liveViolations(kvm).map((v) => [v.invariant, v.actor])).toEqual([['grace-period', 'migrator']]);
  });
});
