/**
 * The profiles of the protocol, by kernel version, and the bug zoo. A
 * profile and a set of bugs resolve to one `Protocol`: plain booleans, each
 * read at the one place in the protocol code where it acts (grep for its
 * name). A profile is a point on the kernel's timeline: every switch below
 * is derived from the version, so a later profile has every earlier fix.
 */
import type { InvariantName } from './check/names.js';
import { type Arch, ConfigError, KERNEL_PROFILES, type KernelProfile, type ManualProtect, type ProfileName, canonicalProfile, formatBytes } from './config.js';

export interface KernelInfo {
  /** major * 100 + minor; v14 (posted Nov 2014, before the 4.0 merge) is 3.18's cycle. */
  version: number;
  /** The architecture whose TLB semantics the profile runs with by default. */
  arch: Arch;
  /** What the code of this version is. */
  description: string;
}

export const KERNEL_INFO: Readonly<Record<KernelProfile, KernelInfo>> = {
  v14: {
    version: 318,
    arch: 'armv7',
    description: 'the seed patch as posted (Nov 2014; ARMv7 only: kvm_get_logging_state() is false on arm64): read faults map writable without marking dirty',
  },
  '4.0': { version: 400, arch: 'arm64', description: 'as merged (Linux 4.0): memslot_is_logging(), read faults map read-only while logging; a changed entry is written, then flushed' },
  '4.5': { version: 405, arch: 'arm64', description: 'THP refcounting rework: the host can map a compound THP by PTEs; transparent_hugepage_adjust() tests PageTransCompound' },
  '4.6': { version: 406, arch: 'arm64', description: '127393fbe597: a stage-2 block only over a THP the host maps by a PMD (PageTransCompoundMap)' },
  '4.7': { version: 407, arch: 'arm64', description: 'break-before-make on stage-2 entries (clear, flush, write); `v15` names this code (4.7 to 4.18)' },
  '4.11': {
    version: 411,
    arch: 'arm64',
    description:
      '293f293637b5: the MMU notifier release (which can run twice at once) frees the stage-2 tables; 8b3405e345b5: under mmu_lock, and unmap_stage2_range() drops the lock every 1 GiB: a walk that dropped it goes on into freed tables',
  },
  '4.12': { version: 412, arch: 'arm64', description: '0c428a6a9256: a walk that dropped mmu_lock re-checks that the stage-2 tables still exist' },
  '4.19': { version: 419, arch: 'arm64', description: 'skip updating a PMD/PTE whose value does not change (refault storms)' },
  '5.1': { version: 501, arch: 'arm64', description: 'a block over a PMD that holds a PTE table first unmaps the 2 MiB range, then retries; `fixed` names this code' },
  '5.18-rc': {
    version: 518,
    arch: 'arm64',
    description:
      'mmu_lock is an rwlock (f783ef1c0e82): a write-permission fault while logging takes the read side, also on a block, so the not yet parallel-safe map walker splits the block under the read lock; fixed by f587661f21eb',
  },
  '5.18': {
    version: 518,
    arch: 'arm64',
    description: 'mmu_lock is an rwlock: only a write-permission fault on a page while logging takes the read side and relaxes the entry; every other fault takes the write side',
  },
  '6.2': {
    version: 602,
    arch: 'arm64',
    description:
      'parallel stage-2 faults: every fault on the read side, a shared walker (compare-and-swap, LOCKED entries for break-before-make), unlinked tables freed after an RCU grace period',
  },
  '6.5': {
    version: 605,
    arch: 'arm64',
    description: 'a12ab1378a88: a fault that relaxes permissions invalidates only the local TLB; a vCPU that lost the race skips it and takes one more permission fault',
  },
  '6.7': { version: 607, arch: 'arm64', description: 'be097997a273: the relax path invalidates the local TLB also when it lost the race' },
  '6.10': {
    version: 610,
    arch: 'arm64',
    description: 'the .change_pte() MMU notifier removed ("mm, kvm: remove the .change_pte() MMU notifier", 2024): KVM no longer maps a page from inside a host invalidation; `modern` names this code',
  },
};

/**
 * What s2stress finds in each profile, with the architecture it runs on by
 * default and the fix (README, "what s2stress finds"). Kept apart from
 * KERNEL_INFO so that each finding is one line.
 */
