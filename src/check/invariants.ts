/**
 * The invariants of docs/design.md section 3 that are checked on a stopped world
 * (all actors parked), plus the reader of violations recorded live
 * (`frame-use-after-free`, `lock-held`, `kernel-bug`) in the shared ring.
 *
 * Each check returns violations with the page or table involved; none can
 * pass vacuously (test/invariants.test.ts breaks a state by hand for each).
 */
import { dirtyRingEnabled, dirtyRingHoldsPage } from '../kvm/dirtyring.js';
import type { Kvm } from '../kvm/kvm.js';
import { CTRL, FRAMES_PER_GROUP, MAX_MEMSLOTS, VIOLATION_WORDS, MAX_VIOLATIONS } from '../shm/layout.js';
import {
  LEVEL_PMD,
  LEVEL_PTE,
  PTRS_PER_TABLE,
  descIsLocked,
  descIsTable,
  descOa,
  descValid,
  descWritable,
  describeDesc,
  pmdIsBlock,
} from '../arch/stage2.js';
import { TABLE_CACHED, TABLE_FREE, TABLE_LIVE, TABLE_RCU, s2Lookup, KBUG, LOCK_HELD, UAF, kvmPgd, splitCachePages } from '../kvm/pgtable.js';
import { rcuPendingTables } from '../sync/rcu.js';
import { HPTE_FRAME_MASK, HPTE_HUGE, HPTE_MIGRATING, HPTE_PRESENT, HPTE_WRITE } from '../mm/hostpt.js';
import { FC_POOL_EMPTY, FRAME_DEVICE, FRAME_THP, ZERO_PFN, forEachFreeFrame, freeFrameCount, isHugeZeroFrame, zeroPageExpectedRef } from '../mm/frames.js';
import { SHADOW_DISCARDED } from '../mm/hostops.js';
import { LOG_OFF, LOG_ON, SLOTW, kvmDirtyLogManualProtectAndInitSet, rangeWriteProtectedSinceLogging, slotWord } from '../kvm/memslot.js';
import { INV, INVARIANTS, type InvariantName } from './names.js';
import { actorName } from '../vm.js';
import type { Actor } from '../sync/actor.js';
import { LS } from '../sync/locksites.js';
import { LIVELOCK_LEVEL_SHIFT, LIVELOCK_TOTAL_SHIFT, LIVELOCK_WRITE, STALL, UAF_WRITE } from '../kvm/vcpu.js';
import { tlbLiveBase } from '../kvm/tlb.js';
import { describeBbm } from './bbm.js';

export interface Violation {
  invariant: InvariantName;
  message: string;
  actor: string;
  /** The guest page involved, if any. */
  gfn?: number;
  /** The table page involved, if any. */
  table?: number;
}

/** At most this many violations per check are listed; the rest are counted. */
export const MAX_LISTED = 8;

class Collector {
  readonly list: Violation[] = [];
  more = 0;
  constructor(private readonly invariant: InvariantName) {}
  add(message: string, extra: Partial<Violation> = {}): void {
    if (this.list.length < MAX_LISTED) this.list.push({ invariant: this.invariant, message, actor: 'orchestrator', ...extra });
    else this.more++;
  }
  done(): Violation[] {
    if (this.more > 0) {
      this.list.push({ invariant: this.invariant, message: `... and ${this.more} more of the same kind`, actor: 'orchestrator' });
    }
    return this.list;
  }
}

function hostValue(kvm: Kvm, gfn: number): { present: boolean; frame: number; value: number } {
  const m = kvm.m;
  const v = Atomics.load(m, kvm.layout.hpte + gfn);
  if ((v & HPTE_PRESENT) === 0) return { present: false, frame: 0, value: 0 };
  const frame = v & HPTE_FRAME_MASK;
  return { present: true, frame, value: Atomics.load(m, kvm.layout.frameData + frame) };
}

/** shadow-equal: memory read through the host mapping equals what the guest wrote last. */
export function checkShadowEqual(kvm: Kvm): Violation[] {
  const c = new Collector('shadow-equal');
  const m = kvm.m;
  const L = kvm.layout;
  for (let gfn = 0; gfn < L.pages; gfn++) {
    const want = m[L.shadow + gfn];
    if (want === SHADOW_DISCARDED) continue;
    // hostValue() inlined: this loop runs over the whole guest at every check.
    const hp = m[L.hpte + gfn];
    const got = (hp & HPTE_PRESENT) === 0 ? 0 : m[L.frameData + (hp & HPTE_FRAME_MASK)];
    if (got !== want) {
      const h = hostValue(kvm, gfn);
      c.add(
        `gfn ${gfn}: guest last wrote ${fmtValue(want)} but the host mapping reads ${fmtValue(h.value)} (frame ${h.present ? h.frame : 'none'}): a write went to a stale or freed frame, or was lost`,
        { gfn },
      );
    }
  }
  return c.done();
}

/**
 * table-conservation: in use == reachable from the root, refcount == 1 +
 * valid entries; no entry left LOCKED when no walker runs (a LOCKED entry
 * is not counted: arm64 6.2 on); a table unlinked and waiting for an RCU
 * grace period is on the callback list, unreachable, and keeps its counts.
 */
