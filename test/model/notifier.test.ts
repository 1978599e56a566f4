/**
 * MMU notifiers and the host operations behind them: invalidate start/end,
 * mmu_notifier_retry in the fault path, change_pte, TLB flush completion,
 * and page migration / KSM / CoW / THP split and collapse / zap keeping the
 * guest's memory intact (docs/kernel-notes.md, "MMU notifiers", "TLB").
 */
import { describe, it, expect } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import {
  checkFramesMappedAreLive,
  checkQuiescent,
  checkTableConservation,
  checkTlbCoherent,
  liveViolations,
} from '../../src/check/invariants.js';
import { kvmEnableDirtyLogging, slotFlags } from '../../src/kvm/memslot.js';
import { ROOT_TABLE, s2Lookup, stage2WpRange, unmapStage2Range } from '../../src/kvm/pgtable.js';
import { LS } from '../../src/sync/locksites.js';
import { FAULT_RETRY, kvmHandleGuestAbort, userMemAbort } from '../../src/kvm/mmu.js';
import {
  kvmMmuNotifierChangePte,
  kvmMmuNotifierInvalidateRangeEnd,
  kvmMmuNotifierInvalidateRangeStart,
  mmuNotifierRetry,
} from '../../src/kvm/notifier.js';
import { doWpPage } from '../../src/mm/hostfault.js';
import type { ProfileName } from '../../src/config.js';
import { collapseHugePage, ksmMerge, migratePage, splitHugePage, zapRange, SHADOW_DISCARDED } from '../../src/mm/hostops.js';
import { FRAME_KSM, FRAME_THP } from '../../src/mm/frames.js';
import { HPTE_FRAME_MASK, HPTE_WRITE } from '../../src/mm/hostpt.js';
import { LEVEL_PMD, LEVEL_PTE, descOa, descValid, descWritable } from '../../src/arch/stage2.js';
import { CTRL, FRAMES_PER_GROUP } from '../../src/shm/layout.js';
import { srcuReadLock, srcuReadUnlock } from '../../src/sync/srcu.js';
import { RAM_SLOT } from '../../src/vm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { tlbFill, tlbLocalInvalidate } from '../../src/kvm/tlb.js';
import {
  accessSeqWord,
  counter,
  invariantsOf,
  nextFill,
  scripted,
  tableRef,
  tablesAvailable,
  tlbBlock,
  tlbPage,
  validEntries,
  world,
  wval,
} from './support.js';

function hostFrame(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn) & HPTE_FRAME_MASK;
}
function frameRef(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameRef + f);
}
function scratch(): Int32Array {
  return new Int32Array(2 * FRAMES_PER_GROUP);
}
function clean(kvm: Kvm): void {
  expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
}