export const PROFILE_FINDS: Readonly<Record<KernelProfile, { kernel: string; finds: string }>> = {
  v14: {
    kernel: 'v14 patch, Nov 2014, on 3.18',
    finds:
      'read faults map writable without marking dirty (migration-equal, selftest-dirty-log; fixed by v15 as merged in 4.0); a block written over a PTE table after cancel leaks the table (table-conservation) and replaces a table by a block without break-before-make (break-before-make; fixed by 3c3736cd32bf, 5.1). With --arch arm64 also: the dissolve flushes the output address (break-before-make, tlb-coherent)',
  },
  '4.0': {
    kernel: 'Linux 4.0',
    finds: 'block over a PTE table after cancel: leaked table (table-conservation) and a table replaced by a block without break-before-make (break-before-make); fixed by 3c3736cd32bf (5.1)',
  },
  '4.5': {
    kernel: 'Linux 4.5',
    finds: 'as 4.0, and a block over a THP the host maps by PTEs, partly unmapped (stage2-host-coherent, shadow-equal, frame-conservation; thp-churn with --backing thp); fixed by 127393fbe597 (4.6)',
  },
  '4.6': { kernel: 'Linux 4.6', finds: 'as 4.0' },
  '4.7': {
    kernel: 'Linux 4.7',
    finds: 'block over a PTE table after cancel: leaked table (table-conservation), stage-2-only 4 KiB TLB entries left beside the block (break-before-make, tlb-coherent); fixed by 3c3736cd32bf (5.1). A walk that dropped mmu_lock goes on into freed tables at VM teardown (table-use-after-free, teardown scenario); fixed by 0c428a6a9256 (4.12)',
  },
  '4.11': { kernel: 'Linux 4.11', finds: 'as 4.7 (unmap_stage2_range() also drops mmu_lock: the use-after-free is easier to reach)' },
  '4.12': { kernel: 'Linux 4.12', finds: 'as 4.7' },
  '4.19': { kernel: 'Linux 4.19', finds: 'as 4.7' },
  '5.1': { kernel: 'Linux 5.1', finds: 'nothing: clean, and every injected defect (--bug) is caught' },
  '5.18-rc': {
    kernel: 'Linux 5.18-rc',
    finds: 'a block split by a write fault while logging under the read side of mmu_lock (lock-held: an exclusive write under the read side; two splitters at once also table-conservation, break-before-make); fixed by f587661f21eb (5.18)',
  },
  '5.18': {
    kernel: 'Linux 5.18',
    finds:
      'two windows nobody named (README, "The arm64 design"): a write-permission fault handled after its 4 KiB entry became a block relaxes the block while logging (no-block-while-logging); change_pte maps the page a CoW installs while a MADV_DONTNEED zap of it is in progress, and the zap frees it (frame-use-after-free, stage2-host-coherent)',
  },
  '6.2': { kernel: 'Linux 6.2', finds: 'as 5.18, with the shared walker and RCU-freed tables clean' },
  '6.5': {
    kernel: 'Linux 6.5',
    finds: 'as 6.2; and a vCPU that lost a permission-relax race keeps its read-only TLB entry and takes one more permission fault (spuriousPermFaults; no invariant breaks: be097997a273 in 6.7 is an optimization, as its author said on the list)',
  },
  '6.7': { kernel: 'Linux 6.7', finds: 'as 6.2' },
  '6.10': { kernel: 'Linux 6.10', finds: 'the stale-granule window of 5.18 (change_pte is gone); every injected defect of the modern design (--bug) is caught' },
};

export interface Protocol {
  profile: ProfileName;
  /** The kernel profile `profile` stands for (aliases resolved). */
  kernel: KernelProfile;
  /** KERNEL_INFO[kernel].version. */
  version: number;
  /** TLB semantics in force: the profile's architecture unless the run asked for another. */
  arch: Arch;
  /** Linux 4.7: clear an entry, flush, then write the new value; before, write then flush. */
  breakBeforeMake: boolean;
  /** Linux 4.5: the host may map a compound THP by PTEs (partial zap, mprotect, partial split). */
  thpPteMappedCompound: boolean;
  /** Linux 4.6 (127393fbe597): THP adjust maps a block only over a THP mapped by a host PMD. */
  thpAdjustNeedsPmdMap: boolean;
  /** Linux 4.12 (0c428a6a9256): after cond_resched_lock() a walk re-checks that kvm->arch.pgd exists. */
  walkRechecksPgd: boolean;
  /**
   * Linux 4.11 (293f293637b5 "kvm-arm: Unmap shadow pagetables properly"):
   * kvm_arch_flush_shadow_all() (the MMU notifier's release) frees the
   * stage-2 tables; before, only kvm_arch_destroy_vm() did, when nothing
   * else could reach the VM.
   */
  freePgdOnNotifierRelease: boolean;
  /**
   * Linux 4.11 (8b3405e345b5 "kvm: arm/arm64: Fix locking for
   * kvm_free_stage2_pgd"): kvm_free_stage2_pgd() takes mmu_lock and
   * unmap_stage2_range() calls cond_resched_lock() between PGD entries.
   */
  unmapCondReschedLock: boolean;
  /**
   * v14: `kvm_get_logging_state()` is `!!memslot->dirty_bitmap`; the page is
   * mapped writable whenever the host mapping is (even on a read fault);
   * `mark_page_dirty()` runs `if (write_fault)` after `stage2_set_pte()`;
   * the dissolve flushes `pmd_pfn(*pmd) << PAGE_SHIFT` (the block's output
   * address) rather than the faulting IPA.
   */
  v14: boolean;
  /** fixed (Linux 5.1): a block over a PMD holding a table first unmaps the 2 MiB range, then retries. */
  fixUnmapTableBeforeBlock: boolean;
  /** fixed (Linux 4.19): skip updating a PMD/PTE whose value does not change. */
  fixSkipSameEntry: boolean;