export function checkTableConservation(kvm: Kvm): Violation[] {
  const c = new Collector('table-conservation');
  const m = kvm.m;
  const L = kvm.layout;
  const reached = new Uint8Array(L.tables);
  const visit = (table: number, level: number, firstGfn: number): void => {
    if (reached[table]) {
      c.add(`table #${table} is reachable twice (second time at level ${level}, gfn ${firstGfn})`, { table });
      return;
    }
    reached[table] = 1;
    const state = m[L.tableState + table];
    if (state !== TABLE_LIVE) c.add(`table #${table} is reachable from the root but its page is ${state === TABLE_FREE ? 'free' : 'in a memory cache'}`, { table });
    let valid = 0;
    const span = level === 1 ? 1 << 18 : level === 2 ? 1 << 9 : 1;
    const base = L.tablesBase + table * PTRS_PER_TABLE;
    for (let i = 0; i < PTRS_PER_TABLE; i++) {
      const d = m[base + i];
      if (descIsLocked(d)) {
        c.add(`entry ${i} of table #${table} (level ${level}, gfn ${firstGfn + i * span}) is LOCKED with no walker running: a break never followed by its make`, {
          table,
          gfn: firstGfn + i * span,
        });
        continue;
      }
      if (!descValid(d)) continue;
      valid++;
      if (level < LEVEL_PTE && descIsTable(d)) visit(descOa(d), level + 1, firstGfn + i * span);
    }
    const ref = m[L.tableRef + table];
    if (ref !== 1 + valid) {
      c.add(`table #${table} (level ${level}, from gfn ${firstGfn}) has refcount ${ref} but ${valid} valid entries (expected ${1 + valid})`, {
        table,
        gfn: firstGfn,
      });
    }
  };
  // The root is kvm->arch.pgd; between two VMs (freed, NULL) nothing is reachable.
  const root = kvmPgd(kvm);
  if (root >= 0) visit(root, 1, 0);
  // Pages in memory caches are allocated but not in the tables.
  const cached = new Uint8Array(L.tables);
  for (let a = 0; a < L.nActors; a++) {
    const base = L.memcache + a * L.memcacheWords;
    for (let i = 0; i < m[base]; i++) cached[m[base + 1 + i]] = 1;
  }
  // kvm->arch.mmu.split_page_cache (eager page splitting): allocated, in no
  // table; freed when logging goes off (kvm_arch_commit_memory_region), so
  // it holds nothing while no slot logs.
  const split = splitCachePages(kvm);
  for (const t of split) cached[t] = 1;
  if (split.length > 0) {
    let logging = false;
    for (let s = 0; s < MAX_MEMSLOTS; s++) {
      if (m[slotWord(kvm, s, SLOTW.ACTIVE)] !== 0 && Atomics.load(m, slotWord(kvm, s, SLOTW.LOG_STATE)) !== LOG_OFF) logging = true;
    }
    if (!logging) {
      c.add(`the eager-split cache holds ${split.length} table pages (#${split.slice(0, 4).join(', #')}${split.length > 4 ? ', ...' : ''}) while no slot is logging: kvm_arch_commit_memory_region frees it when logging goes off, so they leak`, {
        table: split[0],
      });
    }
  }
  const rcu = new Uint8Array(L.tables);
  for (const t of rcuPendingTables(kvm)) {
    if (rcu[t]) c.add(`table #${t} is queued twice for an RCU grace period (a double free to come)`, { table: t });
    rcu[t] = 1;
    if (reached[t]) c.add(`table #${t} waits for an RCU grace period to be freed but is still reachable from the root`, { table: t });
    if (m[L.tableState + t] !== TABLE_RCU) c.add(`table #${t} is queued for an RCU grace period but its page is in state ${m[L.tableState + t]}`, { table: t });
  }
  let free = 0;
  for (let t = 0; t < L.tables; t++) {
    const state = m[L.tableState + t];
    if (state === TABLE_FREE) free++;
    if (state === TABLE_RCU && !rcu[t]) c.add(`table #${t} was unlinked for an RCU grace period but is on no callback list: leaked`, { table: t });
    if (state === TABLE_LIVE && !reached[t]) {
      const ref = m[L.tableRef + t];
      let valid = 0;
      for (let i = 0; i < PTRS_PER_TABLE; i++) if (descValid(m[L.tablesBase + t * PTRS_PER_TABLE + i])) valid++;
      c.add(`table #${t} is in use (refcount ${ref}, ${valid} valid entries) but not reachable from the root: leaked`, { table: t });
    }
    if (state === TABLE_CACHED && !cached[t]) c.add(`table #${t} is marked cached but is in no memory cache`, { table: t });
  }
  if (free !== m[CTRL.TABLE_FREE_TOP]) c.add(`${free} table pages are free but the free list holds ${m[CTRL.TABLE_FREE_TOP]}`);
  return c.done();
}

/** no-block-while-logging: after logging-on returned, no writable block maps a logged slot. */
export function checkNoBlockWhileLogging(kvm: Kvm): Violation[] {
  const c = new Collector('no-block-while-logging');
  const m = kvm.m;
  for (let s = 0; s < MAX_MEMSLOTS; s++) {
    if (m[slotWord(kvm, s, SLOTW.ACTIVE)] === 0) continue;
    if (Atomics.load(m, slotWord(kvm, s, SLOTW.LOG_STATE)) !== LOG_ON) continue;
    forWritableBlocks(kvm, s, (gfn, desc) =>
      c.add(`slot ${s} is logging but gfn ${gfn}..${gfn + 511} is mapped by a writable block (${describeDesc(desc, LEVEL_PMD)}): writes to it are not logged`, { gfn }),
    );
  }
  return c.done();
}

/**
 * Each 2 MiB range of `slot` mapped by a writable block while the kernel
 * promises none: its first gfn and the block's descriptor. With
 * KVM_DIRTY_LOG_INITIALLY_SET nothing is write-protected at logging-on, so
 * a writable block is legal until a KVM_CLEAR_DIRTY_LOG write-protects a
 * page of its range (kvm_arch_mmu_enable_log_dirty_pt_masked then
 * write-protects the whole block, or splits it); only those ranges count.
 */
function forWritableBlocks(kvm: Kvm, slot: number, found: (gfn: number, desc: number) => void): void {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const end = base + m[slotWord(kvm, slot, SLOTW.NPAGES)];
  for (let gfn = base & ~511; gfn < end; gfn += 512) {
    const r = s2Lookup(kvm, gfn);
    if (r.level === LEVEL_PMD && descWritable(r.desc) && rangeWriteProtectedSinceLogging(kvm, slot, gfn, gfn + 512)) found(gfn, r.desc);
  }
}