describe('invalidate_range_start / end', () => {
  it('invalidate_range_start raises mmu_notifier_count and unmaps the range (entries cleared, TLB flushed); invalidate_range_end bumps mmu_notifier_seq and lowers the count', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0, v1] = w.vcpus;
    for (const gfn of [4, 5, 6]) guestAccess(kvm, v0, gfn, true, wval(v0));
    // vCPU0 caches gfn 4 as a stage-2-only entry and gfn 6 as a combined one.
    tlbLocalInvalidate(kvm, 0, 4);
    nextFill(kvm, 0, true);
    guestAccess(kvm, v0, 4, false, 0);
    tlbLocalInvalidate(kvm, 0, 6);
    nextFill(kvm, 0, false);
    guestAccess(kvm, v0, 6, false, 0);
    guestAccess(kvm, v1, 5, false, 0);
    const seq = Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ);

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 5, 1);

    expect(Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT)).toBe(1);
    expect(Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ)).toBe(seq);
    expect([4, 5, 6].map((g) => s2Lookup(kvm, g).level)).toEqual([LEVEL_PTE, 0, LEVEL_PTE]);
    expect(tlbPage(kvm, 0, 5)).toBeNull();
    expect(tlbPage(kvm, 1, 5)).toBeNull();
    // arm64: tlbi ipas2e1is spares the stage-2-only entry of another IPA; vmalle1is takes every combined one
    expect(tlbPage(kvm, 0, 4)).not.toBeNull();
    expect(tlbPage(kvm, 0, 6)).toBeNull();
    expect(checkTableConservation(kvm)).toEqual([]);

    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 5, 1);

    expect(Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT)).toBe(0);
    expect(Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ)).toBe(seq + 1);
    clean(kvm);
  });

  it('mmu_notifier_retry is true while an invalidation is in progress or when the sequence moved since the snapshot', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const seq = Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ);
    expect(mmuNotifierRetry(kvm, seq)).toBe(false);
    kvmMmuNotifierInvalidateRangeStart(kvm, host, 300, 1);
    expect(mmuNotifierRetry(kvm, seq)).toBe(true);
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 300, 1);
    expect(mmuNotifierRetry(kvm, seq)).toBe(true);
    expect(mmuNotifierRetry(kvm, Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ))).toBe(false);
  });

  it('a fault while an invalidation is in progress (start done, end not yet) retries without mapping', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    kvmMmuNotifierInvalidateRangeStart(kvm, host, 5, 1);
    const frame = hostFrame(kvm, 5);
    const ref = frameRef(kvm, frame);

    expect(userMemAbort(kvm, v0, 5, true, false, RAM_SLOT, slotFlags(kvm, RAM_SLOT))).toBe(FAULT_RETRY);
    expect(kvmHandleGuestAbort(kvm, v0, 5, true, false)).toBe(0);

    expect(s2Lookup(kvm, 5).level).toBe(0);
    expect(counter(kvm, 'faultRetries')).toBe(1);
    expect(counter(kvm, 'pteMaps') + counter(kvm, 'blockMaps')).toBe(0);
    expect(frameRef(kvm, frame)).toBe(ref); // the lookup's reference was released
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 5, 1);
    expect(kvmHandleGuestAbort(kvm, v0, 5, true, false)).toBe(0);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
  });

  it('a fault retries when mmu_notifier_seq moved between its snapshot and taking mmu_lock (a start/end pair on another page ran in between)', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    sched.at('fault.gfn_to_pfn', () => {
      kvmMmuNotifierInvalidateRangeStart(kvm, host, 300, 1);
      kvmMmuNotifierInvalidateRangeEnd(kvm, host, 300, 1);
    });

    expect(userMemAbort(kvm, v0, 5, true, false, RAM_SLOT, slotFlags(kvm, RAM_SLOT))).toBe(FAULT_RETRY);

    expect(sched.pending()).toEqual([]);
    expect(s2Lookup(kvm, 5).level).toBe(0);
    expect(userMemAbort(kvm, v0, 5, true, false, RAM_SLOT, slotFlags(kvm, RAM_SLOT))).toBe(0);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
  });

  for (const bug of [null, 'no-notifier-retry'] as const) {
    it(`${bug ? '(bug no-notifier-retry) a fault that ignores the moved sequence maps a page the host zapped meanwhile: the guest writes into a freed frame' : 'a page zapped between the host lookup and mmu_lock is not mapped: the fault retries and maps a fresh frame'}`, () => {
      const w = world({ backing: 'anon', bugs: bug ? [bug] : [] });
      const { kvm, host } = w;
      const { actor: v0, sched } = scripted(kvm, 0);
      const oldFrame = hostFrame(kvm, 5);
      sched.at('fault.gfn_to_pfn', () => {
        expect(frameRef(kvm, oldFrame)).toBe(2); // the host's and the fault's
        expect(zapRange(kvm, host, 5, 1, scratch())).toBe(true);
      });
      const val = wval(v0);

      expect(guestAccess(kvm, v0, 5, true, val)).toBe(val);

      expect(sched.pending()).toEqual([]);
      if (bug) {
        expect(frameRef(kvm, oldFrame)).toBe(0);
        expect(descOa(s2Lookup(kvm, 5).desc)).toBe(oldFrame);
        expect(invariantsOf(liveViolations(kvm))).toContain('frame-use-after-free');
        expect(invariantsOf(checkFramesMappedAreLive(kvm))).toContain('frame-use-after-free');
      } else {
        expect(counter(kvm, 'faultRetries')).toBe(1);
        // the refault allocates afresh (here the allocator hands back the just-freed frame)
        expect(descOa(s2Lookup(kvm, 5).desc)).toBe(hostFrame(kvm, 5));
        expect(frameRef(kvm, hostFrame(kvm, 5))).toBe(1);
        clean(kvm);
      }
    });
  }
});

