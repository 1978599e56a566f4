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
  KVM_INVALID_PTE_LOCKED,
  S2_AF,
  S2_S2AP_READ,
  S2_S2AP_WRITE,
  descIsLocked,
  descIsTable,
  descOa,
  descValid,
  descWritable,
  mkReadonly,
  mkTableDesc,
  mkWrite,
  pfnPte,
  S2_MEMATTR_DEVICE,
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
import { ACTOR, CTRL, KVM_NR_MEM_OBJS } from '../shm/layout.js';
import { CNT, EV, INV } from '../check/names.js';
import { kvmFlushRemoteTlbs, kvmTlbFlushVmidIpa, kvmTlbFlushVmidIpaNsh } from './tlb.js';
import { callRcuFreeTable, rcuReadLock, rcuReadUnlock } from '../sync/rcu.js';
import { bbmOnWrite, bbmPending, setTableInfo } from '../check/bbm.js';

/** The root table of the first VM life (kvm->arch.pgd at start); later lives take any free page. */
export const ROOT_TABLE = 0;
export const TABLE_FREE = 0;
export const TABLE_CACHED = 1;
export const TABLE_LIVE = 2;
/** Unlinked by a walker, waiting for an RCU grace period before it is freed (call_rcu; arm64 6.2 on). */
export const TABLE_RCU = 3;

export const ENOMEM = -12;
export const EFAULT = -14;
export const EAGAIN = -11;
export const EINVAL = -22;
/** -E2BIG: stage2_map_walker_try_leaf() cannot map a leaf of this size here (descend or split). */
export const E2BIG = -7;

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
  /** WARN_ON(!stage2_pte_is_locked(*ctx->ptep)) in stage2_make_pte(), or a locked entry met by an exclusive walker. */
  LOCKED_STATE: 6,
  /** WARN_ON(ctx->level == KVM_PGTABLE_LAST_LEVEL): the map walker asked to split a page. */
  SPLIT_LAST_LEVEL: 7,
  /** mmu_lock released by a walker with an entry still LOCKED (a break never made). */
  LOCKED_AT_UNLOCK: 8,
  /** WARN_ON_ONCE(kvm_dirty_ring_full(ring)) in kvm_dirty_ring_push(): a push into a full ring overwrites an entry. */
  DIRTY_RING_FULL: 9,
  /** WARN_ON_ONCE(!vcpu && !kvm_arch_allow_write_without_running_vcpu(kvm)) in mark_page_dirty_in_slot(). */
  WRITE_WITHOUT_VCPU: 10,
} as const;