/** Each page of `slot` mapped writable by a PTE whose dirty bit is clear: its gfn and descriptor. */
function forWritableUndirtyPages(kvm: Kvm, slot: number, found: (gfn: number, desc: number) => void): void {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const bitmap = m[slotWord(kvm, slot, SLOTW.BITMAP)];
  for (let i = 0; i < n; i++) {
    const r = s2Lookup(kvm, base + i);
    if (r.level !== LEVEL_PTE || !descWritable(r.desc)) continue;
    if (((Atomics.load(m, bitmap + (i >>> 5)) >>> (i & 31)) & 1) !== 0) continue;
    // With the dirty ring the page's entry is in a vCPU's ring (the bitmap is the backup one).
    if (dirtyRingEnabled(kvm) && dirtyRingHoldsPage(kvm, slot, i)) continue;
    found(base + i, r.desc);
  }
}

/**
 * no-block-while-logging at the instant it starts to hold: when logging-on
 * returns (KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES), the
 * migrator walks the slot's 2 MiB ranges under mmu_lock (the `check` site).
 * A writable block there was left by a fault that raced the enable; later in
 * a short logging period it may be gone (logging off makes it legal again)
 * before a stop-the-world check looks. Recorded as a live violation; returns
 * how many it found.
 */
export function checkLoggingOnReturned(kvm: Kvm, actor: Actor, slot: number): number {
  if (Atomics.load(kvm.m, slotWord(kvm, slot, SLOTW.LOG_STATE)) !== LOG_ON) return 0;
  let found = 0;
  kvm.mmuLock.lock(actor, LS.check);
  forWritableBlocks(kvm, slot, (gfn, desc) => {
    found++;
    kvm.violation(INV['no-block-while-logging'], actor.id, 1, slot, gfn, desc);
  });
  // With eager splitting the blocks became PTE tables at logging-on: the
  // new PTEs inherit the write-protect, so a writable one is a page a fault
  // made writable since, and that fault marked it dirty (the checker holds
  // mmu_lock: no fault is between its map and its mark_page_dirty). Only
  // with --eager-split-chunk, and not under INITIALLY_SET (nothing was
  // write-protected, and every bit starts set).
  if ((kvm.cfg.eagerSplitChunk ?? 0) > 0 && !kvmDirtyLogManualProtectAndInitSet(kvm)) {
    forWritableUndirtyPages(kvm, slot, (gfn, desc) => {
      if (found++ < 8) kvm.violation(INV['no-block-while-logging'], actor.id, 2, slot, gfn, desc);
    });
  }
  kvm.mmuLock.unlock(actor);
  return found;
}

/**
 * tlb-coherent: every TLB entry matches the tables: same level, same frame,
 * no more permission. A 4 KiB entry where the tables hold a block (or the
 * reverse) is a TLB conflict, as arm64 reports it.
 */
export function checkTlbCoherent(kvm: Kvm): Violation[] {
  const c = new Collector('tlb-coherent');
  const m = kvm.m;
  const L = kvm.layout;
  for (let v = 0; v < L.vcpus; v++) {
    const base = L.tlb + v * L.tlbWords;
    for (let s = 0; s < L.tlbPageSlots + L.tlbBlockSlots; s++) {
      const tag = tlbLiveBase(kvm, Atomics.load(m, base + s * 2));
      if (tag === 0) continue;
      const desc = Atomics.load(m, base + s * 2 + 1);
      const isBlock = s >= L.tlbPageSlots;
      const level = isBlock ? LEVEL_PMD : LEVEL_PTE;
      const gfn = isBlock ? (tag - 1) * 512 : tag - 1;
      const r = s2Lookup(kvm, gfn);
      const what = `vcpu${v} TLB holds ${describeDesc(desc, level)} for gfn ${gfn}`;
      if (r.level === 0) {
        c.add(`${what}, but the tables map nothing there (stale entry)`, { gfn, actor: `vcpu${v}` });
      } else if (r.level !== level) {
        c.add(`${what}, but the tables hold ${describeDesc(r.desc, r.level)}: TLB conflict (entries of two sizes)`, { gfn, actor: `vcpu${v}` });
      } else if (descOa(r.desc) !== descOa(desc)) {
        c.add(`${what}, but the tables map frame ${descOa(r.desc)} (stale translation)`, { gfn, actor: `vcpu${v}` });
      } else if (descWritable(desc) && !descWritable(r.desc)) {
        c.add(`${what}, but the tables map it read-only (stale write permission)`, { gfn, actor: `vcpu${v}` });
      }
    }
  }
  return c.done();
}

/** frame-use-after-free at quiescence: nothing maps (host or stage-2) a freed frame. */
export function checkFramesMappedAreLive(kvm: Kvm, leaves?: Stage2Leaves): Violation[] {
  const c = new Collector('frame-use-after-free');
  const m = kvm.m;
  const L = kvm.layout;
  for (let gfn = 0; gfn < L.pages; gfn++) {
    const h = m[L.hpte + gfn];
    if ((h & HPTE_PRESENT) !== 0) {
      const f = h & HPTE_FRAME_MASK;
      if (m[L.frameRef + f] <= 0) c.add(`the host maps gfn ${gfn} to frame ${f}, which is free`, { gfn });
    }
  }
  // Stage-2 leaves pointing at freed frames: the guest can write into them.
  forEachStage2Leaf(kvm, leaves, (gfn0, d, level) => {
    const n = level === LEVEL_PMD ? 512 : 1;
    for (let k = 0; k < n; k++) {
      const f = descOa(d) + k;
      if ((m[L.frameFlags + f] & FRAME_DEVICE) === 0 && m[L.frameRef + f] <= 0) {
        c.add(`stage-2 maps gfn ${gfn0 + k} to frame ${f}, which is free`, { gfn: gfn0 + k });
        break;
      }
    }
  });
  return c.done();
}

