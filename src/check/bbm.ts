/**
 * The live `break-before-make` check: stage-2 entry changes against the TLB
 * flushes that must cover them, as they happen.
 *
 * The ARM ARM requires break-before-make when a valid translation is
 * replaced by one with another output address, block size or memory
 * attributes: write an invalid entry, invalidate the TLB (TLBI + DSB), only
 * then write the new entry; otherwise the TLB may hold both (a TLB conflict)
 * and what the guest sees is UNPREDICTABLE. A change of permissions alone
 * needs no break, but the old entry still has to be flushed.
 *
 * Per actor, in shared memory laid out at start (no allocation here), the
 * entries changed in the current mmu_lock critical section are recorded by
 * s2Write(), the only way an entry is written; every TLB flush marks the
 * records it covers; the release of mmu_lock checks them. Rules:
 *
 * 1. A valid entry replaced by a valid entry with another output address,
 *    size (table <-> block) or attributes without a break: an architectural
 *    hazard in every profile (this is what v14, 4.0, 4.5 and 4.6 do when
 *    stage2_set_pmd_huge() writes a block over a PTE table).
 * 2. An entry cleared in the critical section is written again only after a
 *    flush that covers it (the "make" after the "break").
 * 3. A profile with break-before-make (4.7 on) never replaces a valid entry
 *    in place except to write-protect it (kvm_set_s2pte_readonly); earlier
 *    profiles write, then flush (legal there for a change of permissions).
 * 4. When mmu_lock is released, every entry cleared or changed in the
 *    critical section has been covered by a flush since its change, and no
 *    vCPU's TLB holds an entry for those IPAs that the tables do not give
 *    (compared with the current tables: an entry a vCPU refilled from the
 *    new value after the flush is fine).
 * 5. Write-protection (a valid writable entry made read-only) is flushed by
 *    the caller after releasing mmu_lock, as the kernel does in
 *    kvm_mmu_wp_memory_region() and kvm_vm_ioctl_get_dirty_log()
 *    (kvm_flush_remote_tlbs() after spin_unlock()): such changes are
 *    deferred to the actor's next whole-VM flush, which must come before it
 *    releases kvm->slots_lock (both callers hold it throughout).
 *
 * A flush covers a record when it is a whole-VM flush, any flush on armv7
 * (TLBIALLIS), or on arm64 a by-IPA flush at an IPA inside the entry's range
 * (tlbi ipas2e1is drops the stage-2 entries of that IPA only).
 *
 * Cost: an entry write checks its old value (which it reads anyway) and one
 * word of the writer's bookkeeping; a release whose critical section changed
 * no valid entry reads one word.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { ACTOR, CTRL, BBM_ACTOR_WORDS, BBM_CHANGED, BBM_HEADER_WORDS, BBM_PENDING } from '../shm/layout.js';
import {
  LEVEL_PGD,
  LEVEL_PMD,
  LEVEL_PTE,
  PTRS_PER_TABLE,
  S2_AF,
  S2_S2AP_READ,
  S2_S2AP_WRITE,
  descIsLocked,
  descIsTable,
  descOa,
  descValid,
  descWritable,
  describeDesc,
  mkReadonly,
  pmdIsBlock,
  pgdIndex,
  pmdIndex,
  pteIndex,
} from '../arch/stage2.js';
import { INV } from './names.js';
import { TLB_BASE_MASK, tlbTagLive } from '../kvm/tlb.js';

// Header words of an actor's bookkeeping.
/** Records of entries changed in this critical section (may exceed BBM_CHANGED: then the hull stands for them). */
const H_CHANGED = 0;
/** Records changed and not yet covered by a flush (more than BBM_PENDING: overflow). */
const H_PENDING = 1;
/** Hull of the changed gfns, [lo, hi). */
const H_LO = 2;
const H_HI = 3;
/** Write-protected entries waiting for the whole-VM flush after the unlock. */
const H_DEFERRED = 4;
const H_DEF_GFN = 5;
const H_DEF_LEVEL = 6;
const P0 = BBM_HEADER_WORDS;
const C0 = BBM_HEADER_WORDS + BBM_PENDING * 3;

