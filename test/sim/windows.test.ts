/**
 * Narrow windows reachable by design: host operations on a page a fault
 * holds keep the kernel's semantics (the notifier pair runs, then the
 * extra reference makes the operation fail, and migrate_pages() retries),
 * vCPUs aim a share of their accesses at edges, the host-MM actor finds
 * the pages vCPUs use, and the sim scheduler's site odds favour the sites
 * that open windows. Single-threaded, scripted interleavings.
 */
import { describe, expect, it } from 'vitest';
import { guestAccess } from '../../src/kvm/vcpu.js';
import { checkQuiescent, liveViolations } from '../../src/check/invariants.js';
import { s2Lookup } from '../../src/kvm/pgtable.js';
import {
  MIGRATE_EAGAIN,
  MIGRATE_EBUSY,
  MIGRATE_PAGES_RETRY,
  collapseHugePage,
  ksmMerge,
  migratePage,
  migratePageOnce,
  splitHugePage,
} from '../../src/mm/hostops.js';
import { getPage, putPage } from '../../src/mm/frames.js';
import { HPTE_FRAME_MASK, HPTE_MIGRATING, HPTE_WRITE } from '../../src/mm/hostpt.js';
import { LEVEL_PTE, descOa } from '../../src/arch/stage2.js';
import { ACTOR, CTRL, FRAMES_PER_GROUP } from '../../src/shm/layout.js';
import { DEFAULT_PREEMPT_EVERY, SITE, SITE_NAMES, SITE_PREEMPT_EVERY, WINDOW_SITES, type SiteName } from '../../src/sync/sites.js';
import { XorShift32 } from '../../src/sync/sched.js';
import { edgeGfn } from '../../src/actors/vcpu.js';
import { vcpuTargetGfn } from '../../src/actors/hostmm.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { counter, scripted, world, wval } from '../model/support.js';

function hpte(kvm: Kvm, gfn: number): number {
  return Atomics.load(kvm.m, kvm.layout.hpte + gfn);
}
function hostFrame(kvm: Kvm, gfn: number): number {
  return hpte(kvm, gfn) & HPTE_FRAME_MASK;
}
function frameRef(kvm: Kvm, f: number): number {
  return Atomics.load(kvm.m, kvm.layout.frameRef + f);
}
function seq(kvm: Kvm): number {
  return Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_SEQ);
}
function scratch(): Int32Array {
  return new Int32Array(2 * FRAMES_PER_GROUP);
}
function clean(kvm: Kvm): void {
  expect([...checkQuiescent(kvm), ...liveViolations(kvm)]).toEqual([]);
}

