/**
 * The model's configuration: what the shared-memory layout is sized from.
 * Everything is validated here, at start, with an error that names the
 * setting and the accepted range (exit code 2 at the CLI).
 */
import { PMD_SIZE, PAGE_SIZE, S2_OA_MAX } from './arch/stage2.js';

/**
 * Profiles by kernel version, oldest first (src/profiles.ts says what each
 * one is): the 2014 protocol of arch/arm/kvm/mmu.c up to 5.1, then the
 * arm64 kvm_pgtable design with an rwlock mmu_lock (5.18 on, MODERN in
 * docs/kernel-notes.md). `v15`, `fixed` and `modern` are aliases kept for
 * the CLI contract: `v15` is the 4.7 code (the merged series with
 * break-before-make), `fixed` the newest profile of the 2014 line (5.1),
 * `modern` the newest arm64 profile.
 */
export const KERNEL_PROFILES = ['v14', '4.0', '4.5', '4.6', '4.7', '4.11', '4.12', '4.19', '5.1', '5.18-rc', '5.18', '6.2', '6.5', '6.7', '6.10'] as const;
export type KernelProfile = (typeof KERNEL_PROFILES)[number];
export const PROFILE_ALIASES = { v15: '4.7', fixed: '5.1', modern: '6.10' } as const satisfies Record<string, KernelProfile>;
export const PROFILES = [...KERNEL_PROFILES, 'v15', 'fixed', 'modern'] as const;
export type ProfileName = (typeof PROFILES)[number];

/** The kernel profile a name stands for (an alias resolved). */
export function canonicalProfile(p: ProfileName): KernelProfile {
  return (PROFILE_ALIASES as Record<string, KernelProfile>)[p] ?? (p as KernelProfile);
}

/**
 * TLB invalidation semantics of the architecture a profile ran on:
 * `armv7` (a by-IPA stage-2 flush is TLBIALLIS, the whole VMID), `arm64`
 * (TLBI IPAS2E1IS for stage-2 entries by IPA, then VMALLE1IS for every
 * combined stage-1+2 entry of the VMID).
 */
export const ARCHS = ['armv7', 'arm64'] as const;
export type Arch = (typeof ARCHS)[number];

export const BACKINGS = ['anon', 'thp', 'hugetlb', 'mixed'] as const;
export type Backing = (typeof BACKINGS)[number];

export const LOCK_KINDS = ['ticket', 'tas', 'rwlock'] as const;
export type LockKind = (typeof LOCK_KINDS)[number];

/**
 * Manual-protect dirty logging (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2):
 * `off` (KVM_GET_DIRTY_LOG clears and write-protects), `on`
 * (KVM_GET_DIRTY_LOG only copies the bitmap; KVM_CLEAR_DIRTY_LOG clears and
 * write-protects), `initially-set` (`on` with KVM_DIRTY_LOG_INITIALLY_SET:
 * the bitmap starts all ones and logging-on write-protects nothing).
 */
export const MANUAL_PROTECT = ['off', 'on', 'initially-set'] as const;
export type ManualProtect = (typeof MANUAL_PROTECT)[number];

/**
 * KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE values the kernel accepts with 4 KiB
 * pages: 0 (off) or a block size the page table supports
 * (kvm_is_block_size_supported: a power of two in kvm_supported_block_sizes(),
 * the granules of levels KVM_PGTABLE_MIN_BLOCK_LEVEL (1) to 3: 1G, 2M, 4K).
 */
export const EAGER_SPLIT_CHUNKS = [0, 4096, 2 * 1024 * 1024, 1024 * 1024 * 1024] as const;

/**
 * How dirty pages reach userspace: `bitmap` (KVM_GET_DIRTY_LOG, every
 * profile) or `ring` (KVM_CAP_DIRTY_LOG_RING_ACQ_REL with
 * KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: a ring of dirtied gfns per vCPU and a
 * backup bitmap for writes without a running vCPU; arm64 from Linux 6.2).
 */
