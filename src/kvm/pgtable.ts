/**
 * Stage-2 page tables: the table-page pool, the per-vCPU memory caches, one
 * generic range walker with visitors (unmap, write-protect), and the fault
 * path's updates. Mirrors arch/arm/kvm/mmu.c of the 2014-2018 era; the walker
 * has the shape of arch/arm64/kvm/hyp/pgtable.c.
 *
 * A table page's reference count is 1 plus its valid entries, as in the
 * kernel (get_page/put_page on virt_to_page(table)). The root (the PGD) is
 * kvm->arch.pgd, a shared word: table page 0 at start, freed with the VM
 * (kvm_free_stage2_pgd) and allocated anew for the next one.
 *
 * Long walks drop and retake mmu_lock (cond_resched_lock) between 1 GiB
 * entries, as stage2_wp_range() and unmap_stage2_range() do; every table
 * page carries a generation, bumped when it is freed, and a walk checks at
 * each entry it reads, writes or puts that the page is still the one it
 * entered (`table-use-after-free`).
 */
import {
  LEVEL_PGD,
  LEVEL_PMD,
  PAGES_PER_PGD_ENTRY,
  LEVEL_PTE,
  PTRS_PER_TABLE,
  descIsTable,
  descOa,
  descValid,
  descWritable,
  mkReadonly,
  mkTableDesc,
  pgdIndex,
  pmdIndex,
  pmdIsBlock,
  pteIndex,
} from '../arch/stage2.js';
import type { Kvm } from './kvm.js';
import type { Actor } from '../sync/actor.js';
import { SITE } from '../sync/sites.js';
import { LS } from '../sync/locksites.js';
import { LOCKW } from '../sync/spinlock.js';
import { CTRL, KVM_NR_MEM_OBJS } from '../shm/layout.js';
import { CNT, EV, INV } from '../check/names.js';
import { kvmTlbFlushVmidIpa } from './tlb.js';
import { bbmOnWrite, bbmPending, setTableInfo } from '../check/bbm.js';

/** The root table of the first VM life (kvm->arch.pgd at start); later lives take any free page. */
export const ROOT_TABLE = 0;
export const TABLE_FREE = 0;
export const TABLE_CACHED = 1;
export const TABLE_LIVE = 2;

export const ENOMEM = -12;
export const EFAULT = -14;

/** stage2_set_pte() flags: one bit each, as the review asked. */
export const KVM_S2PTE_FLAG_IS_IOMAP = 1 << 0;
export const KVM_S2_FLAG_LOGGING_ACTIVE = 1 << 1;

/** kernel-bug violation kinds (the assertions the model makes instead of trusting). */
export const KBUG = {
  SET_PTE_ON_HUGE_PMD: 1,
  TABLE_REF_UNDERFLOW: 2,
  FRAME_REF_UNDERFLOW: 3,
  NOTIFIER_COUNT_NEGATIVE: 4,
  TABLE_POOL_EMPTY: 5,
} as const;

/** table-use-after-free kinds in the violation ring. */
export const UAF = {
  /** A walk read an entry of a table page freed (or freed and reused) since it entered it. */
  READ: 1,
  /** put_page() / get_page() on a table page that is free, or was freed since the walk entered it. */
  PUT: 2,
  /** A table page freed twice (free_pages_exact of a page already free). */
  DOUBLE_FREE: 3,
  /** The walk started with kvm->arch.pgd NULL: it dereferences NULL + index. */
  NULL_PGD: 4,
  /** A valid entry points to a free table page: the walk would enter it. */
  ENTER_FREED: 5,
  /** free_pages_exact(kvm->arch.pgd) after another thread freed the tables and set it to NULL. */
  FREE_NULL: 6,
} as const;

/** KVM_PHYS_SIZE in pages: the IPA space the root spans (512 entries of 1 GiB = 512 GiB in the model). */
export const KVM_PHYS_PAGES = PTRS_PER_TABLE * PAGES_PER_PGD_ENTRY;

/** kvm->arch.pgd: the root table's index, or -1 (NULL) once the stage-2 tables were freed. */
export function kvmPgd(kvm: Kvm): number {
  return Atomics.load(kvm.m, CTRL.S2_PGD) - 1;
}

function setKvmPgd(kvm: Kvm, table: number): void {
  Atomics.store(kvm.m, CTRL.S2_PGD, table + 1);
}

export function entryIndex(kvm: Kvm, table: number, idx: number): number {
  return kvm.layout.tablesBase + table * PTRS_PER_TABLE + idx;
}
/** The table page an entry (absolute word index) belongs to: virt_to_page(pte). */
export function tableOf(kvm: Kvm, entry: number): number {
  return ((entry - kvm.layout.tablesBase) / PTRS_PER_TABLE) | 0;
}

// ---------------------------------------------------------------- the pool

