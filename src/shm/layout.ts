/**
 * One layout of every shared region, computed once from the configuration.
 *
 * All shared state lives in a single SharedArrayBuffer viewed as one
 * Int32Array (`m`), so that any word can be named by its index: locks,
 * descriptors, frames and flags alike. That is what lets the scheduler's
 * `waitWhile(index, value)` block on any word, and lets checks read
 * everything after the fact. Counters that may pass 2^31 live in a Float64
 * region at the end (single writer each: the actor that owns the row).
 *
 * Nothing is allocated after start: TIGER_STYLE, all memory sized up front.
 */
import { PTRS_PER_TABLE, PTRS_PER_PMD, PAGES_PER_PGD_ENTRY, PAGE_SIZE } from '../arch/stage2.js';
import { DIRTY_RING_DEFAULT_ENTRIES, type ModelConfig } from '../config.js';

/** KVM_MMU_CACHE_MIN_PAGES on arm with 3 levels: one PMD and one PTE table. */
export const KVM_MMU_CACHE_MIN_PAGES = 2;
/** KVM_NR_MEM_OBJS: what a top-up fills the cache to. */
export const KVM_NR_MEM_OBJS = 40;
export const MAX_MEMSLOTS = 4;
export const SLOT_WORDS = 8;
export const MAX_VIOLATIONS = 64;
export const VIOLATION_WORDS = 8;
export const TRACE_RING = 64;
export const TRACE_WORDS = 4;
export const ACTOR_WORDS = 8;
/** Frames are counted in 2 MiB groups; group 0 is never used (frame 0 means "none"). */
export const FRAMES_PER_GROUP = PTRS_PER_PMD;
export const MAX_LOCK_SITES = 16;
export const LOCK_SITE_WORDS = 16;
export const N_COUNTERS = 64;
/** TLB generation words (src/kvm/tlb.ts): stage-1 (combined entries) and all entries. */
export const TLB_GEN_WORDS = 2;
/**
 * Per-actor bookkeeping of the live break-before-make check (src/check/bbm.ts):
 * a header, the entries changed without a covering flush yet (BBM_PENDING
 * records of 3 words), the entries changed in the current critical section
 * (BBM_CHANGED records of 2 words).
 */
export const BBM_PENDING = 8;
export const BBM_CHANGED = 16;
export const BBM_HEADER_WORDS = 8;
export const BBM_ACTOR_WORDS = BBM_HEADER_WORDS + BBM_PENDING * 3 + BBM_CHANGED * 2;

/** Control words (indices into `m`). */
export const CTRL = {
  MAGIC: 0,
  /** Orchestrator asks every actor to park (stop-the-world). */
  STOP: 1,
  /** Number of actors parked at the barrier. */
  PARKED: 2,
  /** Bumped to release the parked actors. */
  RESUME_GEN: 3,
  /** The run is over: actors return. */
  END: 4,
  /** The migrator asks vCPUs to pause (stop-and-copy). */
  PAUSE_VCPUS: 5,
  VCPUS_PAUSED: 6,
  /** kvm->mmu_notifier_seq */
  MMU_NOTIFIER_SEQ: 7,
  /** kvm->mmu_notifier_count */
  MMU_NOTIFIER_COUNT: 8,
  /** SRCU: the current epoch; readers record the epoch they entered in. */
  SRCU_EPOCH: 9,
  VIOLATION_COUNT: 10,
  TABLE_FREE_TOP: 11,
  FRAME_FIFO_HEAD: 12,
  FRAME_FIFO_TAIL: 13,
  GROUP_TOP: 14,
  /** Actors expected at a stop-the-world barrier. */
  ACTORS_RUNNING: 15,
  /** Set once a violation asks the run to stop. */
  FAILED: 16,
  /** Incremented each time a whole-VM or by-IPA flush starts (debug/trace). */
  FLUSH_COUNT: 17,
  /** Set when the table pool first ran dry (reported once). */
  POOL_EMPTY_REPORTED: 21,
  /** Set when the host frame pool first ran dry (reported once, as frame-conservation). */
  FRAME_POOL_EMPTY_REPORTED: 47,
  /** Migration iteration, read by vCPUs for the dirty_log_test workload. */
  ITERATION: 18,
  /** Bumped whenever STOP, PAUSE_VCPUS or END change: parked actors wait on it. */
  CONTROL_GEN: 19,
  /** vCPUs that finished their --ops quota. */
  VCPUS_DONE: 20,
  /** kvm->arch.pgd: the root table's index + 1, 0 when the stage-2 tables are freed (NULL). */
  S2_PGD: 22,
  /** 1 once the VM's MMU notifier left the mm's list (__mmu_notifier_release or unregister); 0 while registered. */
  MMU_NOTIFIER_GONE: 23,
  /** The VM life whose teardown was asked for (0 = none yet); lives count from 1 (VM_ENDED + 1 is the current one). */
  TEARDOWN_REQ: 24,
  /** The VM life whose exit_mmap (__mmu_notifier_release) the host-MM actor has reached. */
  TEARDOWN_ARRIVED: 25,
  /** 1 while __mmu_notifier_release() runs (what mmu_notifier_unregister's synchronize_srcu waits for). */
  MM_RELEASING: 26,
  /** VM lives ended so far (teardowns); a new VM starts the next life. */
  VM_ENDED: 27,
  /**
   * RCU for unlinked stage-2 tables (src/sync/rcu.ts): the grace-period
   * number, and the callback list [HEAD, MID) waiting for the current grace
   * period, [MID, TAIL) queued for the next (indices into layout.rcuList,
   * counted up, taken modulo its length).
   */
  RCU_GP: 28,
  RCU_HEAD: 29,
  RCU_MID: 30,
  RCU_TAIL: 31,
  /**
   * Bumped at every stage-2 entry write: a check that compares TLBs with the
   * tables while other walkers run (a read-side critical section's release)
   * knows the tables moved under it.
   */
  S2_CHANGES: 32,
  /**
   * dist->table_write_in_progress: the host is saving vgic/ITS tables into
   * guest RAM (kvm_arch_allow_write_without_running_vcpu(), dirty ring).
   */
  VGIC_TABLE_WRITE: 56,
  /** Number of whole-table frees (for trace). */
  WORDS: 64,
} as const;

