/**
 * Scheduling-point sites: every place in the protocol where another thread
 * could interleave with a shared-memory step. Numbered for speed, named for
 * reports and schedules.
 */
export const SITE_NAMES = [
  'lock.acquire',
  'lock.spin',
  'lock.release',
  'access.tlb',
  'access.walk',
  'access.store',
  'access.load',
  'fault.entry',
  'fault.seq',
  'fault.gfn_to_pfn',
  'fault.locked',
  'fault.done',
  'pgtable.write',
  'pgtable.walk',
  'tlb.flush',
  'tlb.flush.wait',
  'hostpt.lock',
  'hostpt.migrating',
  'host.op',
  'notifier.start',
  'notifier.end',
  'srcu.read',
  'srcu.sync',
  'memslot.publish',
  'dirty.mark',
  'dirty.harvest',
  'migrate.copy',
  'memcache.topup',
  'frame.alloc',
  'park',
  'actor.loop',
  'fault.retry',
  'pgtable.resched',
  /** Just after a memslot update is published, before the grace period or write-protect. */
  'memslot.published',
  /** A shared walker's compare-and-swap of an entry it read (stage2_try_set_pte). */
  'pgtable.cas',
  /** Between the "break" (entry LOCKED, TLB invalidated) and the "make" of a shared walker. */
  'pgtable.locked',
  /** rcu_read_lock() of a shared stage-2 walk (kvm_pgtable_walk_begin). */
  'rcu.read',
  /** An RCU callback freeing an unlinked table page after its grace period. */
  'rcu.callback',
  /** A shared walker entered a child table (read its pointer) and is about to read its entries: the RCU window. */
  'pgtable.descend',
  /** Eager page splitting dropped mmu_lock between two chunks (to top up its cache or reschedule). */
  'split.resched',
  /** Between the two stores of kvm_dirty_ring_push(): the entry's slot/offset and its DIRTY flag. */
  'ring.push',
  /** A vCPU thread waiting after KVM_EXIT_DIRTY_RING_FULL for its ring to be reset. */
  'ring.full',
  /** Userspace collecting a ring entry (between reading DIRTY and reading slot/offset). */
  'ring.harvest',
  /** KVM_RESET_DIRTY_RINGS walking the reset entries. */
  'ring.reset',
] as const;

export type SiteName = (typeof SITE_NAMES)[number];

export const SITE: { readonly [K in SiteName]: number } = Object.fromEntries(
  SITE_NAMES.map((n, i) => [n, i]),
) as { readonly [K in SiteName]: number };

export function siteName(site: number): string {
  return SITE_NAMES[site] ?? `site#${site}`;
}

/**
 * Sim mode, `random` strategy: a preemption at a site happens once in
 * SITE_PREEMPT_EVERY[site] passes (default DEFAULT_PREEMPT_EVERY). The
 * sites that open a race window get far better odds than the rest: the
 * windows a real defect needs are often one scheduling point wide, and at
 * 1 in 256 a run reaches them by luck. Sites that run in long loops (walks,
 * host PTE locks of a 2 MiB region, page copies) keep the default odds, so
 * that switching (one thread hand-over each) does not swamp the run.
 *
 * The windows:
 * - a fault after its notifier-sequence snapshot and after its host lookup,
 *   before mmu_lock (`fault.seq`, `fault.gfn_to_pfn`): a notifier, a memslot
 *   change or a write-protect must slip in there;
 * - around a lock release (`lock.release`, `lock.acquire`): see also the
 *   hand-over to a waiter in src/sim/sched.ts;
 * - between memslot publish and write-protect (`memslot.publish`,
 *   `memslot.published`, `srcu.sync`, `dirty.harvest`, `dirty.mark`);
 * - inside a notifier start/end pair and a host operation (`notifier.start`,
 *   `notifier.end`, `host.op`, `hostpt.migrating`);
 * - between clearing an entry and the flush that covers it, and inside the
 *   flush (`tlb.flush`, `tlb.flush.wait`);
 * - inside a guest access, between translation and memory operation
 *   (`access.walk`, `access.store`, `access.load`).
 */
export const DEFAULT_PREEMPT_EVERY = 256;

const PREEMPT_EVERY: Partial<Record<SiteName, number>> = {
  'fault.seq': 4,
  'fault.gfn_to_pfn': 4,
  'fault.locked': 32,
  'fault.done': 16,
  'fault.retry': 16,
  'fault.entry': 64,
  'lock.release': 8,
  'lock.acquire': 32,
  'memslot.publish': 2,
  'memslot.published': 2,
  'srcu.sync': 2,
  'srcu.read': 64,
  'dirty.harvest': 4,
  'dirty.mark': 16,
  'notifier.start': 4,
  'notifier.end': 4,
  'host.op': 4,
  'hostpt.migrating': 4,
  'tlb.flush': 4,
  'tlb.flush.wait': 8,
  'access.walk': 32,
  'access.store': 32,
  'access.load': 64,
  'pgtable.cas': 4,
  'pgtable.locked': 4,
  'rcu.read': 64,
  'rcu.callback': 8,
  'pgtable.descend': 4,
  'ring.push': 2,
  'ring.harvest': 8,
  'ring.reset': 8,
};

/** Preemption odds per site: one in SITE_PREEMPT_EVERY[site]. */
export const SITE_PREEMPT_EVERY: readonly number[] = SITE_NAMES.map((n) => PREEMPT_EVERY[n] ?? DEFAULT_PREEMPT_EVERY);

/**
 * Sites that open a race window (odds of 1 in 8 or better): PCT change
 * points fall on these.
 */
export const WINDOW_SITES: readonly boolean[] = SITE_PREEMPT_EVERY.map((n) => n <= 8);