/** Lay out the pool at start: root live with refcount 1 (kvm->arch.pgd), every other page free. */
export function initTablePool(kvm: Kvm): void {
  const m = kvm.m;
  const L = kvm.layout;
  m[L.tableState + ROOT_TABLE] = TABLE_LIVE;
  m[L.tableRef + ROOT_TABLE] = 1;
  setTableInfo(kvm, ROOT_TABLE, 0, LEVEL_PGD);
  let top = 0;
  for (let t = L.tables - 1; t > ROOT_TABLE; t--) m[L.tableFree + top++] = t;
  m[CTRL.TABLE_FREE_TOP] = top;
  setKvmPgd(kvm, ROOT_TABLE);
}

/** __get_free_page(PGALLOC_GFP): a zeroed table page, or -1. */
function tablePoolAlloc(kvm: Kvm, actor: Actor): number {
  const m = kvm.m;
  const L = kvm.layout;
  kvm.tableLock.lock(actor, LS.other);
  const top = m[CTRL.TABLE_FREE_TOP];
  let t = -1;
  if (top > 0) {
    t = m[L.tableFree + top - 1];
    m[CTRL.TABLE_FREE_TOP] = top - 1;
  }
  kvm.tableLock.unlock(actor);
  if (t < 0) return -1;
  const base = L.tablesBase + t * PTRS_PER_TABLE;
  for (let i = 0; i < PTRS_PER_TABLE; i++) Atomics.store(m, base + i, 0);
  Atomics.store(m, L.tableRef + t, 0);
  Atomics.store(m, L.tableState + t, TABLE_CACHED);
  return t;
}

/**
 * free_page(): back to the pool. The generation moves first, so that a
 * walk still in the page sees it at its next step, whether the page then
 * stays free or is handed out again. Freeing a free page is a double free.
 */
function tablePoolFree(kvm: Kvm, actor: Actor, t: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  if (Atomics.load(m, L.tableState + t) === TABLE_FREE) {
    tableUseAfterFree(kvm, actor, UAF.DOUBLE_FREE, t, 0);
    return;
  }
  Atomics.add(m, L.tableGen + t, 1);
  Atomics.store(m, L.tableState + t, TABLE_FREE);
  kvm.tableLock.lock(actor, LS.other);
  const top = m[CTRL.TABLE_FREE_TOP];
  m[L.tableFree + top] = t;
  m[CTRL.TABLE_FREE_TOP] = top + 1;
  kvm.tableLock.unlock(actor);
}

/**
 * Record a table-use-after-free (live): the table page, then a detail (the
 * entry index, the other table or the gfn), and the page's state now.
 * Returns false, for the walk to stop: in the kernel it would go on in
 * freed memory; the model stops at the first use it sees.
 */
function tableUseAfterFree(kvm: Kvm, actor: Actor, kind: number, table: number, detail: number): false {
  const state = table >= 0 ? Atomics.load(kvm.m, kvm.layout.tableState + table) : -1;
  kvm.trace(actor, EV['walk.uaf'], table, kind, detail);
  kvm.violation(INV['table-use-after-free'], actor.id, kind, table, detail, state);
  return false;
}

/**
 * The walk's check before it uses table page `t` again: still the page it
 * entered (same generation). One load: cheap enough for every entry.
 */
function tableStillEntered(kvm: Kvm, actor: Actor, t: number, gen: number, kind: number, detail: number): boolean {
  if (Atomics.load(kvm.m, kvm.layout.tableGen + t) === gen) return true;
  return tableUseAfterFree(kvm, actor, kind, t, detail);
}

/** mmu_topup_memory_cache(): fill the actor's cache outside mmu_lock. */
export function mmuTopupMemoryCache(kvm: Kvm, actor: Actor, min: number, max: number): number {
  const m = kvm.m;
  const base = kvm.layout.memcache + actor.id * kvm.layout.memcacheWords;
  let n = m[base];
  if (n >= min) return 0;
  actor.sched.point(SITE['memcache.topup']);
  while (n < max) {
    const t = tablePoolAlloc(kvm, actor);
    if (t < 0) {
      // The pool is sized for a fully split guest plus every cache and slack:
      // running dry means table pages leak. Reported once, as conservation.
      if (Atomics.compareExchange(kvm.m, CTRL.POOL_EMPTY_REPORTED, 0, 1) === 0) {
        kvm.violation(INV['table-conservation'], actor.id, KBUG.TABLE_POOL_EMPTY, kvm.layout.tables);
      }
      m[base] = n;
      return ENOMEM;
    }
    m[base + 1 + n] = t;
    n++;
  }
  m[base] = n;
  return 0;
}

/**
 * mmu_free_memory_cache(): give back every page of `ownerId`'s cache (a
 * vCPU freed with its VM: kvm_arch_vcpu_free -> kvm_mmu_free_memory_caches).
 */