/** lock-held violation kinds (word `kind`). */
export const LOCK_HELD = {
  /** An entry written without mmu_lock. */
  UNLOCKED: 0,
  /** An exclusive walker's store (WRITE_ONCE) under the read side of mmu_lock only. */
  EXCLUSIVE_UNDER_READ: 1,
  /** stage2_make_pte() on an entry this walker had not locked (the entry is not LOCKED). */
  MAKE_NOT_LOCKED: 2,
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
  /** A walk wrote (compare-and-swap, make) an entry of a table page freed since it entered it. */
  WRITE: 7,
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
function tableUseAfterFree(kvm: Kvm, actor: Actor, kind: number, table: number, detail: number, shared = false): false {
  const state = table >= 0 ? Atomics.load(kvm.m, kvm.layout.tableState + table) : -1;
  kvm.trace(actor, EV['walk.uaf'], table, kind, detail);
  kvm.violation(shared ? INV['rcu-use-after-free'] : INV['table-use-after-free'], actor.id, kind, table, detail, state);
  return false;
}

/**
 * The walk's check before it uses table page `t` again: still the page it
 * entered (same generation). One load: cheap enough for every entry.
 */
function tableStillEntered(kvm: Kvm, actor: Actor, t: number, gen: number, kind: number, detail: number, shared = false): boolean {
  if (Atomics.load(kvm.m, kvm.layout.tableGen + t) === gen) return true;
  return tableUseAfterFree(kvm, actor, kind, t, detail, shared);
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
  const lock = kvm.mmuLock;
  const held = lock.heldBy(actor);
  const old = Atomics.exchange(kvm.m, entry, desc);
  Atomics.add(kvm.m, CTRL.S2_CHANGES, 1);
  if (!held) {
    // The read side allows one exclusive-style store: 5.18's relax path
    // (f783ef1c0e82), which only adds write permission to a valid leaf,
    // WRITE_ONCE, while every other writer of entries holds the write side.
    const relax = kvm.proto.readLockPermFaults && descValid(old) && desc === (old | S2_S2AP_WRITE | S2_AF);
    if (!(relax && lock.readHeldBy(actor))) {
      const kind = lock.readHeldBy(actor) ? LOCK_HELD.EXCLUSIVE_UNDER_READ : LOCK_HELD.UNLOCKED;
      kvm.violation(INV['lock-held'], actor.id, kind, entry, desc, lock.owner());
      return;
    }
  }
  if (descValid(old) || bbmPending(kvm, actor)) bbmOnWrite(kvm, actor, entry, old, desc);
}

/**
 * stage2_try_set_pte() for a shared walker: `cmpxchg(ptep, old, new) ==
 * old`, under the read (or write) side of mmu_lock. `lock-held`: the walker
 * must hold a side of mmu_lock. Returns true if the entry held `old`.
 */
export function s2Cas(kvm: Kvm, actor: Actor, entry: number, old: number, desc: number): boolean {
  actor.sched.point(SITE['pgtable.cas']);
  const lock = kvm.mmuLock;
  if (!lock.heldBy(actor) && !lock.readHeldBy(actor)) {
    kvm.violation(INV['lock-held'], actor.id, LOCK_HELD.UNLOCKED, entry, desc, lock.owner());
  }
  if (Atomics.compareExchange(kvm.m, entry, old, desc) !== old) return false;
  Atomics.add(kvm.m, CTRL.S2_CHANGES, 1);
  if (descValid(old) || descValid(desc) || bbmPending(kvm, actor)) bbmOnWrite(kvm, actor, entry, old, desc);
  return true;
}

/**
 * The store of stage2_make_pte(): `smp_store_release(ctx->ptep, new)` to an
 * entry this walker locked. `lock-held`: a side of mmu_lock is held and the
 * entry is LOCKED (else the WARN_ON of stage2_make_pte(), and another walker
 * may own it).
 */
function s2Make(kvm: Kvm, actor: Actor, entry: number, desc: number): void {
  actor.sched.point(SITE['pgtable.write']);
  const lock = kvm.mmuLock;
  const cur = Atomics.load(kvm.m, entry);
  if (!lock.heldBy(actor) && !lock.readHeldBy(actor)) {
    kvm.violation(INV['lock-held'], actor.id, LOCK_HELD.UNLOCKED, entry, desc, lock.owner());
  } else if (!descIsLocked(cur)) {
    kvm.violation(INV['lock-held'], actor.id, LOCK_HELD.MAKE_NOT_LOCKED, entry, desc, cur);
  }
  Atomics.store(kvm.m, entry, desc);
  Atomics.add(kvm.m, CTRL.S2_CHANGES, 1);
  bbmOnWrite(kvm, actor, entry, cur, desc);
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
  /**
   * A table entry, before the walk descends into it (KVM_PGTABLE_WALK_TABLE_PRE);
   * the walk reloads the entry afterwards.
   */
  tablePre?(kvm: Kvm, actor: Actor, level: number, entry: number, desc: number, gfn: number, table: number, gen: number): boolean;
  /** After the walk of the child table `entry` points to (KVM_PGTABLE_WALK_TABLE_POST). */
  tablePost?(kvm: Kvm, actor: Actor, level: number, entry: number, desc: number, gfn: number, table: number, gen: number): boolean;
}

/** Walk flag: cond_resched_lock() before each 1 GiB step, then the 4.12 re-check (stage2_wp_range). */
export const WALK_RESCHED_BEFORE = 1 << 0;
/** Walk flag: the 4.12 re-check, then cond_resched_lock() after each 1 GiB step but the last (unmap_stage2_range, 4.11 on). */
export const WALK_RESCHED_AFTER = 1 << 1;
/**
 * Walk flag KVM_PGTABLE_WALK_SHARED (6.2): the walk runs under the read side
 * of mmu_lock inside rcu_read_lock(), changes entries by compare-and-swap,
 * and a table page freed under it is an `rcu-use-after-free`.
 */
export const WALK_SHARED = 1 << 2;
/**
 * Walk flag: visit every non-table entry, invalid ones included, and reload
 * the entry after the visit (KVM_PGTABLE_WALK_LEAF as the map and attribute
 * walkers use it; the walks of the 2014 code visit valid leaves only).
 */
export const WALK_LEAF_ALL = 1 << 3;

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
  // cond_resched_rwlock_write(), or _read() for a walk under the read side.
  const write = kvm.mmuLock.heldBy(actor);
  const site = write ? Atomics.load(kvm.m, kvm.layout.mmuLock + LOCKW.OWNER_SITE) : Math.max(0, kvm.mmuLock.readSite(actor.id));
  if (write) kvm.mmuLock.unlock(actor);
  else kvm.mmuReadUnlock(actor);
  kvm.count(actor, CNT.reschedDrops);
  actor.sched.point(SITE['pgtable.resched']);
  if (resched) actor.sched.idle(0); // preempt_schedule_common()
  if (write) kvm.mmuLock.lock(actor, site);
  else kvm.mmuLock.readLock(actor, site);
  return true;
}