describe('change_pte', () => {
  it('change_pte inside invalidate start/end never meets a huge PMD; on a block-mapped page without the pair it does (kernel-bug)', () => {
    const w = world({ backing: 'thp' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
    const frame = hostFrame(kvm, 5);

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 5, 1);
    kvmMmuNotifierChangePte(kvm, host, 5, frame);
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 5, 1);
    expect(liveViolations(kvm)).toEqual([]);
    expect(counter(kvm, 'changePte')).toBe(1);
    clean(kvm);

    guestAccess(kvm, v0, 5, true, wval(v0));
    const block = s2Lookup(kvm, 5);
    expect(block.level).toBe(LEVEL_PMD);
    kvmMmuNotifierChangePte(kvm, host, 5, frame);
    const live = liveViolations(kvm);
    expect(live.map((v) => [v.invariant, v.gfn])).toEqual([['kernel-bug', 5]]);
    expect(live[0].message).toMatch(/from change_pte \(no cache\) met a huge PMD/);
    expect(s2Lookup(kvm, 5).desc).toBe(block.desc); // the block was not treated as a table
  });

  it('change_pte within the pair points an existing PTE table entry at the new frame, read-only; it ignores ranges without tables', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 4, true, wval(v0)); // keeps the PTE table alive
    guestAccess(kvm, v0, 5, true, wval(v0));
    const nf = hostFrame(kvm, 6); // any live frame will do for the descriptor

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 5, 1);
    kvmMmuNotifierChangePte(kvm, host, 5, nf);
    const r = s2Lookup(kvm, 5);
    expect(r.level).toBe(LEVEL_PTE);
    expect(descOa(r.desc)).toBe(nf);
    expect(descWritable(r.desc)).toBe(false);
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 5, 1);

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 1500, 1);
    kvmMmuNotifierChangePte(kvm, host, 1500, nf); // region 2: no PTE table
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 1500, 1);
    expect(s2Lookup(kvm, 1500).level).toBe(0);
    expect(checkTableConservation(kvm)).toEqual([]);
    expect(liveViolations(kvm)).toEqual([]);
  });

  // The change_pte window (README, fidelity notes): a MADV_DONTNEED zap
  // whose invalidate_range_start already ran, then a whole copy-on-write of
  // a page of its range (wp_page_copy(): its own start, set_pte_at_notify(),
  // end), then the zap clears the host PTE and frees the new page. arm's
  // kvm_set_spte_handler() / arm64's kvm_set_spte_gfn() create the stage-2
  // entry change_pte asks for, so stage 2 maps the freed page.
  const windowCases: Array<{ profile: ProfileName; fixes: string[]; open: boolean }> = [
    { profile: 'fixed', fixes: [], open: true },
    { profile: '6.2', fixes: [], open: true },
    { profile: '6.10', fixes: [], open: false },
    { profile: 'fixed', fixes: ['no-change-pte'], open: false },
    { profile: '6.2', fixes: ['no-change-pte'], open: false },
  ];
  for (const c of windowCases) {
    const name = `${c.profile}${c.fixes.length ? ' --fix ' + c.fixes.join(' ') : ''}`;
    it(`${name}: a copy-on-write inside a zap's notifier pair ${c.open ? 'leaves stage 2 mapping the page the zap frees (frame-use-after-free)' : 'leaves stage 2 unmapped: the next fault maps the page'}`, () => {
      const w = world({ backing: 'anon', memPrealloc: false, profile: c.profile, fixes: c.fixes });
      const { kvm } = w;
      const [v0, v1] = w.vcpus;
      guestAccess(kvm, v1, 9, true, wval(v1)); // keeps the PTE table alive
      expect(guestAccess(kvm, v0, 5, false, 0)).toBe(0); // the zero page, read-only
      const { actor: host, sched } = scripted(kvm, kvm.layout.hostActor);
      let nf = 0;
      sched.at('hostpt.lock', () => {
        // the zap's start ran: stage 2 no longer maps 5; the CoW now
        expect(s2Lookup(kvm, 5).level).toBe(0);
        const seen = Atomics.load(kvm.m, kvm.layout.hpte + 5);
        expect(doWpPage(kvm, v0, 5, seen)).toBe(true);
        nf = hostFrame(kvm, 5);
      });
      expect(zapRange(kvm, host, 4, 3, scratch())).toBe(true);
      expect(sched.pending()).toEqual([]);
      expect(counter(kvm, 'cowBreaks')).toBe(1);
      expect(frameRef(kvm, nf)).toBe(0);
      expect(hostFrame(kvm, 5)).toBe(0);
      const r = s2Lookup(kvm, 5);
      const found = [...checkQuiescent(kvm), ...liveViolations(kvm)].map((v) => v.invariant);
      if (c.open) {
        expect(counter(kvm, 'changePte')).toBe(1);
        expect([r.level, descOa(r.desc), descWritable(r.desc)]).toEqual([LEVEL_PTE, nf, false]);
        expect(found).toContain('frame-use-after-free');
      } else {
        expect(counter(kvm, 'changePte')).toBe(0);
        expect(r.level).toBe(0);
        expect(found).toEqual([]);
        expect(guestAccess(kvm, v0, 5, false, 0)).toBe(0);
        clean(kvm);
      }
    });
  }
});