export function mmuFreeMemoryCache(kvm: Kvm, actor: Actor, ownerId: number): void {
  const m = kvm.m;
  const base = kvm.layout.memcache + ownerId * kvm.layout.memcacheWords;
  let n = m[base];
  if (n > KVM_NR_MEM_OBJS) throw new Error(`memory cache of actor ${ownerId} holds ${n} pages, more than KVM_NR_MEM_OBJS`);
  while (n > 0) {
    n--;
    m[base] = n;
    tablePoolFree(kvm, actor, m[base + 1 + n]);
  }
}

/** mmu_memory_cache_alloc(): a fresh page (refcount 1) from the actor's cache. */
export function mmuMemoryCacheAlloc(kvm: Kvm, actor: Actor): number {
  const m = kvm.m;
  const L = kvm.layout;
  const base = L.memcache + actor.id * L.memcacheWords;
  const n = m[base];
  if (n <= 0) throw new Error(`BUG_ON(!mc->nobjs): actor ${actor.id} memory cache empty`);
  const t = m[base + n];
  m[base] = n - 1;
  Atomics.store(m, L.tableRef + t, 1);
  Atomics.store(m, L.tableState + t, TABLE_LIVE);
  return t;
}

/** get_page(virt_to_page(table)) */
export function getTablePage(kvm: Kvm, t: number): void {
  Atomics.add(kvm.m, kvm.layout.tableRef + t, 1);
}

/** put_page(virt_to_page(table)); the page is freed only by freeTable(). A put on a free page is a use after free. */
export function putTablePage(kvm: Kvm, actor: Actor, t: number): void {
  if (Atomics.load(kvm.m, kvm.layout.tableState + t) === TABLE_FREE) {
    tableUseAfterFree(kvm, actor, UAF.PUT, t, -1);
    return;
  }
  const old = Atomics.sub(kvm.m, kvm.layout.tableRef + t, 1);
  if (old <= 1) kvm.violation(INV['kernel-bug'], actor.id, KBUG.TABLE_REF_UNDERFLOW, t, old - 1);
}

/**
 * pte_free_kernel() / stage2_pmd_free(): drop the base reference; the page
 * returns to the pool only when nothing else holds it (a page with a stray
 * reference stays allocated and unreachable: a leak the checks report).
 */
export function freeTable(kvm: Kvm, actor: Actor, t: number): void {
  if (Atomics.load(kvm.m, kvm.layout.tableState + t) === TABLE_FREE) {
    tableUseAfterFree(kvm, actor, UAF.DOUBLE_FREE, t, -1);
    return;
  }
  const old = Atomics.sub(kvm.m, kvm.layout.tableRef + t, 1);
  kvm.count(actor, CNT.tablesFreed);
  kvm.trace(actor, EV['table.free'], t, old - 1);
  if (old === 1) tablePoolFree(kvm, actor, t);
  else if (old < 1) kvm.violation(INV['kernel-bug'], actor.id, KBUG.TABLE_REF_UNDERFLOW, t, old - 1);
}

/**
 * kvm_alloc_stage2_pgd(): a zeroed root page, refcount 1, published as
 * kvm->arch.pgd (a new VM; the kernel allocates it in kvm_arch_init_vm).
 * Returns the root, or -1 when the pool is dry.
 */
export function kvmAllocStage2Pgd(kvm: Kvm, actor: Actor): number {
  if (kvmPgd(kvm) >= 0) throw new Error('kvm_alloc_stage2_pgd: kvm_arch already initialized');
  const t = tablePoolAlloc(kvm, actor);
  if (t < 0) return -1;
  Atomics.store(kvm.m, kvm.layout.tableRef + t, 1);
  Atomics.store(kvm.m, kvm.layout.tableState + t, TABLE_LIVE);
  setTableInfo(kvm, t, 0, LEVEL_PGD); // the page may have been a PMD or PTE table of the last VM
  setKvmPgd(kvm, t);
  kvm.trace(actor, EV['pgd.alloc'], t);
  return t;
}

// ------------------------------------------------------------ entry writes

/**
 * kvm_set_pte()/kvm_set_pmd(): the only way an entry is written. Checks the
 * `lock-held` invariant as it happens: the writer must hold mmu_lock; and
 * records, for the live `break-before-make` check (src/check/bbm.ts), every
 * change of a valid entry and every write that follows a clear.
 */
export function s2Write(kvm: Kvm, actor: Actor, entry: number, desc: number): void {
  actor.sched.point(SITE['pgtable.write']);
  const held = kvm.mmuLock.heldBy(actor);
  if (!held) {
    kvm.violation(INV['lock-held'], actor.id, 0, entry, desc, kvm.mmuLock.owner());
  }
  const old = Atomics.exchange(kvm.m, entry, desc);
  if (held && (descValid(old) || bbmPending(kvm, actor))) bbmOnWrite(kvm, actor, entry, old, desc);
}

// ---------------------------------------------------------------- descent