/** Per-VM scratch arrays of the frame check (sized once: checks run often on big guests). */
const frameScratch = new WeakMap<Kvm, { mapped: Int32Array; free: Uint8Array }>();

/**
 * frame-conservation: every host frame's refcount is explained, no free frame
 * is mapped, and free + used frames make the pool.
 *
 * The references the model holds, from src/mm and the fault path:
 * - each present host PTE holds one reference on its frame: do_anonymous_page
 *   and the populate hand out a frame with refcount 1 for its one mapping;
 *   KSM's replace_page takes one for every page that shares the frame; a THP
 *   or a hugetlb page counts each of its 512 frames on its own, one per PTE
 *   (the model keeps no compound head count); a migration entry still names
 *   the old frame and keeps its reference until remove_migration_ptes();
 * - device frames are mapped once and never refcounted by faults
 *   (kvm_is_device_pfn): one reference, the mapping's;
 * - stage 2 holds none: user_mem_abort() drops the gfn_to_pfn reference
 *   (kvm_release_pfn_clean) once mapped, and the MMU notifiers keep stage 2
 *   within what the host maps;
 * - the transient ones (a fault's gfn_to_pfn reference and the THP head it
 *   moves to in transparent_hugepage_adjust; the old frames of a migration,
 *   collapse, zap, CoW break or KSM merge between the host PTE switch and
 *   put_page) live inside one operation, and an actor parks only at its safe
 *   point, outside every operation: at a stop point there are none.
 * So at a stop point a frame's refcount equals the host PTEs that map it; a
 * frame with more is pinned for ever (page migration and THP collapse refuse
 * it, quietly), a frame with fewer is freed while mapped. A stage-2 leaf
 * (each of a block's 512 frames) must map the frame the host maps at that
 * page, and no free frame.
 */
export function checkFrameConservation(kvm: Kvm, leaves?: Stage2Leaves): Violation[] {
  // The pool's totals first (one line each), then frame by frame.
  const totals = new Collector('frame-conservation');
  const c = new Collector('frame-conservation');
  const m = kvm.m;
  const L = kvm.layout;
  const first = FRAMES_PER_GROUP; // group 0 is never used: frame 0 means "none"
  const pool = L.frames - first;
  let scratch = frameScratch.get(kvm);
  if (!scratch) {
    scratch = { mapped: new Int32Array(L.frames), free: new Uint8Array(L.frames) };
    frameScratch.set(kvm, scratch);
  }
  const { mapped, free } = scratch;
  mapped.fill(0);
  free.fill(0);

  let listed = 0;
  forEachFreeFrame(kvm, (f) => {
    listed++;
    if (f < first || f >= L.frames) c.add(`the free lists hold frame ${f}, outside the pool (frames ${first}..${L.frames - 1})`);
    else if (free[f]++ !== 0) c.add(`frame ${f} is on the free lists twice (freed twice)`);
  });
  if (listed !== freeFrameCount(kvm)) totals.add(`the free lists hold ${listed} frames but the allocator counts ${freeFrameCount(kvm)} free`);

  // Host page table: one reference per present entry (a migration entry included).
  for (let gfn = 0; gfn < L.pages; gfn++) {
    const h = m[L.hpte + gfn];
    if ((h & HPTE_PRESENT) === 0) continue;
    const f = h & HPTE_FRAME_MASK;
    // The zero page: reserved, outside the pool; its mappings hold no reference.
    if (f === ZERO_PFN) continue;
    if (f < first || f >= L.frames) {
      c.add(`the host maps gfn ${gfn} to frame ${f}, outside the pool`, { gfn });
      continue;
    }
    if (mapped[f]++ === 0 && free[f]) c.add(`the host maps gfn ${gfn} to frame ${f}, which is on the free lists`, { gfn });
  }

  let used = 0;
  let freeCount = 0;
  for (let f = first; f < L.frames; f++) {
    const ref = m[L.frameRef + f];
    if (free[f]) {
      freeCount++;
      if (ref !== 0) c.add(`frame ${f} is on the free lists but has refcount ${ref}`);
      continue;
    }
    if (ref > 0) used++;
    const n = mapped[f];
    if ((m[L.frameFlags + f] & FRAME_THP) !== 0) {
      // A subpage of a compound THP (the huge zero page's included): one
      // reference for the compound page, whether the host maps it by a PMD,
      // by a PTE or (since 4.5, after a partial unmap) not at all; and one
      // hva maps it at most (src/mm/frames.ts), but for the huge zero page,
      // which every untouched THP range read so far maps (mm_get_huge_zero_page
      // counts its users apart, not in the page's refcount).
      if (ref === 1 && (n <= 1 || isHugeZeroFrame(kvm, f))) continue;
      c.add(
        ref === 1
          ? `THP subpage frame ${f} is mapped ${n} times by the host${mappers(kvm, f, n)}: a compound subpage is mapped at its own hva only`
          : `THP subpage frame ${f} has refcount ${ref}, expected 1 (the compound page's)${mappers(kvm, f, n)}: ${ref > 1 ? 'a leaked get_page' : 'a reference put too often'}`,
      );
      continue;
    }
    if (ref === n && ref > 0) continue;
    if (ref <= 0 && n === 0) {
      c.add(`frame ${f} has refcount ${ref} but is on no free list: lost to the pool`);
    } else if (ref > n) {
      c.add(
        `frame ${f} has refcount ${ref} but the host maps it ${n} time${n === 1 ? '' : 's'}${mappers(kvm, f, n)}: ${ref - n} reference${ref - n === 1 ? '' : 's'} nothing explains (a leaked get_page: the frame is pinned for ever, page migration and THP collapse refuse it)`,
      );
    } else {
      c.add(`frame ${f} has refcount ${ref} but the host maps it ${n} time${n === 1 ? '' : 's'}${mappers(kvm, f, n)}: a reference was put too often, the frame is freed while mapped`);
    }
  }
  // The zero page: 1 for the reservation + every reference KVM's lookups leaked (zeroPageExpectedRef()).
  const zref = Atomics.load(m, L.frameRef + ZERO_PFN);
  const zwant = zeroPageExpectedRef(kvm);
  if (zref !== zwant) totals.add(`the zero page has refcount ${zref}, expected ${zwant} (1 + the references get_user_pages() took and kvm_release_pfn_clean() skips)`);
  if (freeCount + used !== pool) totals.add(`${freeCount} free + ${used} used frames = ${freeCount + used}, but the pool has ${pool}`);

  // Stage 2: every leaf frame (a block's 512) is the host's frame at that page, and not free.
  forEachStage2Leaf(kvm, leaves, (gfn0, d, level) => {
    const level2 = level === LEVEL_PMD;
    const n = level2 ? FRAMES_PER_GROUP : 1;
    const what = (gfn: number, f: number): string => `stage 2 maps gfn ${gfn} to frame ${f}${level2 ? ` (block ${describeDesc(d, LEVEL_PMD)})` : ''}`;
    for (let k = 0; k < n; k++) {
      const gfn = gfn0 + k;
      const f = descOa(d) + k;
      if (f >= first && f < L.frames && free[f]) {
        c.add(`${what(gfn, f)}, which is on the free lists`, { gfn });
        break;
      }
      const h = gfn < L.pages ? m[L.hpte + gfn] : 0;
      const hf = (h & HPTE_PRESENT) !== 0 ? h & HPTE_FRAME_MASK : 0;
      if (hf !== f) {
        c.add(`${what(gfn, f)}, but the host maps ${hf === 0 ? 'nothing' : `frame ${hf}`} there: a stage-2 mapping no MMU notifier removed`, { gfn });
        break;
      }
    }
  });
  return [...totals.done(), ...c.done()];
}