/** Pending record kinds. */
const CLEARED = 1;
const REPLACED = 2;

/** Violation kinds of `break-before-make` (the words a, b, c, d of each are listed). */
export const BBM = {
  /** A valid entry replaced by another output address/size/attributes without a break: gfn, level, old, new. */
  HAZARD: 1,
  /** A break-before-make profile replaced a valid entry in place: gfn, level, old, new. */
  NO_BREAK: 2,
  /** An entry cleared in this critical section written before a flush covered it: gfn, level, new, old. */
  WRITE_BEFORE_FLUSH: 3,
  /** mmu_lock released with a changed entry no flush covered: gfn, level, old, kind. */
  UNFLUSHED_AT_UNLOCK: 4,
  /** mmu_lock released while a TLB holds an entry the tables do not give: vcpu | level << 8 | reason << 12, gfn, TLB desc, table desc. */
  STALE_TLB_AT_UNLOCK: 5,
  /** slots_lock released with write-protected entries no flush covered: count, first gfn, level. */
  WP_NOT_FLUSHED: 6,
  /** More changed entries without a flush than the bookkeeping holds: count. */
  PENDING_OVERFLOW: 7,
} as const;

const STALE_NONE = 1;
const STALE_CONFLICT = 2;
const STALE_OA = 3;
const STALE_WRITE = 4;

function base(kvm: Kvm, actor: Actor): number {
  return kvm.layout.bbm + actor.id * BBM_ACTOR_WORDS;
}

/** Pages an entry at `level` maps. */
function spanOf(level: number): number {
  return level === LEVEL_PGD ? PTRS_PER_TABLE * PTRS_PER_TABLE : level === LEVEL_PMD ? PTRS_PER_TABLE : 1;
}

/**
 * Record where a table page sits when it is linked (pgd_populate,
 * pmd_populate_kernel): the first gfn it maps and the level of its entries.
 * The reverse map lets an entry's address say which IPAs it translates.
 */
export function setTableInfo(kvm: Kvm, table: number, firstGfn: number, level: number): void {
  Atomics.store(kvm.m, kvm.layout.tableInfo + table, (firstGfn << 2) | level);
}

/** Where an entry sits: the level of its table and the first gfn it translates (`at.level`, `at.gfn`). */
const at = { level: 0, gfn: 0 };
function locate(kvm: Kvm, entry: number): void {
  const rel = entry - kvm.layout.tablesBase;
  const t = (rel / PTRS_PER_TABLE) | 0;
  const info = Atomics.load(kvm.m, kvm.layout.tableInfo + t);
  at.level = info & 3;
  at.gfn = (info >>> 2) + (rel - t * PTRS_PER_TABLE) * spanOf(at.level);
}

/** Whether two valid descriptors at `level` differ in more than permissions (output address, size, memory type). */
function needsBreak(level: number, a: number, b: number): boolean {
  if (level < LEVEL_PTE && descIsTable(a) !== descIsTable(b)) return true;
  const perms = S2_S2AP_READ | S2_S2AP_WRITE | S2_AF;
  return (a & ~perms) !== (b & ~perms);
}

function addChanged(kvm: Kvm, b: number, gfn: number, level: number): void {
  const m = kvm.m;
  const n = m[b + H_CHANGED];
  const end = gfn + spanOf(level);
  if (n === 0) {
    m[b + H_LO] = gfn;
    m[b + H_HI] = end;
  } else {
    if (gfn < m[b + H_LO]) m[b + H_LO] = gfn;
    if (end > m[b + H_HI]) m[b + H_HI] = end;
  }
  if (n < BBM_CHANGED) {
    m[b + C0 + n * 2] = gfn;
    m[b + C0 + n * 2 + 1] = level;
  }
  m[b + H_CHANGED] = n + 1;
}

function addPending(kvm: Kvm, b: number, kind: number, entry: number, gfn: number, level: number): void {
  const m = kvm.m;
  const n = m[b + H_PENDING];
  if (n < BBM_PENDING) {
    m[b + P0 + n * 3] = entry;
    m[b + P0 + n * 3 + 1] = gfn;
    m[b + P0 + n * 3 + 2] = level | (kind << 4);
  }
  m[b + H_PENDING] = n + 1;
}