/**
 * stage2_get_pmd(): the PMD entry (word index) for gfn, creating the PMD
 * table from the cache when `useCache`; -1 when a level is missing and there
 * is no cache (the change_pte path ignores unallocated ranges).
 */
export function stage2GetPmd(kvm: Kvm, actor: Actor, useCache: boolean, gfn: number): number {
  const m = kvm.m;
  // pgd = kvm->arch.pgd + stage2_pgd_index(addr). Nothing maps into a VM
  // whose tables were freed (its vCPUs and notifiers are gone first).
  const root = kvmPgd(kvm);
  if (root < 0) throw new Error(`stage2_get_pmd: kvm->arch.pgd is NULL (actor ${actor.id}, gfn ${gfn})`);
  const pgd = entryIndex(kvm, root, pgdIndex(gfn));
  let desc = Atomics.load(m, pgd);
  if (!descValid(desc)) {
    if (!useCache) return -1;
    const t = mmuMemoryCacheAlloc(kvm, actor);
    setTableInfo(kvm, t, pgdIndex(gfn) << 18, LEVEL_PMD);
    desc = mkTableDesc(t);
    s2Write(kvm, actor, pgd, desc);
    getTablePage(kvm, root);
  }
  return entryIndex(kvm, descOa(desc), pmdIndex(gfn));
}

// ------------------------------------------------------------- the walker

/**
 * A visitor over valid entries of a range (kvm_pgtable_walker). `table` is
 * the page holding `entry` and `gen` its generation when the walk entered
 * it: a visitor checks it (tableStillEntered) before it uses the page again
 * after a step where another actor could run. Returns false to stop the walk.
 */
export interface S2Visitor {
  /** A valid leaf: a block at LEVEL_PMD or a page at LEVEL_PTE. */
  leaf(kvm: Kvm, actor: Actor, level: number, entry: number, desc: number, gfn: number, table: number, gen: number): boolean;
  /** After the walk of the child table `entry` points to (KVM_PGTABLE_WALK_TABLE_POST). */
  tablePost?(kvm: Kvm, actor: Actor, level: number, entry: number, desc: number, gfn: number, table: number, gen: number): boolean;
}

/** Walk flag: cond_resched_lock() before each 1 GiB step, then the 4.12 re-check (stage2_wp_range). */
export const WALK_RESCHED_BEFORE = 1 << 0;
/** Walk flag: the 4.12 re-check, then cond_resched_lock() after each 1 GiB step but the last (unmap_stage2_range, 4.11 on). */
export const WALK_RESCHED_AFTER = 1 << 1;

const LEVEL_SHIFT = [0, 18, 9, 0];

/**
 * cond_resched_lock(&kvm->mmu_lock), called with mmu_lock held: when the
 * actor's time is up (need_resched) or the lock is contended
 * (spin_needbreak), release it, then schedule() (a yield: in sim mode PCT
 * lowers the actor's priority) or only cpu_relax() (a scheduling point),
 * and take it again at the same lock_stat site. Returns true if it dropped.
 */
export function condReschedLock(kvm: Kvm, actor: Actor): boolean {
  const resched = kvm.needResched(actor.id);
  if (!resched && !kvm.mmuLockIsContended()) return false;
  const site = Atomics.load(kvm.m, kvm.layout.mmuLock + LOCKW.OWNER_SITE);
  kvm.mmuLock.unlock(actor);
  kvm.count(actor, CNT.reschedDrops);
  actor.sched.point(SITE['pgtable.resched']);
  if (resched) actor.sched.idle(0); // preempt_schedule_common()
  kvm.mmuLock.lock(actor, site);
  return true;
}

function walkLevel(kvm: Kvm, actor: Actor, level: number, table: number, gen: number, start: number, end: number, v: S2Visitor): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  const shift = LEVEL_SHIFT[level];
  const size = 1 << shift;
  const unaligned = kvm.proto.wpRangeUnaligned;
  let gfn = start;
  while (gfn < end) {
    const idx = (gfn >>> shift) & (PTRS_PER_TABLE - 1);
    const entry = entryIndex(kvm, table, idx);
    const aligned = ((gfn >>> shift) + 1) << shift;
    const childEnd = aligned < end ? aligned : end;
    actor.sched.point(SITE['pgtable.walk']);
    const desc = Atomics.load(m, entry);
    // The read counts only if the page was still the walk's when it read it.
    if (!tableStillEntered(kvm, actor, table, gen, UAF.READ, idx)) return false;
    if (descValid(desc)) {
      if (level < LEVEL_PTE && descIsTable(desc)) {
        const child = descOa(desc);
        // Entering the child: under mmu_lock its page cannot change under us;
        // a free page here is an entry left pointing to freed memory.
        const childGen = Atomics.load(m, L.tableGen + child);
        if (Atomics.load(m, L.tableState + child) === TABLE_FREE) return tableUseAfterFree(kvm, actor, UAF.ENTER_FREED, child, table);
        if (!walkLevel(kvm, actor, level + 1, child, childGen, gfn, childEnd, v)) return false;
        if (v.tablePost) {
          const post = Atomics.load(m, entry);
          if (!tableStillEntered(kvm, actor, table, gen, UAF.READ, idx)) return false;
          if (!v.tablePost(kvm, actor, level, entry, post, gfn, table, gen)) return false;
        }
      } else if (!v.leaf(kvm, actor, level, entry, desc, gfn, table, gen)) {
        return false;
      }
    }
    // Linux 5.12 "Fix range alignment when walking page tables": step to the
    // next aligned boundary; the wp-range-unaligned bug carries the
    // misalignment into every later entry at this level.
    gfn = unaligned ? gfn + size : aligned;
  }
  return true;
}

