import { describe, it, expect } from 'vitest';
import { makeWorld, wval } from './helpers.js';
import { guestAccess } from '../src/kvm/vcpu.js';
import { checkQuiescent, liveViolations } from '../src/check/invariants.js';
import { kvmEnableDirtyLogging, kvmGetDirtyLog } from '../src/kvm/memslot.js';
import { s2Lookup } from '../src/kvm/pgtable.js';

describe('smoke', () => {
  it('accesses, logging, harvest', () => {
    const w = makeWorld();
    const [v0] = w.vcpus;
    const val = wval(v0);
    guestAccess(w.kvm, v0, 5, true, val);
    expect(guestAccess(w.kvm, v0, 5, false, 0)).toBe(val);
    expect(s2Lookup(w.kvm, 5).level).toBe(2);
    kvmEnableDirtyLogging(w.kvm, w.migrator, 0);
    guestAccess(w.kvm, v0, 7, true, wval(v0));
    expect(s2Lookup(w.kvm, 7).level).toBe(3);
    const snap = new Int32Array(w.kvm.layout.bitmapWords);
    expect(kvmGetDirtyLog(w.kvm, w.migrator, 0, snap)).toBe(1);
    expect(snap[0]).toBe(1 << 7);
    expect([...checkQuiescent(w.kvm), ...liveViolations(w.kvm)]).toEqual([]);
  });
});