/** ", at gfn a, b, ..." for the first few host pages that map frame f. */
function mappers(kvm: Kvm, f: number, n: number): string {
  if (n === 0) return '';
  const m = kvm.m;
  const L = kvm.layout;
  const at: number[] = [];
  for (let gfn = 0; gfn < L.pages && at.length < 4; gfn++) {
    const h = Atomics.load(m, L.hpte + gfn);
    if ((h & HPTE_PRESENT) !== 0 && (h & HPTE_FRAME_MASK) === f) at.push(gfn);
  }
  return ` (at gfn ${at.join(', ')}${n > at.length ? ', ...' : ''})`;
}

/** lock-held at quiescence: nobody parked holds mmu_lock. */
export function checkLockFree(kvm: Kvm): Violation[] {
  const c = new Collector('lock-held');
  const owner = kvm.mmuLock.owner();
  if (owner >= 0) c.add(`mmu_lock is held by ${actorName(kvm, owner)} at a stop-the-world point`);
  const readers = kvm.mmuLock.readers();
  if (readers > 0) c.add(`the read side of mmu_lock is held ${readers} time(s) at a stop-the-world point`);
  if (Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT) !== 0) {
    c.add(`mmu_notifier_count is ${Atomics.load(kvm.m, CTRL.MMU_NOTIFIER_COUNT)} at a stop-the-world point (an invalidation never ended)`);
  }
  return c.done();
}

/**
 * The checks of a stopped world as the orchestrator runs them: that nobody
 * parked holds mmu_lock first, then the table walks under mmu_lock, taken by
 * `checker` at the `check` call site, as the kernel's stage-2 walkers
 * (kvm_pgtable_walk() callers, the ptdump debugfs file) hold kvm->mmu_lock.
 * Nobody else runs then, so the lock is free; its lock_stat row shows how
 * long the checks keep the lock. When the lock is not free (a parked holder
 * is a lock-held violation; a stopped waiter holds a ticket), the walks run
 * without it rather than deadlock.
 */
export function checkStoppedWorld(kvm: Kvm, checker: Actor): Violation[] {
  const free = checkLockFree(kvm);
  // A try-lock: an actor stopped for good while it waited for the lock (a
  // run's end) still holds a ticket, and nobody would ever serve ours.
  if (kvm.mmuLock.owner() >= 0 || !kvm.mmuLock.tryLock(checker, LS.check)) return [...checkTables(kvm), ...free];
  try {
    return [...checkTables(kvm), ...free];
  } finally {
    kvm.mmuLock.unlock(checker);
  }
}

/** The quiescence checks that read the tables, the TLBs, the frames and the shadow. */
function checkTables(kvm: Kvm): Violation[] {
  // One walk of the stage-2 tables for the three checks that read every leaf.
  const leaves = collectStage2Leaves(kvm);
  return [
    ...checkShadowEqual(kvm),
    ...checkTableConservation(kvm),
    ...checkNoBlockWhileLogging(kvm),
    ...checkTlbCoherent(kvm),
    ...checkFramesMappedAreLive(kvm, leaves),
    ...checkFrameConservation(kvm, leaves),
    ...checkStage2HostCoherent(kvm, leaves),
  ];
}

/** Every quiescence check (without taking mmu_lock: for a world built by hand). */
export function checkQuiescent(kvm: Kvm): Violation[] {
  const leaves = collectStage2Leaves(kvm);
  return [
    ...checkShadowEqual(kvm),
    ...checkTableConservation(kvm),
    ...checkNoBlockWhileLogging(kvm),
    ...checkTlbCoherent(kvm),
    ...checkFramesMappedAreLive(kvm, leaves),
    ...checkFrameConservation(kvm, leaves),
    ...checkLockFree(kvm),
    ...checkStage2HostCoherent(kvm, leaves),
  ];
}

export function fmtValue(v: number): string {
  if (v === 0) return '0';
  if (v === SHADOW_DISCARDED) return 'discarded';
  const u = v >>> 0;
  return `0x${u.toString(16)} (vcpu${u & 127} write #${u >>> 7})`;
}