function walkLevel(kvm: Kvm, actor: Actor, level: number, table: number, gen: number, start: number, end: number, v: S2Visitor, flags: number): boolean {
  const m = kvm.m;
  const L = kvm.layout;
  const shift = LEVEL_SHIFT[level];
  const size = 1 << shift;
  const unaligned = kvm.proto.wpRangeUnaligned;
  const shared = (flags & WALK_SHARED) !== 0;
  const leafAll = (flags & WALK_LEAF_ALL) !== 0;
  let gfn = start;
  while (gfn < end) {
    const idx = (gfn >>> shift) & (PTRS_PER_TABLE - 1);
    const entry = entryIndex(kvm, table, idx);
    const aligned = ((gfn >>> shift) + 1) << shift;
    const childEnd = aligned < end ? aligned : end;
    actor.sched.point(SITE['pgtable.walk']);
    // __kvm_pgtable_visit(): ctx.old = READ_ONCE(*ptep), once per visit.
    let desc = Atomics.load(m, entry);
    // The read counts only if the page was still the walk's when it read it.
    if (!tableStillEntered(kvm, actor, table, gen, UAF.READ, idx, shared)) return false;
    let isTable = level < LEVEL_PTE && descIsTable(desc);
    if (isTable && v.tablePre) {
      // KVM_PGTABLE_WALK_TABLE_PRE, then reload: the visitor may have
      // replaced the table (table to block).
      if (!v.tablePre(kvm, actor, level, entry, desc, gfn, table, gen)) return false;
      desc = Atomics.load(m, entry);
      if (!tableStillEntered(kvm, actor, table, gen, UAF.READ, idx, shared)) return false;
      isTable = level < LEVEL_PTE && descIsTable(desc);
    } else if (!isTable && (leafAll || descValid(desc))) {
      if (!v.leaf(kvm, actor, level, entry, desc, gfn, table, gen)) return false;
      if (leafAll) {
        // Reload after the leaf visit, to descend into a table the visitor
        // installed (a new level, block to table).
        desc = Atomics.load(m, entry);
        if (!tableStillEntered(kvm, actor, table, gen, UAF.READ, idx, shared)) return false;
        isTable = level < LEVEL_PTE && descIsTable(desc);
      }
    }
    if (isTable) {
      const child = descOa(desc);
      // Entering the child: under mmu_lock (and, for a shared walk, inside
      // an RCU read section) its page cannot be freed under us; a free page
      // here is an entry left pointing to freed memory.
      const childGen = Atomics.load(m, L.tableGen + child);
      if (Atomics.load(m, L.tableState + child) === TABLE_FREE) return tableUseAfterFree(kvm, actor, UAF.ENTER_FREED, child, table, shared);
      // A shared walker holds only rcu_read_lock() here: the child may be unlinked under it.
      if (shared) actor.sched.point(SITE['pgtable.descend']);
      if (!walkLevel(kvm, actor, level + 1, child, childGen, gfn, childEnd, v, flags)) return false;
      if (v.tablePost) {
        const post = Atomics.load(m, entry);
        if (!tableStillEntered(kvm, actor, table, gen, UAF.READ, idx, shared)) return false;
        if (!v.tablePost(kvm, actor, level, entry, post, gfn, table, gen)) return false;
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
    if (!walkLevel(kvm, actor, LEVEL_PGD, root, rootGen, addr, next, v, flags)) return false;
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

// ------------------------------------- the arm64 kvm_pgtable design (5.18 on)

/**
 * The leaf a map walk installs and what it returned: one map at a time per
 * thread (a walk does not re-enter itself).
 */
const md = { gfn: 0, level: 0, desc: 0, shared: false, noCache: false, ret: 0 };

/** KVM_PTE_LEAF_ATTR_S2_PERMS: what stage2_pte_needs_update() ignores. */
const S2_PERMS = S2_AF | S2_S2AP_WRITE | S2_S2AP_READ;

/** The first gfn of the range an entry at `level` covers. */
function levelBase(gfn: number, level: number): number {
  return level === LEVEL_PGD ? gfn & ~(PAGES_PER_PGD_ENTRY - 1) : level === LEVEL_PMD ? gfn & ~511 : gfn;
}

/**
 * stage2_try_set_pte(): an exclusive walker stores (WRITE_ONCE); a shared
 * one succeeds only if `cmpxchg(ptep, old, new) == old`. The
 * shared-plain-store bug stores for shared walkers too.
 */
export function stage2TrySetPte(kvm: Kvm, actor: Actor, entry: number, old: number, desc: number, shared: boolean): boolean {
  if (!shared || kvm.proto.sharedPlainStore) {
    s2Write(kvm, actor, entry, desc);
    return true;
  }
  return s2Cas(kvm, actor, entry, old, desc);
}

/**
 * stage2_try_break_pte(): the "break" of break-before-make. Fails on an
 * entry another walker holds LOCKED (an exclusive walker never meets one:
 * the WARN_ON, a kernel-bug here) or on a lost compare-and-swap; else the
 * entry is LOCKED (6.2 on; 0 before), the TLB invalidated for what the old
 * entry mapped (by IPA for a leaf, the whole range for a table: the whole
 * VMID here, as __kvm_tlb_flush_vmid in 6.2), and the table's count of a
 * valid old entry dropped.
 */
export function stage2TryBreakPte(kvm: Kvm, actor: Actor, entry: number, old: number, gfn: number, level: number, shared: boolean): boolean {
  const p = kvm.proto;
  if (descIsLocked(old)) {
    if (!shared) kvm.violation(INV['kernel-bug'], actor.id, KBUG.LOCKED_STATE, gfn, old, level);
    actor.lockedSeen = entry;
    return false;
  }
  if (!stage2TrySetPte(kvm, actor, entry, old, p.sharedWalker ? KVM_INVALID_PTE_LOCKED : 0, shared)) return false;
  if (p.sharedWalker) Atomics.store(kvm.m, kvm.actorWord(actor.id, ACTOR.LOCKED_ENTRY), entry + 1);
  if (!p.breakNoTlbi) {
    if (level < LEVEL_PTE && descIsTable(old)) {
      if (p.tableBreakFlushesIpa) kvmTlbFlushVmidIpa(kvm, actor, gfn);
      else kvmFlushRemoteTlbs(kvm, actor);
    } else if (descValid(old)) {
      kvmTlbFlushVmidIpa(kvm, actor, gfn);
    }
  }
  if (descValid(old)) putTablePage(kvm, actor, tableOf(kvm, entry)); // stage2_pte_is_counted(old)
  return true;
}

/**
 * stage2_make_pte(): take the table's count for a valid new entry, then
 * publish it (smp_store_release) over the entry this walker LOCKED. Before
 * 6.2 (no LOCKED state) the exclusive walker stores over the cleared entry.
 */
export function stage2MakePte(kvm: Kvm, actor: Actor, entry: number, desc: number): void {
  if (descValid(desc)) getTablePage(kvm, tableOf(kvm, entry));
  if (kvm.proto.sharedWalker) {
    actor.sched.point(SITE['pgtable.locked']);
    s2Make(kvm, actor, entry, desc);
    Atomics.store(kvm.m, kvm.actorWord(actor.id, ACTOR.LOCKED_ENTRY), 0);
  } else {
    s2Write(kvm, actor, entry, desc);
  }
}

/**
 * kvm_pgtable_stage2_free_unlinked() (the RCU callback
 * stage2_free_unlinked_table_rcu_cb, or at once): drop the count of every
 * valid entry of an unlinked table, free its child tables, then the page.
 */
export function kvmPgtableStage2FreeUnlinked(kvm: Kvm, actor: Actor, t: number): void {
  const m = kvm.m;
  for (let i = 0; i < PTRS_PER_TABLE; i++) {
    const d = Atomics.load(m, entryIndex(kvm, t, i));
    if (!descValid(d)) continue;
    putTablePage(kvm, actor, t);
    const info = Atomics.load(m, kvm.layout.tableInfo + t) & 3;
    if (info < LEVEL_PTE && descIsTable(d)) kvmPgtableStage2FreeUnlinked(kvm, actor, descOa(d));
  }
  freeTable(kvm, actor, t);
}

/**
 * mm_ops->free_unlinked_table(): a table a walker unlinked (table to block)
 * is freed after an RCU grace period (call_rcu, 6.2 on), since shared
 * walkers may still be inside it; 5.18's walker frees it at once under the
 * write side. The unlinked-free-no-grace bug frees at once in 6.2 too.
 */
function stage2FreeUnlinkedTable(kvm: Kvm, actor: Actor, child: number): void {
  if (kvm.proto.sharedWalker && !kvm.proto.unlinkedFreeNoGrace) callRcuFreeTable(kvm, actor, child);
  else kvmPgtableStage2FreeUnlinked(kvm, actor, child);
}

/**
 * stage2_map_walker_try_leaf(): install the leaf at its level. -E2BIG where
 * a leaf of this size cannot go (stage2_leaf_mapping_allowed); -EAGAIN when
 * the entry already maps this (stage2_pte_needs_update: the same output and
 * attributes, permissions aside: the relax path does those) or the break
 * lost a race; else break, then make.
 */
function mapTryLeaf(kvm: Kvm, actor: Actor, level: number, entry: number, old: number, gfn: number): number {
  // stage2_leaf_mapping_allowed(): the map's own level, or a finer one
  // inside its range (a table another walker installed under a block map:
  // the walk descends and maps each page, at the phys offset of its address).
  if (level < md.level) return E2BIG;
  let desc = md.desc;
  if (level > md.level) {
    desc = pfnPte(descOa(md.desc) + (gfn - md.gfn), (md.desc & S2_MEMATTR_DEVICE) !== 0);
    if (descWritable(md.desc)) desc = mkWrite(desc);
  }
  if (descValid(old) && ((old ^ desc) & ~S2_PERMS) === 0) return EAGAIN;
  const p = kvm.proto;
  if (p.makeWithoutBreak && descValid(old)) {
    // The bug: one compare-and-swap from the old entry to the new, no break.
    if (!stage2TrySetPte(kvm, actor, entry, old, desc, md.shared)) return EAGAIN;
  } else {
    // Before 6.2 an invalid entry is written without a break (nothing to break).
    if ((p.sharedWalker || descValid(old)) && !stage2TryBreakPte(kvm, actor, entry, old, gfn, level, md.shared)) return EAGAIN;
    stage2MakePte(kvm, actor, entry, desc);
  }
  if (level === LEVEL_PTE) {
    kvm.count(actor, CNT.pteMaps);
    kvm.trace(actor, EV['map.pte'], gfn, desc);
  } else {
    kvm.count(actor, CNT.blockMaps);
    kvm.trace(actor, EV['map.block'], gfn, desc);
  }
  return 0;
}

/** stage2_map_walker(): TABLE_PRE (table to block) and LEAF (new level, block to table, the leaf). */
const mapVisitor: S2Visitor = {
  // stage2_map_walk_table_pre()
  tablePre(kvm, actor, level, entry, desc, gfn, table, gen) {
    if (level < md.level) return true; // !stage2_leaf_mapping_allowed(): descend
    const ret = mapTryLeaf(kvm, actor, level, entry, desc, gfn);
    if (ret !== 0) {
      md.ret = ret;
      return false;
    }
    if (!wroteInEntered(kvm, actor, table, gen, entry, md.shared)) return false;
    stage2FreeUnlinkedTable(kvm, actor, descOa(desc));
    return true;
  },
  // stage2_map_walk_leaf()
  leaf(kvm, actor, level, entry, desc, gfn, table, gen) {
    const ret = mapTryLeaf(kvm, actor, level, entry, desc, gfn);
    if (ret !== E2BIG) {
      md.ret = ret;
      if (ret === 0 && !wroteInEntered(kvm, actor, table, gen, entry, md.shared)) return false;
      return ret === 0;
    }
    if (level === LEVEL_PTE) {
      kvm.violation(INV['kernel-bug'], actor.id, KBUG.SPLIT_LAST_LEVEL, gfn, desc, level);
      md.ret = EINVAL;
      return false;
    }
    if (md.noCache) {
      md.ret = ENOMEM; // if (!data->memcache) return -ENOMEM;
      return false;
    }
    const child = mmuMemoryCacheAlloc(kvm, actor);
    setTableInfo(kvm, child, levelBase(gfn, level), level + 1);
    if (kvm.proto.makeWithoutBreak && descValid(desc)) {
      // The bug: the block replaced by the table in one compare-and-swap.
      getTablePage(kvm, tableOf(kvm, entry));
      if (!stage2TrySetPte(kvm, actor, entry, desc, mkTableDesc(child), md.shared)) {
        putTablePage(kvm, actor, tableOf(kvm, entry));
        freeTable(kvm, actor, child);
        md.ret = EAGAIN;
        return false;
      }
      putTablePage(kvm, actor, tableOf(kvm, entry)); // the block's count goes, the table's stays
      md.ret = 0;
      return true;
    }
    if (!stage2TryBreakPte(kvm, actor, entry, desc, gfn, level, md.shared)) {
      // mm_ops->put_page(childp); the lost-race-leaks-table bug forgets it.
      if (!kvm.proto.lostRaceLeaksTable) freeTable(kvm, actor, child);
      md.ret = EAGAIN;
      return false;
    }
    // If we've run into an existing block mapping then replace it with a
    // table; accesses beyond the fault within the new table are mapped lazily.
    stage2MakePte(kvm, actor, entry, mkTableDesc(child));
    if (!wroteInEntered(kvm, actor, table, gen, entry, md.shared)) return false;
    if (descValid(desc)) {
      kvm.count(actor, CNT.blockSplits);
      kvm.trace(actor, EV.split, levelBase(gfn, level), descOa(desc));
    }
    md.ret = 0;
    return true; // the walk reloads the entry and descends into the new table
  },
};

/**
 * kvm_pgtable_stage2_map(): map `desc` (a page at LEVEL_PTE or a block at
 * LEVEL_PMD) at gfn, shared (KVM_PGTABLE_WALK_SHARED |
 * KVM_PGTABLE_WALK_HANDLE_FAULT, 6.2 on: inside rcu_read_lock) or
 * exclusive; `noCache`: no memory cache (change_pte), so a missing level
 * or a block is -ENOMEM. Returns 0, -EAGAIN (a lost race: the guest
 * re-executes), -ENOMEM or -EINVAL.
 */
export function kvmPgtableStage2Map(kvm: Kvm, actor: Actor, gfn: number, level: number, desc: number, shared: boolean, noCache = false): number {
  const span = level === LEVEL_PMD ? 512 : 1;
  md.noCache = noCache;
  md.gfn = gfn;
  md.level = level;
  md.desc = desc;
  md.shared = shared;
  md.ret = 0;
  if (shared) rcuReadLock(kvm, actor); // kvm_pgtable_walk_begin()
  kvmPgtableWalk(kvm, actor, gfn, gfn + span, mapVisitor, WALK_LEAF_ALL | (shared ? WALK_SHARED : 0));
  const ret = md.ret;
  if (shared) rcuReadUnlock(kvm, actor); // kvm_pgtable_walk_end()
  if (ret === EAGAIN) kvm.trace(actor, EV['map.eagain'], gfn, level);
  return ret;
}

/**
 * After a walker wrote an entry: the table page is still the one it entered
 * (a shared walker's page may only be freed after an RCU grace period), else
 * the write landed in freed memory (`rcu-use-after-free` for a shared walk).
 */
function wroteInEntered(kvm: Kvm, actor: Actor, table: number, gen: number, entry: number, shared: boolean): boolean {
  if (Atomics.load(kvm.m, kvm.layout.tableGen + table) === gen) return true;
  md.ret = EINVAL;
  return tableUseAfterFree(kvm, actor, UAF.WRITE, table, entry - entryIndex(kvm, table, 0), shared);
}

const rd = { shared: false, level: 0, granule: 0, ret: 0 };

/** stage2_attr_walker() as the relax path uses it: set write permission (and the access flag) on the leaf. */
const relaxVisitor: S2Visitor = {
  leaf(kvm, actor, level, entry, old, _gfn, table, gen) {
    if (!descValid(old)) {
      if (descIsLocked(old)) actor.lockedSeen = entry;
      // 6.2 on, KVM_PGTABLE_WALK_HANDLE_FAULT: -EAGAIN on an invalid or
      // LOCKED entry; 5.18's walker skips it (0).
      rd.ret = kvm.proto.sharedWalker ? EAGAIN : 0;
      return false;
    }
    rd.level = level;
    // The relax-checks-granule candidate fix: only the leaf the fault was taken on.
    if (kvm.proto.fixRelaxChecksGranule && rd.granule !== 0 && level !== rd.granule) {
      rd.ret = EAGAIN;
      return false;
    }
    const desc = old | S2_S2AP_WRITE | S2_AF;
    if (desc !== old) {
      if (!stage2TrySetPte(kvm, actor, entry, old, desc, rd.shared)) {
        rd.ret = EAGAIN;
        return false;
      }
      if (!wroteInEntered(kvm, actor, table, gen, entry, rd.shared)) {
        rd.ret = EINVAL;
        return false;
      }
    }
    rd.ret = 0;
    return true;
  },
};

/**
 * kvm_pgtable_stage2_relax_perms(): make the leaf at gfn writable by an
 * attribute walk, then invalidate the TLB for it: broadcast (by IPA) before
 * 6.5, the local TLB only from 6.5 (a12ab1378a88); only when the walk
 * returned 0 until 6.7, also after -EAGAIN from 6.7 (be097997a273). The
 * relax-skips-tlbi bug never invalidates. `granule`: the level of the entry
 * the fault was taken on (used by the relax-checks-granule candidate fix).
 */
export function kvmPgtableStage2RelaxPerms(kvm: Kvm, vcpu: Actor, gfn: number, shared: boolean, granule = 0): number {
  const p = kvm.proto;
  rd.shared = shared;
  rd.granule = granule;
  rd.level = LEVEL_PTE;
  rd.ret = 0;
  if (shared) rcuReadLock(kvm, vcpu);
  kvmPgtableWalk(kvm, vcpu, gfn, gfn + 1, relaxVisitor, WALK_LEAF_ALL | (shared ? WALK_SHARED : 0));
  const ret = rd.ret;
  const level = rd.level;
  if (shared) rcuReadUnlock(kvm, vcpu);
  kvm.count(vcpu, CNT.relaxes);
  kvm.trace(vcpu, EV.relax, gfn, ret);
  if (!p.relaxSkipsTlbi && (ret === 0 || (ret === EAGAIN && p.relaxTlbiOnEagain))) {
    if (p.relaxLocalTlbi) kvmTlbFlushVmidIpaNsh(kvm, vcpu, gfn, level);
    else kvmTlbFlushVmidIpa(kvm, vcpu, gfn);
  }
  return ret;
}

// ------------------------------------------- eager page splitting (6.5 on)

/** kvm->arch.mmu.split_page_cache: its base word (word 0 the count, then the pages). */
function splitCacheBase(kvm: Kvm): number {
  return kvm.layout.splitCache;
}

/** kvm_mmu_memory_cache_nr_free_objects(&kvm->arch.mmu.split_page_cache) */
export function splitCacheCount(kvm: Kvm): number {
  return Atomics.load(kvm.m, splitCacheBase(kvm));
}

/** The pages the split cache holds now (for the checks). */
export function splitCachePages(kvm: Kvm): number[] {
  const base = splitCacheBase(kvm);
  const n = Atomics.load(kvm.m, base);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(Atomics.load(kvm.m, base + 1 + i));
  return out;
}

/**
 * __kvm_mmu_topup_memory_cache(&kvm->arch.mmu.split_page_cache, capacity,
 * capacity), outside mmu_lock: fill the VM's split cache to its capacity.
 * Returns 0 or -ENOMEM (the pool ran dry: reported as table-conservation).
 */
export function splitCacheTopup(kvm: Kvm, actor: Actor): number {
  const m = kvm.m;
  const base = splitCacheBase(kvm);
  const cap = kvm.layout.splitCacheCap;
  let n = m[base];
  while (n < cap) {
    const t = tablePoolAlloc(kvm, actor);
    if (t < 0) {
      if (Atomics.compareExchange(m, CTRL.POOL_EMPTY_REPORTED, 0, 1) === 0) {
        kvm.violation(INV['table-conservation'], actor.id, KBUG.TABLE_POOL_EMPTY, kvm.layout.tables);
      }
      Atomics.store(m, base, n);
      return ENOMEM;
    }
    m[base + 1 + n] = t;
    n++;
    Atomics.store(m, base, n);
  }
  return 0;
}

/**
 * kvm_mmu_free_memory_cache(&kvm->arch.mmu.split_page_cache): every page
 * back to the pool (kvm_arch_commit_memory_region when logging goes off or
 * the slot goes away; kvm_uninit_stage2_mmu).
 */
export function splitCacheFree(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  const base = splitCacheBase(kvm);
  let n = m[base];
  while (n > 0) {
    n--;
    Atomics.store(m, base, n);
    tablePoolFree(kvm, actor, m[base + 1 + n]);
  }
}

/** kvm_mmu_memory_cache_alloc() on the split cache: a fresh page, refcount 1. */
function splitCacheAlloc(kvm: Kvm): number {
  const m = kvm.m;
  const base = splitCacheBase(kvm);
  const n = m[base];
  if (n <= 0) throw new Error('BUG_ON(!mc->nobjs): split page cache empty');
  const t = m[base + n];
  Atomics.store(m, base, n - 1);
  Atomics.store(m, kvm.layout.tableRef + t, 1);
  Atomics.store(m, kvm.layout.tableState + t, TABLE_LIVE);
  return t;
}

/** What kvm_pgtable_stage2_split() returned (one walk at a time per thread). */
const sd = { ret: 0 };

/**
 * stage2_split_walker() (arch/arm64/kvm/hyp/pgtable.c), a leaf visitor of
 * kvm_pgtable_stage2_split(): a valid block becomes a table of 512 PTEs
 * mapping the same frames with the block's permissions
 * (kvm_pgtable_stage2_create_unlinked with kvm_pgtable_stage2_pte_prot(pte)
 * and force_pte), built from the split cache while unlinked, then put in
 * place by break-before-make (stage2_try_break_pte: the block invalidated by
 * IPA at its level; stage2_make_pte). Pages (the last level) and invalid
 * entries are left alone; a cache too small for the block is -ENOMEM. Runs
 * exclusive, under the write side of mmu_lock. The split-keeps-write bug
 * makes the PTEs writable whatever the block was.
 */
const splitVisitor: S2Visitor = {
  leaf(kvm, actor, level, entry, desc, gfn, table, gen) {
    if (level !== LEVEL_PMD || !pmdIsBlock(desc)) return true;
    // stage2_block_get_nr_page_tables(level): one PTE table for a 2 MiB block.
    if (splitCacheCount(kvm) < 1) {
      sd.ret = ENOMEM;
      return false;
    }
    const base = levelBase(gfn, level);
    const child = splitCacheAlloc(kvm);
    setTableInfo(kvm, child, base, LEVEL_PTE);
    const device = (desc & S2_MEMATTR_DEVICE) !== 0;
    const write = descWritable(desc) || kvm.proto.splitKeepsWrite;
    const m = kvm.m;
    // The unlinked table is private until it is linked: plain stores, and
    // its count is 1 + its 512 valid entries (stage2_map_walk_leaf's get_page per entry).
    for (let i = 0; i < PTRS_PER_TABLE; i++) {
      let pte = pfnPte(descOa(desc) + i, device);
      if (write) pte = mkWrite(pte);
      Atomics.store(m, entryIndex(kvm, child, i), pte);
    }
    Atomics.store(m, kvm.layout.tableRef + child, 1 + PTRS_PER_TABLE);
    if (!stage2TryBreakPte(kvm, actor, entry, desc, base, level, false)) {
      kvmPgtableStage2FreeUnlinked(kvm, actor, child);
      sd.ret = EAGAIN;
      return false;
    }
    stage2MakePte(kvm, actor, entry, mkTableDesc(child));
    if (!tableStillEntered(kvm, actor, table, gen, UAF.WRITE, entry - entryIndex(kvm, table, 0))) {
      sd.ret = EINVAL;
      return false;
    }
    kvm.count(actor, CNT.eagerSplits);
    kvm.trace(actor, EV['split.eager'], base, descOa(desc), write ? 1 : 0);
    return true;
  },
};

/**
 * kvm_pgtable_stage2_split(): split every block of [gfn, end) with pages
 * from the split cache. Caller holds the write side of mmu_lock. Returns 0,
 * -ENOMEM (the cache ran out) or another error of the walk.
 */
export function kvmPgtableStage2Split(kvm: Kvm, actor: Actor, gfn: number, end: number): number {
  sd.ret = 0;
  kvmPgtableWalk(kvm, actor, gfn, end, splitVisitor, 0);
  return sd.ret;
}

/**
 * need_split_memcache_topup_or_resched(): need_resched() or
 * rwlock_needbreak(&kvm->mmu_lock), or the cache holds less than one
 * chunk's worth (kvm_mmu_split_nr_page_tables(chunk_size)).
 */
function needSplitMemcacheTopupOrResched(kvm: Kvm, actor: Actor): boolean {
  if (kvm.needResched(actor.id) || kvm.mmuLockIsContended()) return true;
  return splitCacheCount(kvm) < kvm.layout.splitCacheCap;
}

/**
 * kvm_mmu_split_huge_pages() (arch/arm64/kvm/mmu.c, 6.5): with the write
 * side of mmu_lock held, split [gfn, end) chunk by chunk (chunk_size =
 * KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE; 0: nothing to do). Before each chunk,
 * if need_split_memcache_topup_or_resched(), drop the lock, cond_resched(),
 * top the split cache up to its capacity, retake the lock (eager splitting
 * is best-effort: a failed top-up ends it). Returns 0 or the first error.
 */
export function kvmMmuSplitHugePages(kvm: Kvm, actor: Actor, gfn: number, end: number): number {
  const chunkPages = (kvm.cfg.eagerSplitChunk ?? 0) / 4096;
  if (chunkPages === 0) return 0;
  let addr = gfn;
  let ret = 0;
  do {
    if (needSplitMemcacheTopupOrResched(kvm, actor)) {
      const site = Atomics.load(kvm.m, kvm.layout.mmuLock + LOCKW.OWNER_SITE);
      kvm.mmuLock.unlock(actor); // write_unlock(&kvm->mmu_lock)
      kvm.count(actor, CNT.splitLockDrops);
      actor.sched.point(SITE['split.resched']);
      actor.sched.idle(0); // cond_resched()
      ret = splitCacheTopup(kvm, actor);
      kvm.mmuLock.lock(actor, site);
      if (ret !== 0) break;
    }
    if (kvmPgd(kvm) < 0) return EINVAL; // pgt = kvm->arch.mmu.pgt; if (!pgt) return -EINVAL;
    // next = __stage2_range_addr_end(addr, end, chunk_size)
    const boundary = addr - (addr % chunkPages) + chunkPages;
    const next = boundary < end ? boundary : end;
    ret = kvmPgtableStage2Split(kvm, actor, addr, next);
    if (ret !== 0) break;
    addr = next;
  } while (addr !== end);
  return ret;
}