  // ---- the arm64 kvm_pgtable design (5.18 on; docs/kernel-notes.md "MODERN") ----
  /**
   * The fault path of arch/arm64/kvm/mmu.c with kvm_pgtable: a permission
   * fault at the mapping's own size relaxes the entry
   * (kvm_pgtable_stage2_relax_perms), every other fault maps through
   * kvm_pgtable_stage2_map (the map walker: table to block, block to table).
   */
  pgtableApi: boolean;
  /** Linux 5.18: mmu_lock is an rwlock; `--lock` defaults to `rwlock`. */
  mmuRwlock: boolean;
  /** 5.18: a write-permission fault while logging takes the read side (f783ef1c0e82); others the write side. */
  readLockPermFaults: boolean;
  /** 5.18-rc: that read side is taken also when the fault is on a block (fixed by f587661f21eb: page granule only). */
  readLockBlockFaults: boolean;
  /**
   * Linux 6.2: every stage-2 fault on the read side; the walker runs shared
   * (entries read once per visit, changed by compare-and-swap, LOCKED for
   * break-before-make, -EAGAIN on a lost race) and unlinked tables are
   * freed after an RCU grace period.
   */
  sharedWalker: boolean;
  /** Linux 6.5 (a12ab1378a88): the relax path invalidates the local TLB only (tlbi ... nsh). */
  relaxLocalTlbi: boolean;
  /** Linux 6.7 (be097997a273): the relax path invalidates also after -EAGAIN (a lost race). */
  relaxTlbiOnEagain: boolean;
  /** Up to 6.9: the host's set_pte_at_notify() calls KVM's .change_pte() notifier (removed for 6.10). */
  changePteNotifier: boolean;
  /**
   * The architecture lets a TLB keep an entry that caused a permission
   * fault (arm64): modelled with the arm64 design, where the relax path's
   * TLB invalidation is what gets rid of it.
   */
  tlbKeepsPermFaults: boolean;

  // ---- the bug zoo: one switch each, read where it acts ----
  noTlbiOnDissolve: boolean;
  noMarkDirty: boolean;
  thpWhileLogging: boolean;
  hugetlbWhileLogging: boolean;
  noWpOnEnable: boolean;
  wpBeforeGrace: boolean;
  noNotifierRetry: boolean;
  leakOnDissolve: boolean;
  harvestNoWp: boolean;
  harvestNoFlush: boolean;
  flushNoWait: boolean;
  unlockedChangePte: boolean;
  validPteRefLeak: boolean;
  wpRangeUnaligned: boolean;
  blockOverTable: boolean;
  gupUnderMmuLock: boolean;
  retryLeaksPage: boolean;
  seqAfterLookup: boolean;
  harvestWpShort: boolean;
  countAfterUnlock: boolean;
  srcuSkipsReader: boolean;
  writeFaultMapsReadonly: boolean;
  flushBeforeClear: boolean;
  thpAdjustCompound: boolean;
  sharedPlainStore: boolean;
  breakNoTlbi: boolean;
  makeWithoutBreak: boolean;
  unlinkedFreeNoGrace: boolean;
  relaxSkipsTlbi: boolean;
  tableBreakFlushesIpa: boolean;
  wpUnderReadLock: boolean;
  lostRaceLeaksTable: boolean;
  unmapUnderReadLock: boolean;
  clearNoFlush: boolean;
  splitKeepsWrite: boolean;
  initiallySetSkipsWp: boolean;
  splitCacheLeak: boolean;
  // dirty ring defects (src/kvm/dirtyring.ts, src/actors/migrator.ts)
  ringPublishBeforeOffset: boolean;
  ringResetNoWp: boolean;
  backupBitmapNotCollected: boolean;
  ringFullNoExit: boolean;

  // ---- candidate fixes (`--fix`): patches no kernel has, to try before posting ----
  /** relax-checks-granule: the relax path changes a leaf only at the fault's own granule, else -EAGAIN (the vCPU faults again with a fresh one). */
  fixRelaxChecksGranule: boolean;
  /** no-change-pte: .change_pte() does nothing (6.10's removal applied to an older profile). */
  fixNoChangePte: boolean;
}

export interface BugInfo {
  name: string;
  field: keyof Protocol;
  description: string;
  /** The invariant expected to catch it. */
  expected: InvariantName;
  /** Other invariants that legitimately catch it first (the same defect seen from another side). */
  also?: InvariantName[];
  /** Where it comes from. */
  origin: string;
  /** The profile the defect is injected into (the zoo runs it there): `fixed` unless it is a defect of the modern design. */
  profile?: 'modern';
}