/**
 * Called by s2Write() for every entry write made under mmu_lock when the old
 * value was valid or a pending record exists (the common install over an
 * empty entry with nothing pending costs the caller one word).
 */
export function bbmOnWrite(kvm: Kvm, actor: Actor, entry: number, old: number, desc: number): void {
  const m = kvm.m;
  const b = base(kvm, actor);
  if (!descValid(old)) {
    if (!descValid(desc)) return;
    // Rule 2: the "make" of an entry broken in this critical section.
    const n = Math.min(m[b + H_PENDING], BBM_PENDING);
    for (let i = 0; i < n; i++) {
      if (m[b + P0 + i * 3] !== entry || m[b + P0 + i * 3 + 2] >>> 4 !== CLEARED) continue;
      kvm.violation(INV['break-before-make'], actor.id, BBM.WRITE_BEFORE_FLUSH, m[b + P0 + i * 3 + 1], m[b + P0 + i * 3 + 2] & 15, desc, 0);
      break;
    }
    return;
  }
  if (desc === old) return;
  locate(kvm, entry);
  const level = at.level;
  const gfn = at.gfn;
  if (!descValid(desc)) {
    addPending(kvm, b, CLEARED, entry, gfn, level);
    addChanged(kvm, b, gfn, level);
    return;
  }
  if (needsBreak(level, old, desc)) {
    // Rule 1: UNPREDICTABLE on the hardware, whatever the profile did.
    kvm.violation(INV['break-before-make'], actor.id, BBM.HAZARD, gfn, level, old, desc);
  } else if (kvm.proto.pgtableApi && desc === (old | S2_S2AP_WRITE | S2_AF)) {
    // The arm64 relax path (kvm_pgtable_stage2_relax_perms): more permission
    // on the same output needs no break, and a TLB still holding the old
    // entry only faults again (its invalidation is the relax path's own).
    return;
  } else if (desc === mkReadonly(old) && descWritable(old)) {
    // Rule 5: write-protection, flushed after the unlock.
    if (m[b + H_DEFERRED] === 0) {
      m[b + H_DEF_GFN] = gfn;
      m[b + H_DEF_LEVEL] = level;
    }
    m[b + H_DEFERRED]++;
    return;
  } else if (kvm.proto.breakBeforeMake) {
    // Rule 3: the profile's code clears, flushes, then writes.
    kvm.violation(INV['break-before-make'], actor.id, BBM.NO_BREAK, gfn, level, old, desc);
  }
  addPending(kvm, b, REPLACED, entry, gfn, level);
  addChanged(kvm, b, gfn, level);
}

/** Whether the writer has changed entries waiting for a flush (s2Write's fast test). */
export function bbmPending(kvm: Kvm, actor: Actor): boolean {
  return kvm.m[kvm.layout.bbm + actor.id * BBM_ACTOR_WORDS + H_PENDING] !== 0;
}

/**
 * Called when a flush by `actor` has completed: `all` for a whole-VM flush
 * (or any flush on armv7), else a by-IPA flush at gfn on arm64.
 */
export function bbmFlushed(kvm: Kvm, actor: Actor, gfn: number, all: boolean): void {
  const m = kvm.m;
  const b = base(kvm, actor);
  const n = m[b + H_PENDING];
  if (all) {
    if (n !== 0) m[b + H_PENDING] = 0;
    if (m[b + H_DEFERRED] !== 0) m[b + H_DEFERRED] = 0;
    return;
  }
  if (n === 0 || n > BBM_PENDING) return;
  let k = 0;
  for (let i = 0; i < n; i++) {
    const g = m[b + P0 + i * 3 + 1];
    const level = m[b + P0 + i * 3 + 2] & 15;
    if (gfn >= g && gfn < g + spanOf(level)) continue; // covered: tlbi ipas2e1is at an IPA it translates
    if (k !== i) {
      m[b + P0 + k * 3] = m[b + P0 + i * 3];
      m[b + P0 + k * 3 + 1] = g;
      m[b + P0 + k * 3 + 2] = m[b + P0 + i * 3 + 2];
    }
    k++;
  }
  m[b + H_PENDING] = k;
}