/** Lock word blocks. */
export const LOCK_WORDS = 8;

export interface Layout {
  vcpus: number;
  nActors: number;
  hostActor: number;
  migrator: number;
  checker: number;
  /** Guest RAM pages (slot 0) and device pages (slot 1, 0 when absent). */
  ramPages: number;
  devicePages: number;
  /** All guest pages = host pages (hva page index == gfn in this model). */
  pages: number;
  regions: number;
  tables: number;
  frames: number;
  groups: number;
  tlbPageSlots: number;
  tlbBlockSlots: number;
  tlbWords: number;

  mmuLock: number;
  zoneLock: number;
  slotsLock: number;
  tableLock: number;
  srcuReaders: number;
  actors: number;
  tablesBase: number;
  tableRef: number;
  tableState: number;
  tableFree: number;
  memcache: number;
  memcacheWords: number;
  frameRef: number;
  frameFlags: number;
  frameData: number;
  frameFifo: number;
  groupStack: number;
  hpte: number;
  regionBacking: number;
  slots: number;
  bitmaps: number;
  bitmapWords: number;
  shadow: number;
  dest: number;
  tlb: number;
  violations: number;
  trace: number;
  lockStats: number;
  /** TLB generations (TLB_GEN_WORDS). */
  tlbGen: number;
  /** Per table page: the first gfn it maps << 2 | its level (the reverse map the checks use). */
  tableInfo: number;
  /** Per-actor break-before-make bookkeeping (BBM_ACTOR_WORDS each). */
  bbm: number;
  /** Per table page: bumped each time the page is freed (a walk that entered it sees a reuse). */
  tableGen: number;
  /** Per actor: 0 outside an RCU read section, (grace period << 1) | 1 inside one. */
  rcuReaders: number;
  /** The readers' words when the current grace period started. */
  rcuSnap: number;
  /** Table pages waiting for a grace period (call_rcu callbacks), a ring as long as the pool. */
  rcuList: number;
  /**
   * mmu_lock's read holders (`--lock rwlock`, src/sync/rwlock.ts): per
   * actor, the lock_stat site + 1 while it holds the read side, else 0.
   */
  mmuLockReaders: number;
  /**
   * kvm->arch.mmu.split_page_cache (eager page splitting, 6.5): word 0 the
   * number of pages it holds, then up to splitCacheCap table pages.
   */
  splitCache: number;
  /** kvm_mmu_split_nr_page_tables(chunk size): the split cache's capacity (0: eager splitting off). */
  splitCacheCap: number;
  /**
   * Per slot page, one bit: a KVM_CLEAR_DIRTY_LOG write-protected it since
   * logging went on (what `no-block-while-logging` needs under
   * KVM_DIRTY_LOG_INITIALLY_SET); laid out as the dirty bitmaps.
   */
  clearedBitmap: number;
  /**
   * Dirty rings (`--dirty-log ring`), one per vCPU: RING_HDR_WORDS of
   * header (RING), then dirtyRingSize entries of RING_ENTRY_WORDS
   * {flags, slot, offset} (struct kvm_dirty_gfn). Empty in bitmap mode, so
   * that every other region keeps its offset.
   */
  dirtyRings: number;
  /** Entries per ring; 0 in bitmap mode. */
  dirtyRingSize: number;
  /** Words of one vCPU's ring (header and entries). */
  dirtyRingWords: number;
  /** Total Int32 words. */
  words: number;
  /** Offset in Float64 elements of the counters region. */
  countersF64: number;
  bytes: number;
}