const KBUG_TEXT: Record<number, string> = {
  [KBUG.SET_PTE_ON_HUGE_PMD]: 'stage2_set_pte() met a huge PMD',
  [KBUG.TABLE_REF_UNDERFLOW]: 'table page refcount underflow',
  [KBUG.FRAME_REF_UNDERFLOW]: 'frame refcount underflow',
  [KBUG.NOTIFIER_COUNT_NEGATIVE]: 'mmu_notifier_count went negative',
  [KBUG.TABLE_POOL_EMPTY]: 'table page pool exhausted (mmu_topup_memory_cache -ENOMEM)',
  [KBUG.LOCKED_STATE]: 'WARN_ON: an exclusive walker met a LOCKED entry, or stage2_make_pte() on an entry not LOCKED',
  [KBUG.SPLIT_LAST_LEVEL]: 'WARN_ON(ctx->level == KVM_PGTABLE_LAST_LEVEL): the map walker asked to split a page',
  [KBUG.LOCKED_AT_UNLOCK]: 'mmu_lock released with a stage-2 entry still LOCKED by this walker (a break never followed by its make)',
  [KBUG.DIRTY_RING_FULL]: 'WARN_ON_ONCE(kvm_dirty_ring_full(ring)) in kvm_dirty_ring_push(): a vCPU pushed into its full dirty ring and overwrote an entry not yet reset (args: vCPU, dirty_index, gfn)',
  [KBUG.WRITE_WITHOUT_VCPU]: 'WARN_ON_ONCE(!vcpu && !kvm_arch_allow_write_without_running_vcpu()) in mark_page_dirty_in_slot(): a page dirtied without a running vCPU outside a vgic table save (args: gfn)',
};

const ERRNO_NAME: Record<number, string> = { [-12]: '-ENOMEM', [-14]: '-EFAULT' };

/** The `progress` violation of an access given up (src/kvm/vcpu.ts reportLivelock). */
function livelockMessage(kind: number, gfn: number, stalled: number, desc: number, detail: number): string {
  const reason = kind & 15;
  const level = (kind >>> LIVELOCK_LEVEL_SHIFT) & 3;
  const write = (kind & LIVELOCK_WRITE) !== 0;
  const total = kind >>> LIVELOCK_TOTAL_SHIFT;
  const entry = level === 0 ? 'no stage-2 entry (nothing mapped)' : `stage-2 entry at level ${level}: ${describeDesc(desc, level)}`;
  let on: string;
  switch (reason) {
    case STALL.RETRY:
      on = `mmu_notifier_retry(): user_mem_abort() returns -EAGAIN every time (mmu_notifier_count ${detail}; the sequence does not move)`;
      break;
    case STALL.ERROR:
      on = `user_mem_abort() returning ${ERRNO_NAME[detail] ?? 'errno'} (${detail})`;
      break;
    case STALL.PERMISSION:
      on = 'a permission fault: each fault returns, but the entry stays read-only';
      break;
    case STALL.UNMAPPED:
      on = 'a translation fault: each fault returns, but nothing stays mapped';
      break;
    default:
      on = 'an entry that changes under every fault without ever letting the access complete';
  }
  return `livelock: gave up a guest ${write ? 'write' : 'read'} of gfn ${gfn} after ${total} faults, the last ${stalled} in a row changing nothing (neither the entry nor mmu_notifier_seq); ${entry}; it keeps faulting on ${on}`;
}