/**
 * kvm_pgtable_walk() over [start, end) in gfns, in the shape of the
 * kernel's top loop: `pgd = kvm->arch.pgd + index` is read once, then one
 * step per 1 GiB PGD entry, or per reschedGranule inside a present one (a
 * smaller granule lets small guests reach the lock drops; an absent entry
 * is one step, as in the kernel). Between steps the walk holds nothing
 * but the root: after a lock drop it re-reads each level from the root.
 *
 * `flags`: WALK_RESCHED_BEFORE (stage2_wp_range: cond_resched_lock() at
 * the top of every step) or WALK_RESCHED_AFTER (unmap_stage2_range from
 * 4.11: after every step but the last). With walkRechecksPgd (4.12,
 * 0c428a6a9256) each step first re-checks `if (!READ_ONCE(kvm->arch.pgd))
 * break;`; before 4.12 the walk goes on with the root it read at the start.
 * Returns false if the walk stopped at a use after free.
 */
export function kvmPgtableWalk(kvm: Kvm, actor: Actor, start: number, end: number, v: S2Visitor, flags = 0): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  const root = kvmPgd(kvm);
  const rootGen = root >= 0 ? Atomics.load(m, L.tableGen + root) : 0;
  const recheck = kvm.proto.walkRechecksPgd;
  const granule = kvm.reschedGranulePages;
  let addr = start;
  while (addr < end) {
    if ((flags & WALK_RESCHED_BEFORE) !== 0) condReschedLock(kvm, actor);
    if (recheck && Atomics.load(m, CTRL.S2_PGD) === 0) return true;
    if (root < 0) return tableUseAfterFree(kvm, actor, UAF.NULL_PGD, -1, addr);
    // next = stage2_pgd_addr_end(addr, end), or the granule boundary inside a present entry
    const idx = pgdIndex(addr);
    const top = Atomics.load(m, entryIndex(kvm, root, idx));
    if (!tableStillEntered(kvm, actor, root, rootGen, UAF.READ, idx)) return false;
    const step = descValid(top) ? granule : PAGES_PER_PGD_ENTRY;
    const boundary = (addr - (addr % step)) + step;
    const next = boundary < end ? boundary : end;
    if (!walkLevel(kvm, actor, LEVEL_PGD, root, rootGen, addr, next, v)) return false;
    if ((flags & WALK_RESCHED_AFTER) !== 0 && next !== end) condReschedLock(kvm, actor);
    addr = next;
  }
  return true;
}

/**
 * unmap_stage2_range(): clear leaves (flush each IPA, drop the table's
 * reference), then free a table whose refcount is back to 1
 * (stage2_pte_table_empty -> clear_stage2_pmd_entry).
 */
const unmapVisitor: S2Visitor = {
  leaf(kvm, actor, _level, entry, _desc, gfn, table, gen) {
    s2Write(kvm, actor, entry, 0);
    kvmTlbFlushVmidIpa(kvm, actor, gfn);
    if (!tableStillEntered(kvm, actor, table, gen, UAF.PUT, entry - entryIndex(kvm, table, 0))) return false;
    putTablePage(kvm, actor, table);
    return true;
  },
  tablePost(kvm, actor, _level, entry, desc, gfn, table, gen) {
    if (!descIsTable(desc)) return true;
    const child = descOa(desc);
    if (Atomics.load(kvm.m, kvm.layout.tableRef + child) !== 1) return true;
    s2Write(kvm, actor, entry, 0);
    kvmTlbFlushVmidIpa(kvm, actor, gfn);
    freeTable(kvm, actor, child);
    if (!tableStillEntered(kvm, actor, table, gen, UAF.PUT, entry - entryIndex(kvm, table, 0))) return false;
    putTablePage(kvm, actor, table);
    return true;
  },
};

/**
 * unmap_stage2_range(kvm, gfn, npages), caller holds mmu_lock. From 4.11
 * (8b3405e345b5) it drops the lock between PGD entries (`if (next != end)
 * cond_resched_lock(&kvm->mmu_lock)`). Returns false if it stopped at a
 * use after free.
 */