/**
 * mmu_lock release hook (rule 4), run while the lock is still held. Nothing
 * to do (one word read) when the critical section changed no valid entry.
 */
export function bbmOnMmuUnlock(kvm: Kvm, actor: Actor): void {
  const b = kvm.layout.bbm + actor.id * BBM_ACTOR_WORDS;
  if (kvm.m[b + H_CHANGED] === 0) return;
  checkAtUnlock(kvm, actor, b);
}

/**
 * The release being checked is of the read side (arm64, 6.2 on): other
 * walkers change entries while the check compares TLBs with the tables, so
 * a comparison counts only if no entry changed while it read them (else the
 * other walker's own release check covers its change).
 */
let sharedCheck = false;
let changesBefore = 0;

function checkAtUnlock(kvm: Kvm, actor: Actor, b: number): void {
  const m = kvm.m;
  sharedCheck = !kvm.mmuLock.heldBy(actor);
  const pending = m[b + H_PENDING];
  if (pending > BBM_PENDING) {
    kvm.violation(INV['break-before-make'], actor.id, BBM.PENDING_OVERFLOW, pending);
  } else if (pending > 0) {
    const rec = m[b + P0 + 2];
    kvm.violation(INV['break-before-make'], actor.id, BBM.UNFLUSHED_AT_UNLOCK, m[b + P0 + 1], rec & 15, pending, rec >>> 4);
  }
  const changed = m[b + H_CHANGED];
  if (changed > BBM_CHANGED) {
    checkTlbRange(kvm, actor, m[b + H_LO], m[b + H_HI]);
  } else {
    for (let i = 0; i < changed; i++) {
      const gfn = m[b + C0 + i * 2];
      const level = m[b + C0 + i * 2 + 1];
      if (level === LEVEL_PTE) checkTlbPage(kvm, actor, gfn);
      else checkTlbRange(kvm, actor, gfn, gfn + spanOf(level));
    }
  }
  m[b + H_CHANGED] = 0;
  m[b + H_PENDING] = 0;
}

/** slots_lock release hook (rule 5): write-protected entries must have been flushed. */
export function bbmOnSlotsUnlock(kvm: Kvm, actor: Actor): void {
  const m = kvm.m;
  const b = kvm.layout.bbm + actor.id * BBM_ACTOR_WORDS;
  const n = m[b + H_DEFERRED];
  if (n === 0) return;
  kvm.violation(INV['break-before-make'], actor.id, BBM.WP_NOT_FLUSHED, n, m[b + H_DEF_GFN], m[b + H_DEF_LEVEL]);
  m[b + H_DEFERRED] = 0;
}

// ------------------------------------------------------------ TLB compare

/**
 * What the tables give for a TLB entry at `level` (LEVEL_PTE: the page gfn;
 * LEVEL_PMD: the 2 MiB block gfn starts): the level of the leaf that
 * translates it (0 none, LEVEL_PMD a block, LEVEL_PTE a page; for a block
 * entry a PTE table at the PMD counts as LEVEL_PTE) and its descriptor.
 */
const leaf = { level: 0, desc: 0 };
function leafFor(kvm: Kvm, gfn: number, level: number): void {
  const m = kvm.m;
  const L = kvm.layout;
  leaf.level = 0;
  leaf.desc = 0;
  // kvm->arch.pgd (a new root each VM life; none between two lives).
  const root = Atomics.load(m, CTRL.S2_PGD) - 1;
  if (root < 0) return;
  const d1 = Atomics.load(m, L.tablesBase + root * PTRS_PER_TABLE + pgdIndex(gfn));
  if (!descIsTable(d1)) return;
  const d2 = Atomics.load(m, L.tablesBase + descOa(d1) * PTRS_PER_TABLE + pmdIndex(gfn));
  // A LOCKED entry belongs to a shared walker between its break and its
  // make (arm64, 6.2 on): in transition, its own break-before-make is checked.
  if (descIsLocked(d2)) {
    leaf.level = -1;
    return;
  }
  if (!descValid(d2)) return;
  leaf.desc = d2;
  if (pmdIsBlock(d2)) {
    leaf.level = LEVEL_PMD;
    return;
  }
  if (level === LEVEL_PMD) {
    leaf.level = LEVEL_PTE; // a PTE table where the TLB holds a block
    return;
  }
  const d3 = Atomics.load(m, L.tablesBase + descOa(d2) * PTRS_PER_TABLE + pteIndex(gfn));
  if (descIsLocked(d3)) {
    leaf.level = -1;
    return;
  }
  leaf.desc = d3;
  if (descValid(d3)) leaf.level = LEVEL_PTE;
}