describe('TLB flush completion', () => {
  /**
   * vCPU1 is in the middle of an access whose walk read the PTE for gfn 5
   * before the host unmapped it; it fills its TLB with that entry when it
   * finishes the access. A flush is complete only once that access is over.
   */
  function midAccessFlush(bugs: string[], spuriousWakeups: number) {
    const w = world({ backing: 'anon', bugs });
    const { kvm } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 4, true, wval(v0)); // keeps the PTE table: the unmap flushes once
    guestAccess(kvm, v0, 5, true, wval(v0));
    const oldDesc = s2Lookup(kvm, 5).desc;
    const seqWord = accessSeqWord(kvm, 1);
    Atomics.add(kvm.m, seqWord, 1); // vCPU1 enters its access: odd
    let finished = false;
    const finishVcpu1 = (): void => {
      const slot = kvm.layout.tlb + 1 * kvm.layout.tlbWords + (5 & (kvm.layout.tlbPageSlots - 1)) * 2;
      tlbFill(kvm.m, kvm.layout.tlbGen, slot, 5 + 1, oldDesc, false); // as the walk fills, with the generation of now
      Atomics.add(kvm.m, seqWord, 1); // leaves: even
      finished = true;
    };
    const { actor: host, sched } = scripted(kvm, w.host.id);
    sched.onWait = (wr, nth) => {
      expect(wr.index).toBe(seqWord);
      if (nth >= spuriousWakeups) finishVcpu1();
      // else: a spurious return, the word is unchanged
    };

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 5, 1);
    const finishedInFlush = finished;
    if (!finished) finishVcpu1(); // the flush returned early: vCPU1 finishes its access afterwards
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 5, 1);
    return { kvm, sched, finishedInFlush };
  }

  it('a TLB flush waits for every vCPU in the middle of an access, then invalidates again: an entry filled from the old tables does not survive', () => {
    const { kvm, sched, finishedInFlush } = midAccessFlush([], 0);
    expect(sched.waits.map((x) => x.site)).toEqual(['tlb.flush.wait']);
    expect(finishedInFlush).toBe(true);
    expect(tlbPage(kvm, 1, 5)).toBeNull();
    expect(checkTlbCoherent(kvm)).toEqual([]);
  });

  it('a TLB flush keeps waiting across a spurious return of waitWhile (the Sched contract: callers re-check)', () => {
    const { kvm, sched, finishedInFlush } = midAccessFlush([], 1);
    expect(sched.waits.map((x) => x.site)).toEqual(['tlb.flush.wait', 'tlb.flush.wait']);
    expect(finishedInFlush).toBe(true);
    expect(checkTlbCoherent(kvm)).toEqual([]);
  });

  it('(bug flush-no-wait) a flush that does not wait leaves the entry the vCPU filled from the old tables', () => {
    const { kvm, sched, finishedInFlush } = midAccessFlush(['flush-no-wait'], 0);
    expect(sched.waits).toEqual([]);
    expect(finishedInFlush).toBe(false);
    expect(tlbPage(kvm, 1, 5)).not.toBeNull();
    expect(checkTlbCoherent(kvm).map((v) => [v.actor, v.gfn])).toEqual([['vcpu1', 5]]);
  });

  it('synchronize_srcu keeps waiting across a spurious return of waitWhile: logging on still write-protects after the old-slot fault', () => {
    const w = world({ backing: 'thp' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    srcuReadLock(kvm, v0);
    const oldFlags = slotFlags(kvm, RAM_SLOT);
    let finished = false;
    const finishFault = (): void => {
      expect(userMemAbort(kvm, v0, 5, true, false, RAM_SLOT, oldFlags)).toBe(0);
      srcuReadUnlock(kvm, v0);
      finished = true;
    };
    const { actor: migrator, sched } = scripted(kvm, w.migrator.id);
    sched.onWait = (_wr, nth) => {
      if (nth >= 1) finishFault();
    };
    kvmEnableDirtyLogging(kvm, migrator, RAM_SLOT);
    const finishedInGrace = finished;
    if (!finished) finishFault();
    expect(finishedInGrace).toBe(true);
    expect(sched.waits.map((x) => x.site)).toEqual(['srcu.sync', 'srcu.sync']);
    expect(descWritable(s2Lookup(kvm, 5).desc)).toBe(false);
  });
});