/** Violations recorded as they happened, from the shared ring (in order). */
export function liveViolations(kvm: Kvm): Violation[] {
  const m = kvm.m;
  const L = kvm.layout;
  const n = Math.min(Atomics.load(m, CTRL.VIOLATION_COUNT), MAX_VIOLATIONS);
  const out: Violation[] = [];
  for (let i = 0; i < n; i++) {
    const at = L.violations + i * VIOLATION_WORDS;
    const inv = Atomics.load(m, at) - 1;
    if (inv < 0) continue; // not yet published
    const actor = m[at + 1];
    const kind = m[at + 2];
    const a = m[at + 3];
    const b = m[at + 4];
    const cc = m[at + 5];
    const name = INVARIANTS[inv];
    let message: string;
    const extra: Partial<Violation> = {};
    switch (name) {
      case 'frame-use-after-free':
        message =
          kind === UAF_WRITE
            ? `guest write of ${fmtValue(cc)} to gfn ${a} landed in frame ${b}, whose refcount is zero (freed)`
            : `use of freed frame ${b} at gfn ${a}`;
        extra.gfn = a;
        break;
      case 'lock-held': {
        const tableIdx = Math.floor((a - L.tablesBase) / PTRS_PER_TABLE);
        const where = `stage-2 entry ${(a - L.tablesBase) % PTRS_PER_TABLE} of table #${tableIdx}`;
        if (kind === LOCK_HELD.EXCLUSIVE_UNDER_READ) {
          message = `${where} stored (WRITE_ONCE, new value ${describeDesc(b, LEVEL_PTE)}) under the read side of mmu_lock only: an exclusive write needs the write side, a shared one a compare-and-swap`;
        } else if (kind === LOCK_HELD.MAKE_NOT_LOCKED) {
          message = `${where}: stage2_make_pte() of ${describeDesc(b, LEVEL_PTE)} over ${describeDesc(cc, LEVEL_PTE)}, not an entry this walker LOCKED`;
        } else {
          message = `${where} written (new value ${describeDesc(b, LEVEL_PTE)}) without mmu_lock (held by ${actorName(kvm, cc)})`;
        }
        extra.table = tableIdx;
        break;
      }
      case 'kernel-bug':
        message = `${KBUG_TEXT[kind] ?? `assertion ${kind}`} (args ${a}, ${b}, ${cc})`;
        if (kind === KBUG.SET_PTE_ON_HUGE_PMD) {
          message = `stage2_set_pte() ${cc ? 'from a fault' : 'from change_pte (no cache)'} met a huge PMD at gfn ${a} (${describeDesc(b, LEVEL_PMD)}): the kernel would treat the block as a table`;
          extra.gfn = a;
        }
        break;
      case 'table-conservation':
        message =
          kind === KBUG.TABLE_POOL_EMPTY
            ? `the pool of ${a} table pages ran dry (mmu_topup_memory_cache -ENOMEM): far more table pages are in use than a fully split guest needs, so tables leak`
            : `table-conservation (kind ${kind}, args ${a}, ${b}, ${cc})`;
        break;
      case 'migration-equal':
        message =
          kind === 1
            ? `gfn ${a}: after stop-and-copy the destination holds ${fmtValue(b)} but the source holds ${fmtValue(cc)}: a write was never reported dirty`
            : `... and ${a} more pages differ after stop-and-copy`;
        if (kind === 1) extra.gfn = a;
        break;
      case 'no-block-while-logging':
        message =
          kind === 2
            ? `slot ${a}: when logging-on returned (eager splitting on), gfn ${b} was mapped writable (${describeDesc(cc, LEVEL_PTE)}) but is not dirty: the split did not keep the block's write-protect, and writes to it are not logged`
            : `slot ${a}: when logging-on returned, gfn ${b}..${b + 511} was mapped by a writable block (${describeDesc(cc, LEVEL_PMD)}): writes to it are not logged`;
        extra.gfn = b;
        break;
      case 'selftest-dirty-log':
        extra.gfn = a;
        message =
          kind === 1
            ? `gfn ${a} held iteration ${cc - 1}'s value after the log was collected, so it must be dirty in iteration ${cc}'s log, but it is clean (holds ${fmtValue(b)}): a write was not logged`
            : kind === 2
              ? `gfn ${a} is dirty in iteration ${cc}'s log but holds ${fmtValue(b)}, neither this nor the previous iteration's value`
              : `gfn ${a} holds ${fmtValue(b)}, a value from a later iteration than ${cc}`;
        break;
      case 'progress':
        message = livelockMessage(kind, a, b, cc, m[at + 6]);
        extra.gfn = a;
        break;
      case 'grace-period':
        message = `synchronize_srcu() returned while ${actorName(kvm, a)} was still inside the SRCU read section that was open when the grace period began: a reader of the replaced memslot outlives the grace period`;
        break;
      case 'frame-conservation':
        message =
          kind === FC_POOL_EMPTY
            ? `the host frame pool (${a} frames) ran dry: a fault or host operation found no free frame. The pool holds every guest page plus spare groups, so frames leak (references never put)`
            : `frame-conservation (kind ${kind}, args ${a}, ${b}, ${cc})`;
        break;
      case 'break-before-make': {
        const r = describeBbm(kvm, kind, a, b, cc, m[at + 6]);
        message = r.message;
        if (r.gfn !== undefined) extra.gfn = r.gfn;
        break;
      }
      case 'table-use-after-free':
        message = describeTableUseAfterFree(kind, a, b, cc);
        if (a >= 0) extra.table = a;
        break;
      case 'rcu-use-after-free':
        message = `a shared walk (under rcu_read_lock): ${describeTableUseAfterFree(kind, a, b, cc)}; an unlinked table must wait for an RCU grace period`;
        if (a >= 0) extra.table = a;
        break;
      default:
        message = `${name} (kind ${kind}, args ${a}, ${b}, ${cc})`;
    }
    out.push({ invariant: name, message, actor: actorName(kvm, actor), ...extra });
  }
  const total = Atomics.load(m, CTRL.VIOLATION_COUNT);
  if (total > MAX_VIOLATIONS) {
    out.push({ invariant: out[0]?.invariant ?? 'kernel-bug', message: `... ${total - MAX_VIOLATIONS} more live violations not kept`, actor: 'orchestrator' });
  }
  return out;
}


/**
 * stage2-host-coherent: the secondary MMU follows the primary one. Every
 * valid stage-2 leaf, each of a block's 512 pages, maps the frame the host
 * page table maps at that hva (hva page == gfn in this model), with no more
 * permission than the host entry gives. The MMU notifiers exist to keep this
 * true: a change of the host entry is bracketed by invalidate_range_start/end
 * (or announced by change_pte), and a fault maps only what mmu_notifier_retry()
 * says is still current. While an invalidation is in progress the stage-2
 * side may lag the host (its range is being unmapped), so the check is
 * skipped when mmu_notifier_count is not 0; at a stop-the-world point it is 0
 * unless an invalidation never ended (a lock-held violation then).
 * A block over a THP the host maps partly by PTEs, with some subpages
 * unmapped or remapped (the 4.5 profile), breaks it: the guest reads and
 * writes memory the host no longer has at that address.
 */
export function checkStage2HostCoherent(kvm: Kvm, leaves?: Stage2Leaves): Violation[] {
  const c = new Collector('stage2-host-coherent');
  const m = kvm.m;
  const L = kvm.layout;
  if (Atomics.load(m, CTRL.MMU_NOTIFIER_COUNT) !== 0) return c.done();
  const leaf = (gfn: number, d: number, level: number, first: number): boolean => {
    const frame = descOa(d) + (gfn - first);
    const h = m[L.hpte + gfn];
    // Built only for a report: this runs for every mapped page at every check.
    const what = (): string => `stage-2 ${level === LEVEL_PMD ? `${describeDesc(d, LEVEL_PMD)} over gfn ${first}..${first + 511}` : describeDesc(d, LEVEL_PTE)} maps gfn ${gfn} to frame ${frame}`;
    if ((h & HPTE_PRESENT) === 0) {
      c.add(`${what()}, but the host maps nothing there${(h & HPTE_MIGRATING) !== 0 ? ' (a migration entry)' : ''}: the guest uses memory the host has unmapped`, { gfn });
      return false;
    }
    const hf = h & HPTE_FRAME_MASK;
    if (hf !== frame) {
      c.add(`${what()}, but the host maps frame ${hf}${(h & HPTE_HUGE) !== 0 ? ' by a PMD' : ' by a PTE'}: guest and host see different memory at that address`, { gfn });
      return false;
    }
    if (descWritable(d) && (h & HPTE_WRITE) === 0) {
      c.add(`${what()} writable, but the host maps it read-only: the guest may write what the host write-protected`, { gfn });
      return false;
    }
    return true;
  };
  forEachStage2Leaf(kvm, leaves, (first, d, level) => {
    const n = level === LEVEL_PMD ? 512 : 1;
    // One report per leaf: the first page of a block that disagrees.
    for (let k = 0; k < n; k++) if (!leaf(first + k, d, level, first)) break;
  });
  return c.done();
}