/** Device memory slot size when the backing is `mixed`: one 2 MiB region. */
export const DEVICE_PAGES_MIXED = 512;

/**
 * kvm_mmu_split_nr_page_tables() (arch/arm64/kvm/mmu.c): the most table
 * pages splitting a range of `chunk` bytes of blocks down to PTEs needs,
 * with 4 KiB pages (KVM_PGTABLE_MIN_BLOCK_LEVEL 1: 1 GiB blocks count too):
 * DIV_ROUND_UP(range, PUD_SIZE) + DIV_ROUND_UP(range, PMD_SIZE). 0 for 0.
 */
export function kvmMmuSplitNrPageTables(chunk: number): number {
  if (chunk <= 0) return 0;
  return Math.ceil(chunk / (1024 * 1024 * 1024)) + Math.ceil(chunk / (2 * 1024 * 1024));
}

export function computeLayout(c: ModelConfig): Layout {
  const vcpus = c.vcpus;
  const nActors = vcpus + 3;
  const ramPages = c.guestMem / PAGE_SIZE;
  const devicePages = c.backing === 'mixed' ? DEVICE_PAGES_MIXED : 0;
  const pages = ramPages + devicePages;
  const regions = Math.ceil(pages / PTRS_PER_PMD);
  const pteTables = regions;
  const pmdTables = Math.ceil(pages / PAGES_PER_PGD_ENTRY);
  // root + every table a fully split guest needs + what the caches can hold
  // + slack, so that a leaking profile is caught by the checks long before
  // the pool runs dry.
  const tables = 1 + pteTables + pmdTables + nActors * KVM_NR_MEM_OBJS + Math.max(256, pteTables >> 1) + kvmMmuSplitNrPageTables(c.eagerSplitChunk ?? 0);
  const spareGroups = Math.max(8, Math.ceil(regions / 8));
  const groups = 1 + regions + spareGroups;
  const frames = groups * FRAMES_PER_GROUP;
  const bitmapWords = Math.ceil(pages / 32) + MAX_MEMSLOTS;
  const tlbWords = (c.tlbPageSlots + c.tlbBlockSlots) * 2;
  const memcacheWords = 1 + KVM_NR_MEM_OBJS;
  const splitCacheCap = kvmMmuSplitNrPageTables(c.eagerSplitChunk ?? 0);

  let w = CTRL.WORDS;
  const take = (n: number): number => {
    const at = w;
    w += n;
    return at;
  };
  const mmuLock = take(LOCK_WORDS);
  const zoneLock = take(LOCK_WORDS);
  const slotsLock = take(LOCK_WORDS);
  const tableLock = take(LOCK_WORDS);
  const srcuReaders = take(nActors);
  const actors = take(nActors * ACTOR_WORDS);
  const tablesBase = take(tables * PTRS_PER_TABLE);
  const tableRef = take(tables);
  const tableState = take(tables);
  const tableFree = take(tables);
  const memcache = take(nActors * memcacheWords);
  const frameRef = take(frames);
  const frameFlags = take(frames);
  const frameData = take(frames);
  const frameFifo = take(frames);
  const groupStack = take(groups);
  const hpte = take(pages);
  const regionBacking = take(regions);
  const slots = take(MAX_MEMSLOTS * SLOT_WORDS);
  const bitmaps = take(bitmapWords);
  const shadow = take(pages);
  const dest = take(pages);
  const tlb = take(vcpus * tlbWords);
  const violations = take(MAX_VIOLATIONS * VIOLATION_WORDS);
  const trace = take(nActors * (1 + TRACE_RING * TRACE_WORDS));
  const lockStats = take(nActors * MAX_LOCK_SITES * LOCK_SITE_WORDS);
  const tlbGen = take(TLB_GEN_WORDS);
  const tableInfo = take(tables);
  const bbm = take(nActors * BBM_ACTOR_WORDS);
  const tableGen = take(tables);
  const rcuReaders = take(nActors);
  const rcuSnap = take(nActors);
  const rcuList = take(tables);
  const mmuLockReaders = take(nActors);
  const splitCache = take(1 + splitCacheCap);
  const clearedBitmap = take(bitmapWords);
  const dirtyRingSize = c.dirtyLog === 'ring' ? (c.dirtyRingSize ?? DIRTY_RING_DEFAULT_ENTRIES) : 0;
  const dirtyRingWords = dirtyRingSize === 0 ? 0 : RING_HDR_WORDS + dirtyRingSize * RING_ENTRY_WORDS;
  const dirtyRings = take(vcpus * dirtyRingWords);
  if (w % 2 === 1) w += 1;
  const countersF64 = w / 2;
  const words = w + nActors * N_COUNTERS * 2;
  return {
    vcpus,
    nActors,
    hostActor: vcpus,
    migrator: vcpus + 1,
    checker: vcpus + 2,
    ramPages,
    devicePages,
    pages,
    regions,
    tables,
    frames,
    groups,
    tlbPageSlots: c.tlbPageSlots,
    tlbBlockSlots: c.tlbBlockSlots,
    tlbWords,
    mmuLock,
    zoneLock,
    slotsLock,
    tableLock,
    srcuReaders,
    actors,
    tablesBase,
    tableRef,
    tableState,
    tableFree,
    memcache,
    memcacheWords,
    frameRef,
    frameFlags,
    frameData,
    frameFifo,
    groupStack,
    hpte,
    regionBacking,
    slots,
    bitmaps,
    bitmapWords,
    shadow,
    dest,
    tlb,
    violations,
    trace,
    lockStats,
    tlbGen,
    tableInfo,
    bbm,
    tableGen,
    rcuReaders,
    rcuSnap,
    rcuList,
    mmuLockReaders,
    splitCache,
    splitCacheCap,
    clearedBitmap,
    dirtyRings,
    dirtyRingSize,
    dirtyRingWords,
    words,
    countersF64,
    bytes: words * 4,
  };
}