describe('host operations on a page an in-flight fault holds', () => {
  it('a NUMA-balancing migration pass runs the notifier pair, then fails with -EAGAIN on the fault\'s reference and puts the page back; the fault retries; a later pass migrates', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    const f = hostFrame(kvm, 5);
    let result = 0;
    let seqMoved = false;
    sched.at('fault.gfn_to_pfn', () => {
      expect(frameRef(kvm, f)).toBe(2); // the mapping's and the fault's
      const before = seq(kvm);
      result = migratePageOnce(kvm, host, 5, false);
      seqMoved = seq(kvm) !== before;
    });
    const val = wval(v0);
    expect(guestAccess(kvm, v0, 5, true, val)).toBe(val);
    expect(sched.pending()).toEqual([]);
    expect(result).toBe(MIGRATE_EAGAIN);
    expect(seqMoved).toBe(true);
    expect(hostFrame(kvm, 5)).toBe(f);
    expect(hpte(kvm, 5) & HPTE_MIGRATING).toBe(0);
    expect(counter(kvm, 'hostMigrationRetries')).toBe(1);
    expect(counter(kvm, 'faultRetries')).toBe(1);
    expect(descOa(s2Lookup(kvm, 5).desc)).toBe(f);
    clean(kvm);

    expect(migratePage(kvm, host, 5, false)).toBe(true);
    expect(hostFrame(kvm, 5)).not.toBe(f);
    expect(frameRef(kvm, f)).toBe(0);
    expect(s2Lookup(kvm, 5).level).toBe(0);
    expect(guestAccess(kvm, w.vcpus[1], 5, false, 0)).toBe(val);
    clean(kvm);
  });

  it('compaction skips a page with an extra reference before telling KVM anything (its racy pre-check)', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    let result = 0;
    let seqBefore = -1;
    let seqAfter = -2;
    sched.at('fault.gfn_to_pfn', () => {
      seqBefore = seq(kvm);
      result = migratePageOnce(kvm, host, 5, true);
      seqAfter = seq(kvm);
    });
    guestAccess(kvm, v0, 5, true, wval(v0));
    expect(result).toBe(MIGRATE_EBUSY);
    expect(seqAfter).toBe(seqBefore);
    expect(counter(kvm, 'faultRetries')).toBe(0);
    clean(kvm);
  });

  it(`migrate_pages() gives up after ${MIGRATE_PAGES_RETRY} passes on a page that stays pinned, each pass telling KVM; once unpinned it migrates`, () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    const val = wval(v0);
    guestAccess(kvm, v0, 5, true, val);
    const f = hostFrame(kvm, 5);
    getPage(kvm, f); // a pin (get_user_pages) held across the migration
    const before = seq(kvm);
    expect(migratePage(kvm, host, 5, false)).toBe(false);
    expect(seq(kvm) - before).toBe(MIGRATE_PAGES_RETRY);
    expect(counter(kvm, 'hostMigrationRetries')).toBe(MIGRATE_PAGES_RETRY);
    expect(hostFrame(kvm, 5)).toBe(f);
    expect(hpte(kvm, 5) & HPTE_MIGRATING).toBe(0);
    putPage(kvm, host, f);
    expect(migratePage(kvm, host, 5, false)).toBe(true);
    expect(guestAccess(kvm, v0, 5, false, 0)).toBe(val);
    clean(kvm);
  });

  it('a THP collapse over a page a fault holds tells KVM first, then fails on the extra reference; the fault retries; later it collapses', () => {
    const w = world({ backing: 'thp' });
    const { kvm, host } = w;
    const [v0] = w.vcpus;
    const val = wval(v0);
    expect(splitHugePage(kvm, host, 0, scratch())).toBe(true);
    const { actor: v0s, sched } = scripted(kvm, 0);
    let collapsed = true;
    let seqMoved = false;
    sched.at('fault.gfn_to_pfn', () => {
      const before = seq(kvm);
      collapsed = collapseHugePage(kvm, host, 0, scratch());
      seqMoved = seq(kvm) !== before;
    });
    expect(guestAccess(kvm, v0s, 5, true, val)).toBe(val);
    expect(sched.pending()).toEqual([]);
    expect(collapsed).toBe(false);
    expect(seqMoved).toBe(true);
    expect(counter(kvm, 'faultRetries')).toBe(1);
    expect(s2Lookup(kvm, 5).level).toBe(LEVEL_PTE);
    clean(kvm);
    expect(collapseHugePage(kvm, host, 0, scratch())).toBe(true);
    expect(guestAccess(kvm, v0, 5, false, 0)).toBe(val);
    clean(kvm);
  });

  it('KSM does not write-protect a page a fault holds (page_count check), and merges it once released', () => {
    const w = world({ backing: 'anon' });
    const { kvm, host } = w;
    const { actor: v0, sched } = scripted(kvm, 0);
    let merged = true;
    sched.at('fault.gfn_to_pfn', () => {
      merged = ksmMerge(kvm, host, 5, 6);
    });
    expect(guestAccess(kvm, v0, 6, false, 0)).toBe(0);
    expect(sched.pending()).toEqual([]);
    expect(merged).toBe(false);
    expect(hpte(kvm, 6) & HPTE_WRITE).not.toBe(0);
    clean(kvm);
    expect(ksmMerge(kvm, host, 5, 6)).toBe(true);
    expect(hostFrame(kvm, 6)).toBe(hostFrame(kvm, 5));
    clean(kvm);
  });

  it('a copy-on-write of the page KSM merges into, between its write-protect and replace_page(), leaves the frame alive on KSM\'s reference: the other page maps it, nothing is freed twice', () => {
    const w = world({ backing: 'anon' });
    const { kvm } = w;
    const [v0] = w.vcpus;
    const { actor: ksm, sched } = scripted(kvm, kvm.layout.hostActor);
    const same = wval(v0);
    guestAccess(kvm, v0, 5, true, same);
    guestAccess(kvm, v0, 6, true, same);
    const fa = hostFrame(kvm, 5);
    const fb = hostFrame(kvm, 6);
    // The scanner's host PTE locks: its lookups of 5 and 6, then
    // write_protect_page() of 5 (twice: look, then change); the fifth is
    // write_protect_page() of 6: the guest writes page 5 there.
    const later = wval(v0);
    let cow = false;
    for (let i = 0; i < 4; i++) sched.at('hostpt.lock', () => {});
    sched.at('hostpt.lock', () => {
      expect(hpte(kvm, 5) & HPTE_WRITE).toBe(0);
      guestAccess(kvm, v0, 5, true, later);
      cow = hostFrame(kvm, 5) !== fa;
    });
    expect(ksmMerge(kvm, ksm, 5, 6)).toBe(true);
    expect(sched.pending()).toEqual([]);
    expect(cow).toBe(true);
    expect(hostFrame(kvm, 6)).toBe(fa);
    expect(frameRef(kvm, fa)).toBe(1);
    expect(frameRef(kvm, fb)).toBe(0);
    expect(guestAccess(kvm, v0, 6, false, 0)).toBe(same);
    expect(guestAccess(kvm, v0, 5, false, 0)).toBe(later);
    clean(kvm);
  });
});