/**
 * The valid stage-2 leaves of the current root, in walk order: for each, the
 * first gfn it maps, its descriptor and its level (LEVEL_PMD for a block of
 * 512 pages, LEVEL_PTE for a page). One walk serves every check of a stop
 * point (the world is stopped, or the caller holds mmu_lock: no entry
 * changes meanwhile).
 */
export interface Stage2Leaves {
  count: number;
  gfn: Int32Array;
  desc: Int32Array;
  level: Uint8Array;
}

/** Per-VM leaf arrays (sized once: a check runs often on a big guest). */
const leafScratch = new WeakMap<Kvm, Stage2Leaves>();

/** Walk the tables of the current root (kvm->arch.pgd) once and list their leaves. */
export function collectStage2Leaves(kvm: Kvm): Stage2Leaves {
  const m = kvm.m;
  const L = kvm.layout;
  let out = leafScratch.get(kvm);
  if (!out) {
    // At most one leaf per guest page, plus entries beyond the guest's end.
    const cap = L.pages + PTRS_PER_TABLE;
    out = { count: 0, gfn: new Int32Array(cap), desc: new Int32Array(cap), level: new Uint8Array(cap) };
    leafScratch.set(kvm, out);
  }
  const o = out;
  o.count = 0;
  const push = (gfn: number, d: number, level: number): void => {
    if (o.count === o.gfn.length) {
      const grow = <T extends Int32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
        const b = make(a.length * 2);
        b.set(a);
        return b;
      };
      o.gfn = grow(o.gfn, (n) => new Int32Array(n));
      o.desc = grow(o.desc, (n) => new Int32Array(n));
      o.level = grow(o.level, (n) => new Uint8Array(n));
    }
    o.gfn[o.count] = gfn;
    o.desc[o.count] = d;
    o.level[o.count] = level;
    o.count++;
  };
  // Plain reads: the world is stopped (see above).
  const walk = (table: number, level: number, firstGfn: number): void => {
    const span = level === 1 ? 1 << 18 : level === 2 ? 1 << 9 : 1;
    const base = L.tablesBase + table * PTRS_PER_TABLE;
    for (let i = 0; i < PTRS_PER_TABLE; i++) {
      const d = m[base + i];
      if (!descValid(d)) continue;
      const gfn = firstGfn + i * span;
      if (level < LEVEL_PTE && descIsTable(d)) walk(descOa(d), level + 1, gfn);
      else push(gfn, d, level === LEVEL_PMD && pmdIsBlock(d) ? LEVEL_PMD : LEVEL_PTE);
    }
  };
  const root = kvmPgd(kvm);
  if (root >= 0) walk(root, 1, 0);
  return o;
}

/**
 * Every valid stage-2 leaf of the current root (kvm->arch.pgd), read once
 * (or from `leaves`, the same stop point's walk): `visit(gfn, desc, level)`.
 */
function forEachStage2Leaf(kvm: Kvm, leaves: Stage2Leaves | undefined, visit: (gfn: number, d: number, level: number) => void): void {
  const l = leaves ?? collectStage2Leaves(kvm);
  for (let i = 0; i < l.count; i++) visit(l.gfn[i], l.desc[i], l.level[i]);
}

const TABLE_STATE_TEXT = ['free', 'in a memory cache', 'in use'];

/** The live `table-use-after-free` record: kind, table page, detail, the page's state when it was seen. */
function describeTableUseAfterFree(kind: number, table: number, detail: number, state: number): string {
  const now = TABLE_STATE_TEXT[state] ?? `state ${state}`;
  switch (kind) {
    case UAF.READ:
      return `a stage-2 walk read entry ${detail} of table #${table}, which was freed since the walk entered it (the page is now ${now}${state === TABLE_FREE ? '' : ': freed and reused'}): the walk dropped mmu_lock and another thread freed the tables`;
    case UAF.PUT:
      return `put_page() on table #${table}, ${detail >= 0 ? `after the walk wrote its entry ${detail}, ` : ''}a page freed ${state === TABLE_FREE ? '' : 'and reused '}under the walk (now ${now})`;
    case UAF.DOUBLE_FREE:
      return `table #${table} freed twice (free_pages_exact of a page already freed; now ${now})`;
    case UAF.NULL_PGD:
      return `a stage-2 walk from gfn ${detail} started with kvm->arch.pgd NULL (the tables were freed while it waited for mmu_lock): it dereferences NULL + index`;
    case UAF.ENTER_FREED:
      return `a valid entry of table #${detail} points to table #${table}, which is free: the walk enters a freed page`;
    case UAF.WRITE:
      return `a stage-2 walk wrote entry ${detail} of table #${table}, which was freed since the walk entered it (the page is now ${now}${state === TABLE_FREE ? '' : ': freed and reused'})`;
    case UAF.FREE_NULL:
      return `kvm_free_stage2_pgd() frees kvm->arch.pgd after another thread freed table #${table} and set it to NULL (free_pages_exact(NULL))`;
    default:
      return `table-use-after-free (kind ${kind}, table #${table}, ${detail}, ${now})`;
  }
}