describe('host memory operations keep the guest content', () => {
  it('page migration copies the page, unmaps the stage-2 entry and frees the old frame; the next access maps the new frame', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0, v1] = w.vcpus;
    const val = wval(v0);
    guestAccess(kvm, v0, 5, true, val);
    guestAccess(kvm, v1, 5, false, 0);
    const oldFrame = hostFrame(kvm, 5);

    expect(migratePage(kvm, host, 5)).toBe(true);

    const nf = hostFrame(kvm, 5);
    expect(nf).not.toBe(oldFrame);
    expect(frameRef(kvm, oldFrame)).toBe(0);
    expect(s2Lookup(kvm, 5).level).toBe(0);
    expect(tlbPage(kvm, 1, 5)).toBeNull();
    clean(kvm);
    expect(guestAccess(kvm, v1, 5, false, 0)).toBe(val);
    expect(descOa(s2Lookup(kvm, 5).desc)).toBe(nf);
    clean(kvm);
  });

  it('KSM merges two equal pages through change_pte (read-only stage-2 entry on the shared frame); a guest write breaks CoW onto a copy; both pages keep their content', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0, v1] = w.vcpus;
    const same = wval(v0);
    guestAccess(kvm, v0, 5, true, same);
    guestAccess(kvm, v0, 6, true, same);
    guestAccess(kvm, v0, 7, false, 0); // keeps the PTE table, so change_pte has an entry to set

    expect(ksmMerge(kvm, host, 5, 6)).toBe(true);

    const shared = hostFrame(kvm, 5);
    expect(hostFrame(kvm, 6)).toBe(shared);
    expect(Atomics.load(kvm.m, kvm.layout.frameFlags + shared) & FRAME_KSM).not.toBe(0);
    expect(Atomics.load(kvm.m, kvm.layout.hpte + 6) & HPTE_WRITE).toBe(0);
    const r6 = s2Lookup(kvm, 6);
    expect([r6.level, descOa(r6.desc), descWritable(r6.desc)]).toEqual([LEVEL_PTE, shared, false]);
    clean(kvm);

    // vCPU0's write faults; the host lookup breaks CoW (copy, change_pte). Between the
    // lookup and mmu_lock, vCPU1 reads page 6 through the read-only entry change_pte set.
    const { actor: v0s, sched } = scripted(kvm, 0);
    let readDuringFault = -1;
    sched.at('fault.gfn_to_pfn', () => {
      expect(hostFrame(kvm, 6)).not.toBe(shared);
      readDuringFault = guestAccess(kvm, v1, 6, false, 0);
    });
    const val = wval(v0);
    guestAccess(kvm, v0s, 6, true, val);

    expect(sched.pending()).toEqual([]);
    expect(readDuringFault).toBe(same);
    expect(counter(kvm, 'cowBreaks')).toBe(1);
    expect(hostFrame(kvm, 6)).not.toBe(shared);
    expect(frameRef(kvm, shared)).toBe(1);
    expect(guestAccess(kvm, v1, 5, false, 0)).toBe(same);
    expect(guestAccess(kvm, v1, 6, false, 0)).toBe(val);
    clean(kvm);
  });

  it('THP split unmaps the block (the next fault maps a PTE), THP collapse copies into a new huge page (the next fault maps a block); content intact throughout', () => {
    const w = world({ backing: 'thp' });
    const { kvm, host } = w;
    const [v0, v1] = w.vcpus;
    const val = wval(v0);
    guestAccess(kvm, v0, 5, true, val);
    guestAccess(kvm, v1, 7, false, 0);
    expect(tlbBlock(kvm, 1, 7)).not.toBeNull();

    expect(splitHugePage(kvm, host, 0, scratch())).toBe(true);

    expect(s2Lookup(kvm, 5).level).toBe(0);
    expect(tlbBlock(kvm, 1, 7)).toBeNull();
    expect(Atomics.load(kvm.m, kvm.layout.frameFlags + hostFrame(kvm, 5)) & FRAME_THP).toBe(0);
    clean(kvm);
    expect(guestAccess(kvm, v1, 5, false, 0)).toBe(val);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
    const small = hostFrame(kvm, 5);

    expect(collapseHugePage(kvm, host, 0, scratch())).toBe(true);

    expect(hostFrame(kvm, 5)).not.toBe(small);
    expect(frameRef(kvm, small)).toBe(0);
    expect(s2Lookup(kvm, 5).level).toBe(0);
    clean(kvm);
    expect(guestAccess(kvm, v1, 5, false, 0)).toBe(val);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PMD);
    clean(kvm);
  });

  it('a zap (MADV_DONTNEED) unmaps the pages and frees their frames; a refault gets a fresh zeroed page', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    guestAccess(kvm, v0, 5, true, wval(v0));
    guestAccess(kvm, v0, 6, true, wval(v0));
    const old = [hostFrame(kvm, 5), hostFrame(kvm, 6)];

    expect(zapRange(kvm, host, 5, 2, scratch())).toBe(true);

    expect(old.map((f) => frameRef(kvm, f))).toEqual([0, 0]);
    expect([5, 6].map((g) => Atomics.load(kvm.m, kvm.layout.shadow + g))).toEqual([SHADOW_DISCARDED, SHADOW_DISCARDED]);
    expect([5, 6].map((g) => s2Lookup(kvm, g).level)).toEqual([0, 0]);
    clean(kvm);
    expect(guestAccess(kvm, v0, 5, false, 0)).toBe(0);
    const val = wval(v0);
    guestAccess(kvm, v0, 6, true, val);
    expect(Atomics.load(kvm.m, kvm.layout.shadow + 6)).toBe(val);
    clean(kvm);
  });
});