export const DIRTY_LOGS = ['bitmap', 'ring'] as const;
export type DirtyLog = (typeof DIRTY_LOGS)[number];
/** The first profile whose kernel has the dirty ring on arm64 (6.2). */
export const DIRTY_RING_FIRST_PROFILE: KernelProfile = '6.2';
/** KVM_DIRTY_RING_RSVD_ENTRIES (include/linux/kvm_dirty_ring.h); arm64's kvm_cpu_dirty_log_size() is 0. */
export const KVM_DIRTY_RING_RSVD_ENTRIES = 64;
/**
 * Ring sizes in entries (struct kvm_dirty_gfn is 16 bytes):
 * kvm_vm_ioctl_enable_dirty_log_ring() wants a power of two of at least
 * PAGE_SIZE bytes (256 entries) and at most KVM_DIRTY_RING_MAX_ENTRIES.
 */
export const DIRTY_RING_MIN_ENTRIES = 4096 / 16;
export const KVM_DIRTY_RING_MAX_ENTRIES = 65536;
/** Default ring size: the smallest the kernel takes, so the soft-full exit comes in ordinary runs. */
export const DIRTY_RING_DEFAULT_ENTRIES = DIRTY_RING_MIN_ENTRIES;

/** True if the profile's kernel has the dirty ring (6.2 and later). */
export function profileHasDirtyRing(p: ProfileName): boolean {
  return KERNEL_PROFILES.indexOf(canonicalProfile(p)) >= KERNEL_PROFILES.indexOf(DIRTY_RING_FIRST_PROFILE);
}

export const MIN_VCPUS = 1;
export const MAX_VCPUS = 64;
export const MIN_GUEST_MEM = PMD_SIZE;
/** 16 GiB: the largest guest the frame and table numbering is laid out for. */
export const MAX_GUEST_MEM = 16 * 1024 * 1024 * 1024;

/** A configuration value is wrong; `setting` is the flag or field that is. */
export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface ModelConfig {
  vcpus: number;
  /** Guest RAM in bytes, a multiple of 2 MiB. */
  guestMem: number;
  backing: Backing;
  profile: ProfileName;
  /** TLB semantics; absent = the architecture the profile ran on (src/profiles.ts). */
  arch?: Arch;
  /** Names of injected defects (the bug zoo). */
  bugs: string[];
  /** Names of candidate fixes (`--fix`, src/profiles.ts FIXES); absent = none. */
  fixes?: string[];
  /**
   * Anonymous and THP guest RAM faulted in (written) at start, as QEMU's
   * -mem-prealloc does; false: untouched until the guest or QEMU touches it
   * (QEMU's default), so a first read maps the zero page. Absent = true (a
   * world built by hand starts populated). Hugetlb and device memory are
   * always populated.
   */
  memPrealloc?: boolean;
  lock: LockKind;
  /** Keep per-call-site lock statistics. */
  lockStats: boolean;
  /**
   * Lock statistics: after each site's first holds (timed exactly), time
   * one hold in this many (a power of two; 1 = every hold, as lock_stat).
   * Default 256 (src/sync/lockstat.ts DEFAULT_HOLD_SAMPLE).
   */
  lockHoldSample?: number;
  /** TLB slots per vCPU for 4 KiB entries (power of two). */
  tlbPageSlots: number;
  /** TLB slots per vCPU for 2 MiB block entries (power of two). */
  tlbBlockSlots: number;
  /**
   * Bytes a long stage-2 walk covers between two cond_resched_lock() calls:
   * the kernel's 1 GiB (one PGD entry); smaller (down to 2 MiB, a power of
   * two) lets small guests reach the lock drops (`--resched-granule`).
   */
  reschedGranule?: number;
  /**
   * cond_resched_lock() drops mmu_lock when it is contended (spin_needbreak)
   * and otherwise at one call in this many (need_resched); 1 drops at every
   * call, which sim mode uses: its scheduler then decides who runs. Default 64.
   */
  condReschedEvery?: number;
  /** Manual-protect dirty logging (`--manual-protect`); absent = `off`. */
  manualProtect?: ManualProtect;
  /** KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE in bytes (`--eager-split-chunk`); absent or 0 = off. */
  eagerSplitChunk?: number;
  /** `--dirty-log`: bitmap (absent = bitmap) or ring (6.2 on). */
  dirtyLog?: DirtyLog;
  /** `--dirty-ring-size`: entries per vCPU ring (ring mode; absent = DIRTY_RING_DEFAULT_ENTRIES). */
  dirtyRingSize?: number;
}