export function unmapStage2Range(kvm: Kvm, actor: Actor, gfn: number, npages: number): boolean {
  kvm.trace(actor, EV.unmap, gfn, npages);
  return kvmPgtableWalk(kvm, actor, gfn, gfn + npages, unmapVisitor, kvm.proto.unmapCondReschedLock ? WALK_RESCHED_AFTER : 0);
}

/** stage2_wp_ptes / stage2_wp_pmds: make present leaves read-only (the caller flushes). */
const wpVisitor: S2Visitor = {
  leaf(kvm, actor, _level, entry, desc) {
    if (descWritable(desc)) s2Write(kvm, actor, entry, mkReadonly(desc));
    return true;
  },
};

/**
 * stage2_wp_range(): write-protect [gfn, end). Caller holds mmu_lock. At
 * the top of every PGD step: `if (need_resched() || spin_needbreak(&kvm->
 * mmu_lock)) cond_resched_lock(&kvm->mmu_lock);` (4.0 to 4.11), plain
 * cond_resched_lock() plus the pgd re-check from 4.12: the same drops.
 */
export function stage2WpRange(kvm: Kvm, actor: Actor, gfn: number, end: number): boolean {
  kvm.count(actor, CNT.wpRanges);
  kvm.trace(actor, EV.wp, gfn, end - gfn);
  return kvmPgtableWalk(kvm, actor, gfn, end, wpVisitor, WALK_RESCHED_BEFORE);
}

/**
 * kvm_free_stage2_pgd(): unmap the whole IPA space, then free the root and
 * set kvm->arch.pgd to NULL.
 *
 * - 4.12 on (0c428a6a9256): the NULL check, the unmap and clearing the
 *   pointer all under mmu_lock; the page is freed after the unlock, only by
 *   the caller that cleared the pointer.
 * - 4.11 (8b3405e345b5): `if (kvm->arch.pgd == NULL) return;` unlocked,
 *   the unmap under mmu_lock (dropping it every 1 GiB), then
 *   free_pages_exact(kvm->arch.pgd) and the NULL store after the unlock: two
 *   callers at once both unmap, and one frees the tables under the other.
 * - before 4.11 the kernel ran it without mmu_lock, from
 *   kvm_arch_destroy_vm() only, when nothing else could reach the VM; the
 *   model takes the lock there (nobody contends for it) so that its
 *   `lock-held` check holds for every entry write.
 */
export function kvmFreeStage2Pgd(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  const L = kvm.layout;
  if (kvm.proto.walkRechecksPgd) {
    let pgd = -1;
    kvm.mmuLock.lock(actor, LS.other);
    if (kvmPgd(kvm) >= 0) {
      unmapStage2Range(kvm, actor, 0, KVM_PHYS_PAGES);
      pgd = kvmPgd(kvm); // READ_ONCE(kvm->arch.pgd)
      setKvmPgd(kvm, -1);
    }
    kvm.mmuLock.unlock(actor);
    if (pgd >= 0) {
      actor.sched.point(SITE['pgtable.walk']);
      freeTable(kvm, actor, pgd); // free_pages_exact(pgd, S2_PGD_SIZE)
      kvm.trace(actor, EV['pgd.free'], pgd);
    }
    return;
  }
  const seen = kvmPgd(kvm);
  if (seen < 0) return;
  const seenGen = Atomics.load(m, L.tableGen + seen);
  kvm.mmuLock.lock(actor, LS.other);
  const ok = unmapStage2Range(kvm, actor, 0, KVM_PHYS_PAGES);
  kvm.mmuLock.unlock(actor);
  if (!ok) return; // already reported: the walk went into freed tables
  actor.sched.point(SITE['pgtable.walk']);
  // free_pages_exact(kvm->arch.pgd, S2_PGD_SIZE); kvm->arch.pgd = NULL;
  const pgd = kvmPgd(kvm);
  if (pgd < 0) {
    tableUseAfterFree(kvm, actor, UAF.FREE_NULL, seen, -1);
    return;
  }
  if (pgd !== seen || !tableStillEntered(kvm, actor, pgd, seenGen, UAF.DOUBLE_FREE, -1)) return;
  freeTable(kvm, actor, pgd);
  kvm.trace(actor, EV['pgd.free'], pgd);
  setKvmPgd(kvm, -1);
}

// ------------------------------------------------------ fault-path updates

/**
 * The "break" of break-before-make: clear the entry, then flush the TLB for
 * the IPA, as kvm_set_pte(pte, __pte(0)) / pmd_clear(pmd) followed by
 * kvm_tlb_flush_vmid_ipa(kvm, addr). The flush-before-clear bug swaps the
 * two: a walk between them refills the old translation.
 */