/** Per-actor words (relative to layout.actors + actor * ACTOR_WORDS). */
export const ACTOR = {
  /** Odd while a vCPU is inside a guest access (TLB lookup .. memory op). */
  ACCESS_SEQ: 0,
  /** 1 while parked at a stop-the-world barrier. */
  PARKED: 1,
  /** Write sequence number of a vCPU (source of unique values). */
  WRITE_SEQ: 2,
  /** Last progress tick (completed operations), read by the watchdog. */
  PROGRESS: 3,
  /** What the actor is blocked on (word index + 1), 0 when running. */
  WAITING_ON: 4,
  /** Actor kind code (see stress). */
  KIND: 5,
  /**
   * The guest page this actor works on now, + 1 (0: none): a vCPU's access
   * in flight (the page it faults on, when it faults), the host-MM actor's
   * operation. Hints only, for aiming at pages in use (src/actors).
   */
  TARGET_GFN: 6,
  /** The stage-2 entry (word index + 1) this walker LOCKED and has not made yet (arm64 6.2 on), 0 for none. */
  LOCKED_ENTRY: 7,
} as const;

/** Words of a dirty ring's header. */
export const RING_HDR_WORDS = 8;
/** Words of one ring entry: struct kvm_dirty_gfn {flags, slot, offset}. */
export const RING_ENTRY_WORDS = 3;
/** A dirty ring's header words (relative to the ring's base). */
export const RING = {
  /** ring->dirty_index: entries pushed (KVM's producer index). */
  DIRTY_INDEX: 0,
  /** ring->reset_index: entries reset by KVM_RESET_DIRTY_RINGS. */
  RESET_INDEX: 1,
  /** KVM_REQ_DIRTY_RING_SOFT_FULL pending on the vCPU. */
  SOFT_FULL_REQ: 2,
  /** Userspace's fetch index (QEMU's kvm_dirty_ring_reap_one, the selftest's dirty_ring_collect_one). */
  FETCH_INDEX: 3,
  /** gfn + 1 of the access in flight when the vCPU exited with KVM_EXIT_DIRTY_RING_FULL (dirty_log_test's dirty_ring_last_page), 0 none. */
  LAST_PAGE: 4,
  /** KVM_EXIT_DIRTY_RING_FULL exits taken. */
  FULL_EXITS: 5,
} as const;
/** Entry flags (include/uapi/linux/kvm.h). */
export const KVM_DIRTY_GFN_F_DIRTY = 1 << 0;
export const KVM_DIRTY_GFN_F_RESET = 1 << 1;