describe('aiming at pages in use and at edges', () => {
  it('the host-MM actor reads the page a vCPU is using from its TARGET_GFN word (none, or outside RAM: -1)', () => {
    const { kvm } = world({ backing: 'anon' });
    const word = kvm.actorWord(1, ACTOR.TARGET_GFN);
    expect(vcpuTargetGfn(kvm, 1)).toBe(-1);
    Atomics.store(kvm.m, word, 1234 + 1);
    expect(vcpuTargetGfn(kvm, 1)).toBe(1234);
    Atomics.store(kvm.m, word, kvm.layout.ramPages + 1);
    expect(vcpuTargetGfn(kvm, 1)).toBe(-1);
  });

  it('edge accesses cover the slot ends, both ends of bitmap words and of 2 MiB regions, and the page under a host operation, and nothing else (seed 42)', () => {
    const { kvm } = world({ backing: 'anon' });
    const ram = kvm.layout.ramPages;
    const busy = 777;
    Atomics.store(kvm.m, kvm.actorWord(kvm.layout.hostActor, ACTOR.TARGET_GFN), busy + 1);
    const rng = new XorShift32(42);
    const seen = new Set<number>();
    for (let i = 0; i < 4000; i++) seen.add(edgeGfn(kvm, rng, ram));
    const kinds = { slotFirst: 0, slotLast: 0, wordFirst: 0, wordLast: 0, regionFirst: 0, regionLast: 0, hostBusy: 0 };
    for (const g of seen) {
      if (g === busy) kinds.hostBusy++;
      else if (g === 0) kinds.slotFirst++;
      else if (g === ram - 1) kinds.slotLast++;
      else if (g % 512 === 0) kinds.regionFirst++;
      else if (g % 512 === 511) kinds.regionLast++;
      else if (g % 32 === 0) kinds.wordFirst++;
      else if (g % 32 === 31) kinds.wordLast++;
      else throw new Error(`seed 42: edgeGfn gave ${g}, which is no edge`);
    }
    for (const [k, n] of Object.entries(kinds)) expect(n, `seed 42: no ${k} edge in 4000 draws`).toBeGreaterThan(0);
  });
});

describe('sim-mode site odds', () => {
  it('the sites that open the windows named by the protocol preempt at 1 in 8 or better; PCT change points fall there; long loops keep the default', () => {
    expect(SITE_PREEMPT_EVERY.length).toBe(SITE_NAMES.length);
    const windows: SiteName[] = [
      'fault.seq', // after the notifier-sequence snapshot
      'fault.gfn_to_pfn', // after the host lookup
      'lock.release', // around lock release
      'memslot.publish', // between memslot publish and write-protect
      'memslot.published',
      'srcu.sync',
      'notifier.start', // inside notifier start/end
      'notifier.end',
      'tlb.flush', // between clear and flush
    ];
    for (const s of windows) {
      expect(SITE_PREEMPT_EVERY[SITE[s]], s).toBeLessThanOrEqual(8);
      expect(WINDOW_SITES[SITE[s]], s).toBe(true);
    }
    for (const s of ['pgtable.walk', 'hostpt.lock', 'migrate.copy', 'park'] as SiteName[]) {
      expect(SITE_PREEMPT_EVERY[SITE[s]], s).toBe(DEFAULT_PREEMPT_EVERY);
      expect(WINDOW_SITES[SITE[s]], s).toBe(false);
    }
  });
});
