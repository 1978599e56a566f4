/**
 * stage2-host-coherent: every valid stage-2 leaf maps the frame the host maps
 * at that address, with no more permission. It holds on states the protocol
 * builds, and fails on each way of breaking it by hand.
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkQuiescent, checkStage2HostCoherent } from '../../src/check/invariants.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import { kvmMmuNotifierInvalidateRangeEnd, kvmMmuNotifierInvalidateRangeStart } from '../../src/kvm/notifier.js';
import { HPTE_FRAME_MASK, HPTE_WRITE } from '../../src/mm/hostpt.js';
import { LEVEL_PMD, LEVEL_PTE, descOa, mkWrite, pfnPte } from '../../src/arch/stage2.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { invariantsOf, world, wval } from './support.js';

function hpteIdx(kvm: Kvm, gfn: number): number {
  return kvm.layout.hpte + gfn;
}

/** A guest with a few pages mapped: anon PTEs (writable and read-only) and a THP block. */
function mapped(backing: 'anon' | 'thp') {
  const w = world({ backing });
  const [v0, v1] = w.vcpus;
  guestAccess(w.kvm, v0, 4, true, wval(v0));
  guestAccess(w.kvm, v1, 5, true, wval(v1));
  guestAccess(w.kvm, v0, 700, false, 0);
  return w;
}

describe('stage2-host-coherent', () => {
  it('holds on the states faults build (4 KiB entries and a block)', () => {
    for (const backing of ['anon', 'thp'] as const) {
      const { kvm } = mapped(backing);
      expect(s2Lookup(kvm, 4).level).toBe(backing === 'thp' ? LEVEL_PMD : LEVEL_PTE);
      expect(checkStage2HostCoherent(kvm)).toEqual([]);
    }
  });

  it('reports a stage-2 PTE whose frame is not the one the host maps there', () => {
    const { kvm } = mapped('anon');
    const leaf = s2Lookup(kvm, 5);
    const other = Atomics.load(kvm.m, hpteIdx(kvm, 4)) & HPTE_FRAME_MASK;
    Atomics.store(kvm.m, leaf.entry, mkWrite(pfnPte(other, false)));
    expect(descOa(Atomics.load(kvm.m, leaf.entry))).toBe(other);

    const vs = checkStage2HostCoherent(kvm);
    expect(vs.map((v) => [v.invariant, v.gfn])).toEqual([['stage2-host-coherent', 5]]);
    expect(vs[0].message).toMatch(/guest and host see different memory/);
    expect(invariantsOf(checkQuiescent(kvm))).toContain('stage2-host-coherent');
  });

  it('reports a writable stage-2 entry over a host entry that is read-only', () => {
    const { kvm } = mapped('anon');
    Atomics.and(kvm.m, hpteIdx(kvm, 4), ~HPTE_WRITE);
    const vs = checkStage2HostCoherent(kvm);
    expect(vs.map((v) => v.gfn)).toEqual([4]);
    expect(vs[0].message).toMatch(/writable, but the host maps it read-only/);
  });

  it('reports one page of a block the host no longer maps, once per block', () => {
    const { kvm } = mapped('thp');
    Atomics.store(kvm.m, hpteIdx(kvm, 300), 0);
    Atomics.store(kvm.m, hpteIdx(kvm, 301), 0);
    const vs = checkStage2HostCoherent(kvm);
    expect(vs.map((v) => v.gfn)).toEqual([300]);
    expect(vs[0].message).toMatch(/over gfn 0\.\.511 .*host maps nothing there/);
  });

  it('is skipped while an invalidation is in progress (the stage-2 side may lag), and applies again once it ends', () => {
    const { kvm, host } = mapped('anon');
    kvmMmuNotifierInvalidateRangeStart(kvm, host, 900, 1);
    Atomics.and(kvm.m, hpteIdx(kvm, 4), ~HPTE_WRITE);
    expect(checkStage2HostCoherent(kvm)).toEqual([]);
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 900, 1);
    expect(checkStage2HostCoherent(kvm).map((v) => v.gfn)).toEqual([4]);
  });
});