/** The kernel's granule of lock drops in long walks: one 1 GiB PGD entry. */
export const RESCHED_GRANULE_DEFAULT = 1024 * 1024 * 1024;
export const RESCHED_GRANULE_MIN = PMD_SIZE;

export const DEFAULT_MODEL: ModelConfig = {
  vcpus: 4,
  guestMem: 64 * 1024 * 1024,
  backing: 'thp',
  profile: 'fixed',
  bugs: [],
  lock: 'ticket',
  lockStats: true,
  lockHoldSample: 256,
  tlbPageSlots: 256,
  tlbBlockSlots: 16,
};

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export function formatBytes(n: number): string {
  if (n % (1024 * 1024 * 1024) === 0) return `${n / (1024 * 1024 * 1024)}G`;
  if (n % (1024 * 1024) === 0) return `${n / (1024 * 1024)}M`;
  if (n % 1024 === 0) return `${n / 1024}K`;
  return `${n}`;
}

/**
 * Validate a model configuration. Throws ConfigError naming the setting.
 * `knownBugs` is passed in to keep this file free of the zoo's details.
 */
export function validateModelConfig(c: ModelConfig, knownBugs: readonly string[], knownFixes: readonly string[] = []): ModelConfig {
  for (const f of c.fixes ?? []) {
    if (!knownFixes.includes(f)) throw new ConfigError('--fix', `--fix '${f}' is not a known candidate fix; known: ${knownFixes.join(', ')}`);
  }
  if (!Number.isInteger(c.vcpus) || c.vcpus < MIN_VCPUS || c.vcpus > MAX_VCPUS) {
    throw new ConfigError('--vcpus', `--vcpus must be a whole number from ${MIN_VCPUS} to ${MAX_VCPUS}, got ${c.vcpus}`);
  }
  if (!Number.isInteger(c.guestMem) || c.guestMem <= 0) {
    throw new ConfigError('--guest-mem', `--guest-mem must be a positive size such as 512M or 1G, got ${c.guestMem}`);
  }
  if (c.guestMem % PMD_SIZE !== 0) {
    throw new ConfigError(
      '--guest-mem',
      `--guest-mem must be a multiple of 2M (one stage-2 block), got ${formatBytes(c.guestMem)} (${c.guestMem} bytes)`,
    );
  }
  if (c.guestMem < MIN_GUEST_MEM || c.guestMem > MAX_GUEST_MEM) {
    throw new ConfigError(
      '--guest-mem',
      `--guest-mem must be from ${formatBytes(MIN_GUEST_MEM)} to ${formatBytes(MAX_GUEST_MEM)} (the largest guest the layout can address), got ${formatBytes(c.guestMem)}`,
    );
  }
  // The output field of a descriptor holds frame numbers: make sure every
  // frame the layout will create fits (guest + device + spares, see layout).
  const pages = c.guestMem / PAGE_SIZE;
  if (pages * 1.25 + 4096 > S2_OA_MAX) {
    throw new ConfigError('--guest-mem', `--guest-mem ${formatBytes(c.guestMem)} needs more frames than a descriptor can address`);
  }
  if (!(BACKINGS as readonly string[]).includes(c.backing)) {
    throw new ConfigError('--backing', `--backing must be one of ${BACKINGS.join('|')}, got '${c.backing}'`);
  }
  if (!(PROFILES as readonly string[]).includes(c.profile)) {
    throw new ConfigError('--profile', `--profile must be one of ${PROFILES.join('|')}, got '${c.profile}'`);
  }
  if (c.arch !== undefined && !(ARCHS as readonly string[]).includes(c.arch)) {
    throw new ConfigError('--arch', `--arch must be one of ${ARCHS.join('|')}, got '${c.arch}'`);
  }
  if (!(LOCK_KINDS as readonly string[]).includes(c.lock)) {
    throw new ConfigError('--lock', `--lock must be one of ${LOCK_KINDS.join('|')}, got '${c.lock}'`);
  }
  const hs = c.lockHoldSample ?? 256;
  if (!Number.isInteger(hs) || hs < 1 || hs > 65536 || (hs & (hs - 1)) !== 0) {
    throw new ConfigError('--lock-hold-sample', `--lock-hold-sample must be a power of two from 1 to 65536, got ${hs}`);
  }
  for (const b of c.bugs) {
    if (!knownBugs.includes(b)) {
      throw new ConfigError('--bug', `--bug '${b}' is not a known defect; known: ${knownBugs.join(', ')}`);
    }
  }
  const rg = c.reschedGranule ?? RESCHED_GRANULE_DEFAULT;
  if (!isPowerOfTwo(rg) || rg < RESCHED_GRANULE_MIN || rg > RESCHED_GRANULE_DEFAULT) {
    throw new ConfigError(
      '--resched-granule',
      `--resched-granule must be a power of two from ${formatBytes(RESCHED_GRANULE_MIN)} to ${formatBytes(RESCHED_GRANULE_DEFAULT)} (one PGD entry), got ${formatBytes(rg)}`,
    );
  }
  const mp = c.manualProtect ?? 'off';
  if (!(MANUAL_PROTECT as readonly string[]).includes(mp)) {
    throw new ConfigError('--manual-protect', `--manual-protect must be one of ${MANUAL_PROTECT.join('|')}, got '${mp}'`);
  }
  const ch = c.eagerSplitChunk ?? 0;
  if (!(EAGER_SPLIT_CHUNKS as readonly number[]).includes(ch)) {
    throw new ConfigError(
      '--eager-split-chunk',
      `--eager-split-chunk must be 0 (off) or a block size the stage-2 page table supports with 4K pages (4K, 2M, 1G; kvm_is_block_size_supported), got ${formatBytes(ch)}`,
    );
  }
  const ce = c.condReschedEvery ?? 64;
  if (!Number.isInteger(ce) || ce < 1 || ce > 1 << 30) {
    throw new ConfigError('condReschedEvery', `condReschedEvery must be a whole number from 1 to 2^30, got ${ce}`);
  }
  const dl = c.dirtyLog ?? 'bitmap';
  if (!(DIRTY_LOGS as readonly string[]).includes(dl)) {
    throw new ConfigError('--dirty-log', `--dirty-log must be one of ${DIRTY_LOGS.join('|')}, got '${dl}'`);
  }
  if (dl === 'ring' && !profileHasDirtyRing(c.profile)) {
    throw new ConfigError(
      '--dirty-log',
      `--dirty-log ring needs a kernel with the dirty ring on arm64: profile ${DIRTY_RING_FIRST_PROFILE} or later (${KERNEL_PROFILES.slice(KERNEL_PROFILES.indexOf(DIRTY_RING_FIRST_PROFILE)).join(', ')}, modern), got --profile ${c.profile}`,
    );
  }
  if (c.dirtyRingSize !== undefined) {
    const rs = c.dirtyRingSize;
    if (dl !== 'ring') throw new ConfigError('--dirty-ring-size', `--dirty-ring-size applies to --dirty-log ring only, got --dirty-log ${dl}`);
    if (!isPowerOfTwo(rs) || rs < DIRTY_RING_MIN_ENTRIES || rs > KVM_DIRTY_RING_MAX_ENTRIES) {
      throw new ConfigError(
        '--dirty-ring-size',
        `--dirty-ring-size must be a power of two from ${DIRTY_RING_MIN_ENTRIES} (one 4 KiB page of 16-byte entries) to ${KVM_DIRTY_RING_MAX_ENTRIES} (KVM_DIRTY_RING_MAX_ENTRIES) entries, got ${rs}`,
      );
    }
  }
  if (!isPowerOfTwo(c.tlbPageSlots) || c.tlbPageSlots > 4096) {
    throw new ConfigError('tlbPageSlots', `tlbPageSlots must be a power of two up to 4096, got ${c.tlbPageSlots}`);
  }
  if (!isPowerOfTwo(c.tlbBlockSlots) || c.tlbBlockSlots > 1024) {
    throw new ConfigError('tlbBlockSlots', `tlbBlockSlots must be a power of two up to 1024, got ${c.tlbBlockSlots}`);
  }
  return c;
}
