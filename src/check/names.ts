/**
 * Stable names: invariants (docs/design.md section 3), counters (the JSON
 * report's `counters`) and trace events. Numbered for shared memory, named
 * for reports.
 */
export const INVARIANTS = [
  'migration-equal',
  'shadow-equal',
  'frame-use-after-free',
  'table-conservation',
  'no-block-while-logging',
  'tlb-coherent',
  'lock-held',
  'progress',
  'selftest-dirty-log',
  /** A kernel BUG_ON / VM_BUG_ON / WARN_ON the model asserts instead of trusting. */
  'kernel-bug',
  /** Host frames: every refcount explained, no free frame mapped, free + used = the pool. */
  'frame-conservation',
  /** synchronize_srcu() returns only after every read section open when it began has ended (rcutorture's check). */
  'grace-period',
  /** Live: entry changes against the TLB flushes that cover them (src/check/bbm.ts). */
  'break-before-make',
  /** Every valid stage-2 leaf maps the frame the host maps at that hva, with no more permission. */
  'stage2-host-coherent',
  /** A stage-2 walk reads or writes a table page that was freed (or freed and reused) since it entered it. */
  'table-use-after-free',
  /**
   * A shared stage-2 walk (under rcu_read_lock) reads a table page freed
   * since it entered it: an unlinked table must wait for an RCU grace period.
   */
  'rcu-use-after-free',
] as const;
export type InvariantName = (typeof INVARIANTS)[number];
export const INV: { readonly [K in InvariantName]: number } = Object.fromEntries(
  INVARIANTS.map((n, i) => [n, i]),
) as { readonly [K in InvariantName]: number };

export const COUNTER_NAMES = [
  'accesses',
  'faults',
  'blockMaps',
  'pteMaps',
  'dissolves',
  'dirtyMarked',
  'harvests',
  'pagesCopied',
  'invalidations',
  'changePte',
  'hostMigrations',
  'tlbHits',
  'tlbMisses',
  'faultRetries',
  'tlbFlushes',
  'writes',
  'ksmMerges',
  'cowBreaks',
  'thpSplits',
  'thpCollapses',
  'zaps',
  'hostFaults',
  'wpRanges',
  'efaults',
  'tablesFreed',
  'loggingOn',
  'loggingOff',
  'skippedSame',
  'migrations',
  'cancels',
  'rounds',
  'verifiedPages',
  'mismatches',
  'selftestRounds',
  'selftestPagesChecked',
  /** Page migrations and THP collapses refused because a frame had a reference beyond its mappings. */
  'hostPinnedRefusals',
  'zeroPageFaults',
  'zeroPageRefsLeaked',
  'thpPmdSplits',
  'thpDeferredSplits',
  'mprotects',
  'reschedDrops',
  'teardowns',
  'memslotDeletes',
  /** migrate_pages() passes that failed with -EAGAIN (an extra reference, e.g. an in-flight fault's). */
  'hostMigrationRetries',
  /** Host-MM operations aimed at a page a vCPU is using right now. */
  'hostOpsHinted',
  /** vCPU accesses aimed at an edge (slot, bitmap-word or 2 MiB boundary, a page under a host operation). */
  'edgeAccesses',
  /** kvm_pgtable_stage2_relax_perms() calls (arm64 design). */
  'relaxes',
  /** Faults of the arm64 design that ended -EAGAIN on a lost race (a compare-and-swap lost, an entry LOCKED by another walker). */
  'lostRaces',
  /** Permission faults on an entry the tables already give write access to: a TLB kept the read-only entry. */
  'spuriousPermFaults',
  /** Blocks split into a PTE table by the map walker (block to table). */
  'blockSplits',
  /** Table pages freed by an RCU callback after a grace period. */
  'rcuTablesFreed',
  /** Stage-2 faults that took the read side of mmu_lock. */
  'readSideFaults',
  /** Blocks split by eager page splitting (kvm_mmu_split_huge_pages), at logging-on or in KVM_CLEAR_DIRTY_LOG. */
  'eagerSplits',
  /** KVM_CLEAR_DIRTY_LOG calls (manual-protect dirty logging). */
  'dirtyLogClears',
  /** Times eager splitting dropped mmu_lock to top up its cache or reschedule. */
  'splitLockDrops',
  /** Dirty ring (--dirty-log ring): entries pushed by vCPUs (kvm_dirty_ring_push). */
  'ringPushes',
  /** KVM_EXIT_DIRTY_RING_FULL exits (kvm_dirty_ring_check_request). */
  'ringFullExits',
  /** Entries userspace collected (DIRTY seen, RESET set). */
  'ringHarvested',
  /** Entries KVM_RESET_DIRTY_RINGS reset (kvm_dirty_ring_reset). */
  'ringResets',
  /** Pages dirtied without a running vCPU, set in the backup bitmap. */
  'backupBitmapMarks',
  /** Guest pages written by the host through KVM (kvm_write_guest: the vgic/ITS table save). */
  'hostGuestWrites',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export const CNT: { readonly [K in CounterName]: number } = Object.fromEntries(
  COUNTER_NAMES.map((n, i) => [n, i]),
) as { readonly [K in CounterName]: number };

export const TRACE_EVENTS = [
  'none',
  'access',
  'fault',
  'fault.retry',
  'map.pte',
  'map.block',
  'dissolve',
  'unmap',
  'wp',
  'flush.ipa',
  'flush.all',
  'notifier.start',
  'notifier.end',
  'change_pte',
  'dirty.mark',
  'harvest',
  'log.on',
  'log.off',
  'host.migrate',
  'host.ksm',
  'host.cow',
  'thp.split',
  'thp.collapse',
  'host.zap',
  'copy.round',
  'stop-and-copy',
  'table.free',
  'table.leak',
  'lock',
  'unlock',
  'park',
  'pause',
  'host.zero',
  'thp.split_pmd',
  'thp.deferred_split',
  'host.mprotect',
  'pgd.alloc',
  'pgd.free',
  'memslot.delete',
  'memslot.create',
  'notifier.release',
  'vm.destroy',
  'walk.uaf',
  'map.eagain',
  'relax',
  'split',
  'rcu.free',
  'log.clear',
  'split.eager',
  'ring.push',
  'ring.full',
  'ring.harvest',
  'ring.reset',
  'host.write',
] as const;
export type TraceEventName = (typeof TRACE_EVENTS)[number];
export const EV: { readonly [K in TraceEventName]: number } = Object.fromEntries(
  TRACE_EVENTS.map((n, i) => [n, i]),
) as { readonly [K in TraceEventName]: number };