describe('table pages', () => {
  it('a range walk from an unaligned start across a 2 MiB boundary visits every entry (Linux 5.12 range alignment): write-protect and unmap', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    for (let gfn = 499; gfn <= 520; gfn++) guestAccess(kvm, v0, gfn, true, wval(v0));

    kvm.mmuLock.lock(host, LS.other);
    stage2WpRange(kvm, host, 500, 520);
    kvm.mmuLock.unlock(host);

    const writable = (gfn: number): boolean => descWritable(s2Lookup(kvm, gfn).desc);
    expect([499, 500, 511, 512, 519, 520].map(writable)).toEqual([true, false, false, false, false, true]);

    kvm.mmuLock.lock(host, LS.other);
    unmapStage2Range(kvm, host, 500, 20);
    kvm.mmuLock.unlock(host);

    expect([499, 500, 511, 512, 519, 520].map((g) => s2Lookup(kvm, g).level)).toEqual([LEVEL_PTE, 0, 0, 0, 0, LEVEL_PTE]);
    expect(checkTableConservation(kvm)).toEqual([]);
  });

  it('unmapping a range frees every table it emptied: table refcounts and the pool return to their baseline', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0, v1] = w.vcpus;
    const available = tablesAvailable(kvm);
    expect(tableRef(kvm, ROOT_TABLE)).toBe(1);
    for (const gfn of [5, 600, 1100, 1700]) guestAccess(kvm, v0, gfn, true, wval(v0));
    for (const gfn of [6, 601]) guestAccess(kvm, v1, gfn, false, 0);
    expect(tableRef(kvm, ROOT_TABLE)).toBe(2);
    expect(tablesAvailable(kvm)).toBe(available - 5); // one PMD table, four PTE tables
    const freed = counter(kvm, 'tablesFreed');

    kvmMmuNotifierInvalidateRangeStart(kvm, host, 0, kvm.layout.ramPages);
    kvmMmuNotifierInvalidateRangeEnd(kvm, host, 0, kvm.layout.ramPages);

    expect(tableRef(kvm, ROOT_TABLE)).toBe(1);
    expect(validEntries(kvm, ROOT_TABLE)).toBe(0);
    expect(tablesAvailable(kvm)).toBe(available);
    expect(counter(kvm, 'tablesFreed') - freed).toBe(5);
    expect(descValid(s2Lookup(kvm, 5).desc)).toBe(false);
    clean(kvm);
  });
});