/**
 * Read a TLB slot of vCPU v consistently: the same tag before and after the
 * descriptor, within one access of its owner (a fill clears the tag first).
 * Returns the live base (gfn + 1 or block + 1) or 0, and the descriptor in
 * `out`; with `want` (a base) not 0, anything else is 0 after one load.
 */
const out = { desc: 0 };
function readSlot(kvm: Kvm, v: number, slot: number, want: number): number {
  const m = kvm.m;
  const first = Atomics.load(m, slot);
  if (first === 0 || (want !== 0 && (first & TLB_BASE_MASK) !== want)) return 0;
  const seqIdx = kvm.actorWord(v, ACTOR.ACCESS_SEQ);
  for (let tries = 0; tries < 8; tries++) {
    const s0 = Atomics.load(m, seqIdx);
    const t1 = Atomics.load(m, slot);
    if (t1 === 0) return 0;
    const d = Atomics.load(m, slot + 1);
    const t2 = Atomics.load(m, slot);
    const s1 = Atomics.load(m, seqIdx);
    if (t1 !== t2 || s0 !== s1) continue;
    if (!tlbTagLive(m, kvm.layout.tlbGen, t1)) return 0;
    out.desc = d;
    return t1 & TLB_BASE_MASK;
  }
  return 0;
}

/** Compare one TLB entry with the tables; a violation if it gives more than they do. */
function compare(kvm: Kvm, actor: Actor, v: number, gfn: number, level: number, desc: number): void {
  leafFor(kvm, gfn, level);
  if (leaf.level < 0) return;
  if (sharedCheck && Atomics.load(kvm.m, CTRL.S2_CHANGES) !== changesBefore) return;
  let reason = 0;
  if (leaf.level === 0) reason = STALE_NONE;
  else if (leaf.level !== level) reason = STALE_CONFLICT;
  else if (descOa(leaf.desc) !== descOa(desc)) reason = STALE_OA;
  else if (descWritable(desc) && !descWritable(leaf.desc)) reason = STALE_WRITE;
  if (reason !== 0) kvm.violation(INV['break-before-make'], actor.id, BBM.STALE_TLB_AT_UNLOCK, v | (level << 8) | (reason << 12), gfn, desc, leaf.desc);
}

/** The 4 KiB entry and the block entry every vCPU may hold for gfn. */
function checkTlbPage(kvm: Kvm, actor: Actor, gfn: number): void {
  const L = kvm.layout;
  for (let v = 0; v < L.vcpus; v++) {
    const vb = L.tlb + v * L.tlbWords;
    const ps = vb + (gfn & (L.tlbPageSlots - 1)) * 2;
    changesBefore = Atomics.load(kvm.m, CTRL.S2_CHANGES);
    if (readSlot(kvm, v, ps, gfn + 1) === gfn + 1) compare(kvm, actor, v, gfn, LEVEL_PTE, out.desc);
    const bs = vb + L.tlbPageSlots * 2 + ((gfn >>> 9) & (L.tlbBlockSlots - 1)) * 2;
    changesBefore = Atomics.load(kvm.m, CTRL.S2_CHANGES);
    if (readSlot(kvm, v, bs, (gfn >>> 9) + 1) === (gfn >>> 9) + 1) compare(kvm, actor, v, gfn & ~511, LEVEL_PMD, out.desc);
  }
}