export const BUGS: readonly BugInfo[] = [
  {
    name: 'no-tlbi-on-dissolve',
    field: 'noTlbiOnDissolve',
    description: 'dissolving a block does not flush the TLB',
    expected: 'tlb-coherent',
    also: ['frame-use-after-free', 'break-before-make'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'no-mark-dirty',
    field: 'noMarkDirty',
    description: 'a write fault does not mark the page dirty',
    expected: 'migration-equal',
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'thp-while-logging',
    field: 'thpWhileLogging',
    description: 'THP adjust ignores logging and maps a block',
    expected: 'no-block-while-logging',
    also: ['migration-equal'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'hugetlb-while-logging',
    field: 'hugetlbWhileLogging',
    description: 'a hugetlb VMA gets a block while logging',
    expected: 'no-block-while-logging',
    also: ['migration-equal'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'no-wp-on-enable',
    field: 'noWpOnEnable',
    description: 'turning logging on does not write-protect the slot',
    expected: 'migration-equal',
    also: ['no-block-while-logging'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'wp-before-grace',
    field: 'wpBeforeGrace',
    description: 'turning logging on write-protects before the SRCU grace period',
    expected: 'no-block-while-logging',
    also: ['migration-equal'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'no-notifier-retry',
    field: 'noNotifierRetry',
    description: 'the fault path ignores mmu_notifier_retry',
    expected: 'shadow-equal',
    also: ['frame-use-after-free', 'tlb-coherent', 'stage2-host-coherent', 'frame-conservation'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'leak-on-dissolve',
    field: 'leakOnDissolve',
    description: 'dissolving does not drop the table reference',
    expected: 'table-conservation',
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'harvest-no-wp',
    field: 'harvestNoWp',
    description: 'harvesting clears dirty bits without write-protecting',
    expected: 'migration-equal',
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'harvest-no-flush',
    field: 'harvestNoFlush',
    description: 'harvesting write-protects without flushing the TLB',
    expected: 'migration-equal',
    also: ['tlb-coherent', 'break-before-make'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'flush-no-wait',
    field: 'flushNoWait',
    description: 'a TLB flush returns before vCPUs stop using removed entries',
    expected: 'frame-use-after-free',
    also: ['migration-equal', 'shadow-equal', 'break-before-make'],
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'unlocked-change-pte',
    field: 'unlockedChangePte',
    description: 'change_pte updates the tables without mmu_lock',
    expected: 'lock-held',
    origin: 'the project zoo (docs/design.md)',
  },
  {
    name: 'valid-pte-ref-leak',
    field: 'validPteRefLeak',
    description: 'replacing a valid PTE takes another table reference',
    expected: 'table-conservation',
    origin: 'Linux 5.10 "Fix memory leak on stage2 update of a valid PTE"',
  },
  {
    name: 'wp-range-unaligned',
    field: 'wpRangeUnaligned',
    description: 'the range walk steps by whole granules from an unaligned start, skipping entries (an unaligned unmap leaves freed pages mapped)',
    expected: 'frame-use-after-free',
    also: ['shadow-equal', 'tlb-coherent', 'frame-conservation'],
    origin: 'Linux 5.12 "Fix range alignment when walking page tables"',
  },
  {
    name: 'block-over-table',
    field: 'blockOverTable',
    description: 'a block is installed over a PMD that holds a PTE table (the 5.1 fix undone)',
    expected: 'table-conservation',
    also: ['tlb-coherent', 'break-before-make'],
    origin: 'Linux 5.1 "Fix handling of stage2 huge mappings"',
  },
  {
    name: 'gup-under-mmu-lock',
    field: 'gupUnderMmuLock',
    description: 'the fault path looks up the host page (get_user_pages) while holding mmu_lock: a lock-order inversion with change_pte (ptl -> mmu_lock)',
    expected: 'progress',
    origin: 'a classic mistake: sleeping lookups under a spinlock',
  },
  {
    name: 'retry-leaks-page',
    field: 'retryLeaksPage',
    description: 'when mmu_notifier_retry() says retry, user_mem_abort() returns without kvm_release_pfn_clean(): the gfn_to_pfn reference leaks, the frame is pinned for ever',
    expected: 'frame-conservation',
    origin: 'defect class: a refcount off by one (a reference not dropped on one path)',
  },
  {
    name: 'seq-after-lookup',
    field: 'seqAfterLookup',
    description: 'user_mem_abort() reads mmu_notifier_seq after gfn_to_pfn_prot() instead of before it (the smp_rmb() ordering): an invalidation that completes between the lookup and the read goes unseen, and a stale frame is mapped',
    expected: 'frame-use-after-free',
    also: ['frame-conservation', 'shadow-equal', 'tlb-coherent'],
    origin: 'defect class: two steps of the protocol in the wrong order',
  },
  {
    name: 'harvest-wp-short',
    field: 'harvestWpShort',
    description: 'the harvest write-protects each bitmap word from its lowest set bit to its highest set bit exclusive (__fls without + 1): the highest dirty page of every word stays writable, and its next writes are not logged',
    expected: 'migration-equal',
    also: ['selftest-dirty-log'],
    origin: 'defect class: an off-by-one at a range or bitmap-word end',
  },
  {
    name: 'count-after-unlock',
    field: 'countAfterUnlock',
    description: 'invalidate_range_start() releases mmu_lock one step early, before mmu_notifier_count++: a fault that takes the lock in between sees neither the count nor a new sequence and maps the page the host is about to free',
    expected: 'frame-use-after-free',
    also: ['frame-conservation', 'shadow-equal', 'tlb-coherent'],
    origin: 'defect class: a lock released one step early',
  },
  {
    name: 'srcu-skips-reader',
    field: 'srcuSkipsReader',
    description: "synchronize_srcu() never waits for the last vCPU's read section (an off-by-one over the reader slots): a fault of that vCPU that read the memslot before logging was on can map a writable block or page after the write-protect",
    expected: 'grace-period',
    also: ['no-block-while-logging', 'migration-equal'],
    origin: 'defect class: a grace period that skips one reader',
  },
  {
    name: 'write-fault-maps-readonly',
    field: 'writeFaultMapsReadonly',
    description: 'the logging rule is inverted (`if (write_fault) writable = false`): while logging, a write fault maps the page read-only and the guest faults on it for ever',
    expected: 'progress',
    origin: 'defect class: an inverted condition (a livelock the guest never gets out of)',
  },
  {
    name: 'flush-before-clear',
    field: 'flushBeforeClear',
    description: 'break-before-make in the wrong order: the TLB is flushed before the entry is cleared (dissolve, PTE and PMD replacement), so a walk in between refills the old translation',
    expected: 'break-before-make',
    also: ['tlb-coherent'],
    origin: 'two steps of the protocol swapped',
  },
  {
    name: 'thp-adjust-compound',
    field: 'thpAdjustCompound',
    description:
      'transparent_hugepage_adjust() maps a block because the page is compound (PageTransCompound), not because the host maps it by a PMD: a block over a THP partly unmapped by the host (the 4.6 fix undone)',
    expected: 'stage2-host-coherent',
    also: ['shadow-equal', 'frame-conservation', 'kernel-bug'],
    origin: '127393fbe597 "mm: thp: kvm: fix memory corruption in KVM with THP enabled" (Linux 4.6)',
  },
  // ---- defects of the modern design (injected into `modern`) ----
  {
    name: 'shared-plain-store',
    field: 'sharedPlainStore',
    description: 'stage2_try_set_pte() stores with WRITE_ONCE for shared walkers too instead of cmpxchg from the value the walker read: two vCPUs faulting on one entry both "win", and a table installed by one is overwritten by the other',
    expected: 'lock-held',
    also: ['table-conservation', 'break-before-make'],
    origin: 'the compare-and-swap of 6.2 "KVM: arm64: Make block->table PTE changes parallel-aware" undone',
    profile: 'modern',
  },
  {
    name: 'break-without-tlbi',
    field: 'breakNoTlbi',
    description: 'stage2_try_break_pte() locks the entry but skips the TLB invalidation: the new entry is made while TLBs still hold the old one',
    expected: 'break-before-make',
    also: ['tlb-coherent', 'frame-use-after-free', 'shadow-equal'],
    origin: 'defect class: break-before-make with the TLBI left out',
    profile: 'modern',
  },
  {
    name: 'make-without-break',
    field: 'makeWithoutBreak',
    description: 'the map walker replaces a valid entry by one compare-and-swap from the old value to the new one, never locking it or invalidating the TLB (table to block, block to table, another page)',
    expected: 'break-before-make',
    also: ['tlb-coherent', 'table-conservation', 'frame-use-after-free'],
    origin: 'defect class: stage2_make_pte() on an entry that is not locked',
    profile: 'modern',
  },
  {
    name: 'unlinked-free-no-grace',
    field: 'unlinkedFreeNoGrace',
    description: 'a table unlinked by a shared walker is freed at once (put_page) instead of through call_rcu(): another vCPU\'s walk still inside it reads a freed page',
    expected: 'rcu-use-after-free',
    // The walker's own write into the freed page is what it sees; a page it
    // keeps alive by its reference leaks; an entry it locked in a page that
    // went to another table is never made, and faults on it spin (progress).
    also: ['table-use-after-free', 'table-conservation', 'kernel-bug', 'progress'],
    origin: 'defect class: an unlinked table freed without waiting for readers (stage2_free_unlinked_table without call_rcu)',
    profile: 'modern',
  },
  {
    name: 'relax-skips-tlbi',
    field: 'relaxSkipsTlbi',
    description: 'kvm_pgtable_stage2_relax_perms() never invalidates the TLB: a vCPU whose TLB keeps the read-only entry that caused the permission fault faults on it for ever',
    expected: 'progress',
    origin: 'defect class: the relax path without its TLBI (the 6.5/6.7 story taken one step further)',
    profile: 'modern',
  },
  {
    name: 'table-break-flushes-ipa',
    field: 'tableBreakFlushesIpa',
    description: 'breaking a table entry invalidates the TLB by the faulting IPA only, as for a leaf, not the whole range the table mapped: stale 4 KiB entries of the other pages survive beside the new block',
    expected: 'break-before-make',
    also: ['tlb-coherent', 'frame-use-after-free', 'shadow-equal'],
    origin: 'defect class: a TLBI of the wrong size (stage2_try_break_pte: kvm_tlb_flush_vmid_range for a table)',
    profile: 'modern',
  },
  {
    name: 'wp-under-read-lock',
    field: 'wpUnderReadLock',
    description: 'kvm_mmu_wp_memory_region() takes the read side of mmu_lock: its exclusive walker write-protects entries that parallel faults are changing',
    expected: 'lock-held',
    also: ['migration-equal', 'no-block-while-logging', 'break-before-make'],
    origin: 'defect class: a write-protect under the read side',
    profile: 'modern',
  },
  {
    name: 'lost-race-leaks-table',
    field: 'lostRaceLeaksTable',
    description: 'stage2_map_walk_leaf() allocated a table for a split or a new level, lost the compare-and-swap, and returns -EAGAIN without mm_ops->put_page(childp): the page leaks',
    expected: 'table-conservation',
    origin: 'defect class: a reference not dropped on the lost-race path',
    profile: 'modern',
  },
  {
    name: 'unmap-under-read-lock',
    field: 'unmapUnderReadLock',
    description: 'the MMU notifier unmaps the range under the read side of mmu_lock: parallel faults map pages the host is freeing, and the exclusive walker changes entries under them',
    expected: 'lock-held',
    also: ['frame-use-after-free', 'shadow-equal', 'stage2-host-coherent', 'table-conservation', 'break-before-make'],
    origin: 'defect class: a notifier under the read side (kvm_unmap_gfn_range needs the write lock)',
    profile: 'modern',
  },
  // ---- manual-protect dirty logging and eager page splitting (modern, with their flags: stress/zoo.ts) ----
  {
    name: 'clear-no-flush',
    field: 'clearNoFlush',
    description:
      'KVM_CLEAR_DIRTY_LOG (kvm_clear_dirty_log_protect) write-protects the cleared pages under mmu_lock but skips kvm_flush_remote_tlbs_memslot(): vCPUs keep writing through their writable TLB entries without faulting, and those writes are not logged',
    expected: 'migration-equal',
    also: ['break-before-make', 'tlb-coherent'],
    origin: 'defect class: the harvest-no-flush mistake in the manual-protect path (the flush moved out of kvm_get_dirty_log_protect in 5.0)',
    profile: 'modern',
  },
  {
    name: 'split-keeps-write',
    field: 'splitKeepsWrite',
    description:
      'eager page splitting (stage2_split_walker -> kvm_pgtable_stage2_create_unlinked) gives the new PTEs write permission although the block they replace was write-protected: writes to the split range no longer fault and are not logged, and a split huge zero page becomes writable to the guest',
    expected: 'no-block-while-logging',
    also: ['migration-equal', 'selftest-dirty-log', 'stage2-host-coherent', 'frame-conservation', 'shadow-equal'],
    origin: 'defect class: a split that does not inherit the block\'s permissions (kvm_pgtable_stage2_pte_prot(pte))',
    profile: 'modern',
  },
  {
    name: 'initially-set-skips-wp',
    field: 'initiallySetSkipsWp',
    description:
      'with KVM_DIRTY_LOG_INITIALLY_SET, kvm_arch_mmu_enable_log_dirty_pt_masked() assumes the cleared pages are already write-protected and skips stage2_wp_range(): pages and blocks mapped writable before logging-on stay writable after their CLEAR, and their writes are lost to the migration',
    expected: 'migration-equal',
    also: ['no-block-while-logging', 'selftest-dirty-log'],
    origin: 'defect class: INITIALLY_SET taken to mean "already protected" (it means "not protected yet: protect at CLEAR")',
    profile: 'modern',
  },
  {
    name: 'split-cache-leak',
    field: 'splitCacheLeak',
    description:
      'kvm_arch_commit_memory_region() does not free the eager-split cache (kvm_mmu_free_memory_cache(&kvm->arch.mmu.split_page_cache)) when logging goes off: up to kvm_mmu_split_nr_page_tables(chunk) table pages stay allocated with nothing logging',
    expected: 'table-conservation',
    origin: 'defect class: a cache not given back on one path (the free added in the eager-split series for logging-off and memslot delete)',
    profile: 'modern',
  },
  // ---- dirty ring defects (run with --dirty-log ring on `modern`) ----
  {
    name: 'ring-publish-before-offset',
    field: 'ringPublishBeforeOffset',
    description:
      'kvm_dirty_ring_push() sets the entry\'s DIRTY flag before it writes slot and offset (the smp_wmb() order reversed): a collector that sees DIRTY in between reads the offset of an older lap and reports the wrong page; the reset then write-protects the right one, whose write is never copied',
    expected: 'migration-equal',
    also: ['selftest-dirty-log'],
    origin: '8929bc965964 / 17601bfed909 (the ring\'s acquire/release protocol) undone',
    profile: 'modern',
  },
  {
    name: 'ring-reset-no-wp',
    field: 'ringResetNoWp',
    description: 'KVM_RESET_DIRTY_RINGS resets the entries without write-protecting their pages (kvm_arch_mmu_enable_log_dirty_pt_masked skipped): the pages stay writable and their next writes push no entry',
    expected: 'migration-equal',
    also: ['selftest-dirty-log'],
    origin: 'defect class: the dirty ring\'s reset without its write-protect (harvest-no-wp for rings)',
    profile: 'modern',
  },
  {
    name: 'backup-bitmap-not-collected',
    field: 'backupBitmapNotCollected',
    description: 'stop-and-copy collects the rings but not the backup bitmap (no final KVM_GET_DIRTY_LOG): a vgic/ITS table the host saved into guest RAM without a running vCPU is never copied',
    expected: 'migration-equal',
    origin: 'KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP (6.2): the VMM must collect the backup bitmap at the end',
    profile: 'modern',
  },
  {
    name: 'ring-full-no-exit',
    field: 'ringFullNoExit',
    description: 'kvm_dirty_ring_check_request() never exits with KVM_EXIT_DIRTY_RING_FULL: the vCPU keeps pushing past the soft limit into a full ring and overwrites entries not yet collected',
    expected: 'kernel-bug',
    also: ['migration-equal', 'selftest-dirty-log'],
    origin: 'defect class: the soft-full exit skipped (KVM_REQ_DIRTY_RING_SOFT_FULL, 6.1)',
    profile: 'modern',
  },
];

export const BUG_NAMES: readonly string[] = BUGS.map((b) => b.name);

/**
 * Candidate fixes (`--fix NAME`): patches the chosen profile does not have
 * (a candidate no kernel has, or a later kernel's change backported), for a
 * window the model found, so that a developer can run the patched protocol
 * against the same seeds before posting it. Off unless asked for.
 */
export interface FixInfo {
  name: string;
  field: keyof Protocol;
  description: string;
  /** The window it closes (README, "The arm64 design"). */
  closes: string;
}

export const FIXES: readonly FixInfo[] = [
  {
    name: 'relax-checks-granule',
    field: 'fixRelaxChecksGranule',
    description:
      'kvm_pgtable_stage2_relax_perms() relaxes the leaf only if its level is the fault granule; otherwise -EAGAIN, and the re-executed access faults with the granule of the entry it meets now',
    closes: 'the stale fault granule: a permission fault taken on a 4 KiB entry and handled after a block came back relaxes the block while logging',
  },
  {
    name: 'no-change-pte',
    field: 'fixNoChangePte',
    description:
      "kvm_mmu_notifier_change_pte() does nothing, as after 6.10 removed .change_pte(): the page a copy-on-write or a KSM merge installs is mapped by the guest's next fault (a backport for the profiles before 6.10; on 6.10 it changes nothing)",
    closes: 'the change_pte window: a zap whose invalidate_range_start ran before a copy-on-write on the same page frees the page change_pte just mapped into stage 2',
  },
];

export const FIX_NAMES: readonly string[] = FIXES.map((f) => f.name);

export const PROFILE_INFO: Readonly<Record<ProfileName, string>> = {
  ...Object.fromEntries(Object.entries(KERNEL_INFO).map(([k, i]) => [k, i.description])),
  v15: `alias of 4.7: ${KERNEL_INFO['4.7'].description}`,
  fixed: `alias of 5.1, the newest profile of the 2014 line: ${KERNEL_INFO['5.1'].description}`,
  modern: `alias of 6.10, the newest arm64 profile: ${KERNEL_INFO['6.10'].description}`,
} as Record<ProfileName, string>;

export function resolveProtocol(profile: ProfileName, bugs: readonly string[], arch?: Arch, fixes: readonly string[] = []): Protocol {
  const kernel = canonicalProfile(profile);
  const info = KERNEL_INFO[kernel];
  const v = info.version;
  const p: Protocol = {
    profile,
    kernel,
    version: v,
    arch: arch ?? info.arch,
    breakBeforeMake: v >= 407,
    thpPteMappedCompound: v >= 405,
    thpAdjustNeedsPmdMap: v >= 406,
    walkRechecksPgd: v >= 412,
    freePgdOnNotifierRelease: v >= 411,
    unmapCondReschedLock: v >= 411,
    v14: kernel === 'v14',
    fixUnmapTableBeforeBlock: v >= 501,
    fixSkipSameEntry: v >= 419,
    pgtableApi: v >= 518,
    mmuRwlock: v >= 518,
    readLockPermFaults: v >= 518 && v < 602,
    readLockBlockFaults: kernel === '5.18-rc',
    sharedWalker: v >= 602,
    relaxLocalTlbi: v >= 605,
    relaxTlbiOnEagain: v >= 607,
    changePteNotifier: v < 610,
    tlbKeepsPermFaults: v >= 518,
    noTlbiOnDissolve: false,
    noMarkDirty: false,
    thpWhileLogging: false,
    hugetlbWhileLogging: false,
    noWpOnEnable: false,
    wpBeforeGrace: false,
    noNotifierRetry: false,
    leakOnDissolve: false,
    harvestNoWp: false,
    harvestNoFlush: false,
    flushNoWait: false,
    unlockedChangePte: false,
    validPteRefLeak: false,
    wpRangeUnaligned: false,
    blockOverTable: false,
    gupUnderMmuLock: false,
    retryLeaksPage: false,
    seqAfterLookup: false,
    harvestWpShort: false,
    countAfterUnlock: false,
    srcuSkipsReader: false,
    writeFaultMapsReadonly: false,
    flushBeforeClear: false,
    thpAdjustCompound: false,
    sharedPlainStore: false,
    breakNoTlbi: false,
    makeWithoutBreak: false,
    unlinkedFreeNoGrace: false,
    relaxSkipsTlbi: false,
    tableBreakFlushesIpa: false,
    wpUnderReadLock: false,
    lostRaceLeaksTable: false,
    unmapUnderReadLock: false,
    clearNoFlush: false,
    splitKeepsWrite: false,
    initiallySetSkipsWp: false,
    splitCacheLeak: false,
    ringPublishBeforeOffset: false,
    ringResetNoWp: false,
    backupBitmapNotCollected: false,
    ringFullNoExit: false,
    fixRelaxChecksGranule: false,
    fixNoChangePte: false,
  };
  for (const name of bugs) {
    const info = BUGS.find((b) => b.name === name);
    if (!info) throw new Error(`unknown bug ${name}`);
    (p[info.field] as boolean) = true;
  }
  for (const name of fixes) {
    const info = FIXES.find((f) => f.name === name);
    if (!info) throw new Error(`unknown fix ${name}`);
    (p[info.field] as boolean) = true;
  }
  if (p.blockOverTable) p.fixUnmapTableBeforeBlock = false;
  if (p.fixNoChangePte) p.changePteNotifier = false;
  return p;
}

/**
 * The kernel features behind `--manual-protect` and `--eager-split-chunk`,
 * with the kernel version that brought each (major * 100 + minor):
 * - KVM_CLEAR_DIRTY_LOG and manual protect: 2a31b9db1535 "kvm: introduce
 *   manual dirty log reprotect" (5.0; the capability was renamed
 *   KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 in 5.2, d7547c55cbe7);
 * - KVM_DIRTY_LOG_INITIALLY_SET: 3c9bd4006bfc "KVM: x86: enable dirty log
 *   gradually in small chunks" (5.7; arm64 honours it in
 *   kvm_arch_commit_memory_region from c862626e19ef, 5.8);
 * - KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE: the eager page splitting series of
 *   Ricardo Koller (6.5).
 */
export const FEATURE_SINCE = { manualProtect: 500, initiallySet: 508, eagerSplit: 605 } as const;

/** The first profile (oldest first) whose kernel version is at least `v`. */
export function firstProfileSince(v: number): KernelProfile {
  return KERNEL_PROFILES.find((k) => KERNEL_INFO[k].version >= v)!;
}

/**
 * Refuse a dirty-logging feature the profile's kernel does not have, with an
 * error naming the flag and the first profile that has it (exit 2).
 */
export function checkProfileFeatures(c: { profile: ProfileName; manualProtect?: ManualProtect; eagerSplitChunk?: number }): void {
  const kernel = canonicalProfile(c.profile);
  const v = KERNEL_INFO[kernel].version;
  const mp = c.manualProtect ?? 'off';
  const need = mp === 'initially-set' ? FEATURE_SINCE.initiallySet : mp === 'on' ? FEATURE_SINCE.manualProtect : 0;
  if (v < need) {
    const what = mp === 'initially-set' ? 'KVM_DIRTY_LOG_INITIALLY_SET (Linux 5.7; on arm64 5.8)' : 'KVM_CLEAR_DIRTY_LOG (Linux 5.0)';
    throw new ConfigError(
      '--manual-protect',
      `--manual-protect ${mp} needs ${what}: profile ${c.profile} does not have it; the first profile that does is ${firstProfileSince(need)}`,
    );
  }
  const ch = c.eagerSplitChunk ?? 0;
  if (ch !== 0 && v < FEATURE_SINCE.eagerSplit) {
    throw new ConfigError(
      '--eager-split-chunk',
      `--eager-split-chunk ${formatBytes(ch)} needs eager page splitting (KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE, Linux 6.5): profile ${c.profile} does not have it; the first profile that does is ${firstProfileSince(FEATURE_SINCE.eagerSplit)} (0, the default, is off)`,
    );
  }
}