function breakEntry(kvm: Kvm, actor: Actor, entry: number, flushGfn: number): void {
  if (kvm.proto.flushBeforeClear) {
    kvmTlbFlushVmidIpa(kvm, actor, flushGfn);
    s2Write(kvm, actor, entry, 0);
  } else {
    s2Write(kvm, actor, entry, 0);
    kvmTlbFlushVmidIpa(kvm, actor, flushGfn);
  }
}

/**
 * stage2_dissolve_pmd(): while logging, clear a huge PMD, flush the TLB for
 * the IPA and drop the PMD table's reference; the caller then maps a page.
 * Every profile clears before it flushes here (Linux 4.0 to 4.18:
 * `pmd_clear(pmd); kvm_tlb_flush_vmid_ipa(kvm, addr); put_page(...)`).
 * v14 wrote this inline in stage2_set_pte() and flushed
 * `pmd_pfn(*pmd) << PAGE_SHIFT`: the block's output address, not the IPA.
 * On ARMv7, where v14 ran, __kvm_tlb_flush_vmid_ipa is TLBIALLIS and
 * ignores the address, so that is harmless; with arm64 semantics the
 * stage-2-only entries of the block's IPA survive (`--arch arm64`).
 */
export function stage2DissolvePmd(kvm: Kvm, actor: Actor, gfn: number, pmd: number): void {
  const desc = Atomics.load(kvm.m, pmd);
  if (!pmdIsBlock(desc)) return;
  kvm.mmuLock.retag(actor, LS.dissolve);
  if (kvm.proto.noTlbiOnDissolve) s2Write(kvm, actor, pmd, 0);
  else breakEntry(kvm, actor, pmd, kvm.proto.v14 ? descOa(desc) : gfn);
  if (!kvm.proto.leakOnDissolve) putTablePage(kvm, actor, tableOf(kvm, pmd));
  kvm.count(actor, CNT.dissolves);
  kvm.trace(actor, EV.dissolve, gfn, descOa(desc));
}

/**
 * stage2_set_pte(): map one page. `useCache` false is the change_pte path
 * (kvm_set_spte_handler with no cache), which ignores missing levels.
 * Returns 0 or EFAULT (an IOMAP entry that is already present).
 *
 * Replacing a present PTE, by profile (`proto.breakBeforeMake`):
 * - v14 to 4.6, as in Linux 3.18 and 4.0: `old_pte = *pte; kvm_set_pte(pte,
 *   *new_pte); if (pte_present(old_pte)) kvm_tlb_flush_vmid_ipa(kvm, addr);
 *   else get_page(virt_to_page(pte));` (write, then flush);
 * - 4.7 on ("arm/arm64: KVM: Enforce Break-Before-Make on Stage-2 page
 *   tables"): `if (pte_present(old_pte)) { kvm_set_pte(pte, __pte(0));
 *   kvm_tlb_flush_vmid_ipa(kvm, addr); } else { get_page(...); }
 *   kvm_set_pte(pte, *new_pte);` (clear, flush, write).
 */
export function stage2SetPte(kvm: Kvm, actor: Actor, useCache: boolean, gfn: number, newPte: number, flags: number): number {
  const m = kvm.m;
  const iomap = (flags & KVM_S2PTE_FLAG_IS_IOMAP) !== 0;
  const loggingActive = (flags & KVM_S2_FLAG_LOGGING_ACTIVE) !== 0;

  /* Create stage-2 page table mapping - Levels 0 and 1 */
  const pmd = stage2GetPmd(kvm, actor, useCache, gfn);
  if (pmd < 0) return 0; /* ignore calls from kvm_set_spte_hva for unallocated ranges */

  /* While dirty page logging - dissolve huge PMD, then continue on to allocate page. */
  if (loggingActive) stage2DissolvePmd(kvm, actor, gfn, pmd);

  /* Create stage-2 page mappings - Level 2 */
  let pmdDesc = Atomics.load(m, pmd);
  if (!descValid(pmdDesc)) {
    if (!useCache) return 0; /* ignore calls from kvm_set_spte_hva */
    const t = mmuMemoryCacheAlloc(kvm, actor);
    setTableInfo(kvm, t, gfn & ~511, LEVEL_PTE);
    pmdDesc = mkTableDesc(t);
    s2Write(kvm, actor, pmd, pmdDesc);
    getTablePage(kvm, tableOf(kvm, pmd));
  } else if (pmdIsBlock(pmdDesc)) {
    // The kernel would go on and treat the block as a table pointer
    // (pte_offset_kernel on a huge PMD): memory corruption. The seed claims
    // change_pte never gets here; the model asserts the claim.
    kvm.violation(INV['kernel-bug'], actor.id, KBUG.SET_PTE_ON_HUGE_PMD, gfn, pmdDesc, useCache ? 1 : 0);
    return 0;
  }

  const pteTable = descOa(pmdDesc);
  const pte = entryIndex(kvm, pteTable, pteIndex(gfn));
  const oldPte = Atomics.load(m, pte);
  if (iomap && descValid(oldPte)) return EFAULT;

  /* Create 2nd stage page table mapping - Level 3 */
  if (descValid(oldPte)) {
    // Linux 4.19: skip updating the PTE if nothing changes (refault storms).
    if (kvm.proto.fixSkipSameEntry && oldPte === newPte) {
      kvm.count(actor, CNT.skippedSame);
      return 0;
    }
    if (kvm.proto.breakBeforeMake) {
      breakEntry(kvm, actor, pte, gfn);
      s2Write(kvm, actor, pte, newPte);
    } else {
      s2Write(kvm, actor, pte, newPte);
      kvmTlbFlushVmidIpa(kvm, actor, gfn);
    }
    if (kvm.proto.validPteRefLeak) getTablePage(kvm, pteTable);
  } else {
    getTablePage(kvm, pteTable);
    s2Write(kvm, actor, pte, newPte);
  }
  kvm.count(actor, CNT.pteMaps);
  kvm.trace(actor, EV['map.pte'], gfn, newPte);
  return 0;
}