/** Every TLB entry of every vCPU that translates a gfn in [lo, hi). */
function checkTlbRange(kvm: Kvm, actor: Actor, lo: number, hi: number): void {
  const L = kvm.layout;
  for (let v = 0; v < L.vcpus; v++) {
    const vb = L.tlb + v * L.tlbWords;
    for (let s = 0; s < L.tlbPageSlots + L.tlbBlockSlots; s++) {
      const slotAt = vb + s * 2;
      changesBefore = Atomics.load(kvm.m, CTRL.S2_CHANGES);
      const t = readSlot(kvm, v, slotAt, 0);
      if (t === 0) continue;
      if (s < L.tlbPageSlots) {
        const gfn = t - 1;
        if (gfn >= lo && gfn < hi) compare(kvm, actor, v, gfn, LEVEL_PTE, out.desc);
      } else {
        const first = (t - 1) * 512;
        if (first < hi && first + 512 > lo) compare(kvm, actor, v, first, LEVEL_PMD, out.desc);
      }
    }
  }
}

// ------------------------------------------------------------ reporting

const LEVEL_NAME = ['', 'PGD entry', 'PMD entry', 'PTE'];

function levelName(level: number): string {
  return LEVEL_NAME[level] ?? `level ${level}`;
}

function range(gfn: number, level: number): string {
  const span = spanOf(level);
  return span === 1 ? `gfn ${gfn}` : `gfn ${gfn}..${gfn + span - 1}`;
}

/** The message of a recorded `break-before-make` violation, and the gfn it is about. */
export function describeBbm(kvm: Kvm, kind: number, a: number, b: number, c: number, d: number): { message: string; gfn?: number } {
  const arch = kvm.proto.arch;
  switch (kind) {
    case BBM.HAZARD:
      return {
        gfn: a,
        message: `the ${levelName(b)} for ${range(a, b)} went from ${describeDesc(c, b)} to ${describeDesc(d, b)} without break-before-make: a change of output address or size between valid entries is UNPREDICTABLE (the TLB may hold both: a TLB conflict) until the flush that follows`,
      };
    case BBM.NO_BREAK:
      return {
        gfn: a,
        message: `the ${levelName(b)} for ${range(a, b)} went from ${describeDesc(c, b)} to ${describeDesc(d, b)} in place; profile ${kvm.proto.profile} clears the entry, flushes, then writes`,
      };
    case BBM.WRITE_BEFORE_FLUSH:
      return {
        gfn: a,
        message: `the ${levelName(b)} for ${range(a, b)} was cleared and written again (${describeDesc(c, b)}) before a TLB flush covered it (${arch}): the old translation may still be cached beside the new one`,
      };
    case BBM.UNFLUSHED_AT_UNLOCK:
      return {
        gfn: a,
        message: `mmu_lock released with the ${levelName(b)} for ${range(a, b)} ${d === CLEARED ? 'cleared' : 'changed'} and no TLB flush covering it since (${c} such entr${c === 1 ? 'y' : 'ies'}; ${arch} flush semantics)`,
      };
    case BBM.STALE_TLB_AT_UNLOCK: {
      const v = a & 255;
      const level = (a >>> 8) & 15;
      const reason = a >>> 12;
      const what = `vcpu${v}'s TLB holds ${describeDesc(c, level)} for ${level === LEVEL_PMD ? range(b, LEVEL_PMD) : `gfn ${b}`}`;
      const why =
        reason === STALE_NONE
          ? 'the tables map nothing there'
          : reason === STALE_CONFLICT
            ? `the tables hold ${describeDesc(d, LEVEL_PMD)} at the PMD: TLB conflict (entries of two sizes)`
            : reason === STALE_OA
              ? `the tables map frame ${descOa(d)}`
              : 'the tables map it read-only';
      return { gfn: b, message: `mmu_lock released with a stale TLB entry for an IPA changed in the critical section: ${what}, but ${why}` };
    }
    case BBM.WP_NOT_FLUSHED:
      return {
        gfn: b,
        message: `${a} entr${a === 1 ? 'y was' : 'ies were'} write-protected under mmu_lock (first: the ${levelName(c)} for ${range(b, c)}) and slots_lock was released without the TLB flush that must follow (kvm_flush_remote_tlbs)`,
      };
    case BBM.PENDING_OVERFLOW:
      return { message: `${a} stage-2 entries were changed in one mmu_lock critical section without a TLB flush between them` };
    default:
      return { message: `break-before-make (kind ${kind}, args ${a}, ${b}, ${c}, ${d})` };
  }
}