/**
 * stage2_set_pmd_huge(): map a 2 MiB block at the PMD for gfn (aligned).
 * v14 to 4.18 overwrite whatever the PMD held: over a table pointer the PTE
 * table leaks and only this IPA is flushed, leaving stale 4 KiB TLB entries.
 * The `fixed` profile (Linux 5.1) unmaps the whole range first and retries.
 * Replacing a present PMD follows the profile as stage2SetPte() does: v14
 * to 4.6 `kvm_set_pmd(pmd, *new_pmd); if (pmd_present(old_pmd))
 * kvm_tlb_flush_vmid_ipa(kvm, addr);`, 4.7 on `pmd_clear(pmd);
 * kvm_tlb_flush_vmid_ipa(kvm, addr);` then `kvm_set_pmd(pmd, *new_pmd)`.
 * (Those kernels also had `VM_BUG_ON(pmd_present(*pmd) && pmd_pfn(*pmd) !=
 * pmd_pfn(*new_pmd))`, compiled only with CONFIG_DEBUG_VM; not asserted.)
 */
export function stage2SetPmdHuge(kvm: Kvm, actor: Actor, gfn: number, newPmd: number): number {
  const m = kvm.m;
  kvm.mmuLock.retag(actor, LS['block-map']);
  for (;;) {
    const pmd = stage2GetPmd(kvm, actor, true, gfn);
    const oldPmd = Atomics.load(m, pmd);
    if (descValid(oldPmd)) {
      // Linux 4.19: skip updating the PMD if the entry is unchanged.
      if (kvm.proto.fixSkipSameEntry && oldPmd === newPmd) {
        kvm.count(actor, CNT.skippedSame);
        return 0;
      }
      if (!pmdIsBlock(oldPmd)) {
        if (kvm.proto.fixUnmapTableBeforeBlock) {
          unmapStage2Range(kvm, actor, gfn & ~511, 512);
          continue; // goto retry
        }
        kvm.trace(actor, EV['table.leak'], gfn, descOa(oldPmd));
      }
      if (kvm.proto.breakBeforeMake) {
        breakEntry(kvm, actor, pmd, gfn);
        s2Write(kvm, actor, pmd, newPmd);
      } else {
        s2Write(kvm, actor, pmd, newPmd);
        kvmTlbFlushVmidIpa(kvm, actor, gfn);
      }
    } else {
      getTablePage(kvm, tableOf(kvm, pmd));
      s2Write(kvm, actor, pmd, newPmd);
    }
    kvm.count(actor, CNT.blockMaps);
    kvm.trace(actor, EV['map.block'], gfn, newPmd);
    return 0;
  }
}

/** Read-only descent for checks and tests: the leaf for gfn as {level, desc}, or level 0. */
export function s2Lookup(kvm: Kvm, gfn: number): { level: number; desc: number; entry: number } {
  const m = kvm.m;
  const root = kvmPgd(kvm);
  if (root < 0) return { level: 0, desc: 0, entry: -1 };
  const pgd = entryIndex(kvm, root, pgdIndex(gfn));
  const d1 = Atomics.load(m, pgd);
  if (!descIsTable(d1)) return { level: 0, desc: 0, entry: pgd };
  const pmd = entryIndex(kvm, descOa(d1), pmdIndex(gfn));
  const d2 = Atomics.load(m, pmd);
  if (!descValid(d2)) return { level: 0, desc: 0, entry: pmd };
  if (pmdIsBlock(d2)) return { level: LEVEL_PMD, desc: d2, entry: pmd };
  const pte = entryIndex(kvm, descOa(d2), pteIndex(gfn));
  const d3 = Atomics.load(m, pte);
  if (!descValid(d3)) return { level: 0, desc: 0, entry: pte };
  return { level: LEVEL_PTE, desc: d3, entry: pte };
}
