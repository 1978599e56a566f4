/**
 * `struct kvm` of the model: typed views on the one shared region, the
 * resolved protocol, mmu_lock, and the small helpers every part uses
 * (counters, violations, trace rings). Built identically in every thread
 * from the same SharedArrayBuffer and configuration.
 */
import { type ModelConfig, RESCHED_GRANULE_DEFAULT } from '../config.js';
import { PAGE_SIZE } from '../arch/stage2.js';
import { type Layout, computeLayout, ACTOR, CTRL, N_COUNTERS, VIOLATION_WORDS, MAX_VIOLATIONS, TRACE_RING, TRACE_WORDS, ACTOR_WORDS } from '../shm/layout.js';
import { type Protocol, checkProfileFeatures, resolveProtocol } from '../profiles.js';
import { type SpinLock, TicketLock, type LockStatsSink, LOCKW, TICKET_MASK, TICKET_SHIFT } from '../sync/spinlock.js';
import { createLock } from '../sync/locks.js';
import type { Actor } from '../sync/actor.js';
import { bbmOnMmuUnlock, bbmOnSlotsUnlock } from '../check/bbm.js';
import { INV } from '../check/names.js';

/** kernel-bug kind: mmu_lock's read side released with an entry still LOCKED (KBUG.LOCKED_AT_UNLOCK in pgtable.ts). */
export const KBUG_LOCKED_AT_UNLOCK = 8;

export const SHM_MAGIC = 0x53325354; // 'S2ST'

export class Kvm {
  readonly layout: Layout;
  readonly m: Int32Array;
  readonly f64: Float64Array;
  readonly proto: Protocol;
  /** kvm->mmu_lock: a spinlock (`ticket`, `tas`) or, as on arm64 since 5.18, an rwlock (`rwlock`). */
  readonly mmuLock: SpinLock;
  /** Host page allocator's zone lock. */
  readonly zoneLock: SpinLock;
  /** kvm->slots_lock (a mutex in the kernel; a lock word here). */
  readonly slotsLock: SpinLock;
  /** Global table-page pool lock (the page allocator, for table pages). */
  readonly tableLock: SpinLock;
  /** Pages a long walk covers between two cond_resched_lock() calls (ModelConfig.reschedGranule). */
  readonly reschedGranulePages: number;
  /** need_resched() of this thread's actors: xorshift32 state per actor id (not shared). */
  private readonly reschedRng: Int32Array;
  /** need_resched() is true at one call in this many (ModelConfig.condReschedEvery). */
  private readonly reschedEvery: number;

  constructor(
    readonly cfg: ModelConfig,
    readonly sab: SharedArrayBuffer,
    lockStats: LockStatsSink | null = null,
  ) {
    this.layout = computeLayout(cfg);
    if (sab.byteLength < this.layout.bytes) {
      throw new Error(`shared region is ${sab.byteLength} bytes, layout needs ${this.layout.bytes}`);
    }
    this.m = new Int32Array(sab, 0, this.layout.words);
    this.f64 = new Float64Array(sab, this.layout.countersF64 * 8, this.layout.nActors * N_COUNTERS);
    this.proto = resolveProtocol(cfg.profile, cfg.bugs, cfg.arch, cfg.fixes ?? []);
    checkProfileFeatures(cfg);
    const L = this.layout;
    this.mmuLock = createLock(cfg.lock, this.m, L.mmuLock, lockStats, { base: L.mmuLockReaders, n: L.nActors });
    this.zoneLock = new TicketLock(this.m, L.zoneLock);
    this.slotsLock = new TicketLock(this.m, L.slotsLock);
    this.tableLock = new TicketLock(this.m, L.tableLock);
    // The live break-before-make check: at each mmu_lock release, and at each
    // slots_lock release for the write-protect paths that flush after it.
    this.mmuLock.releaseHook = (actor) => bbmOnMmuUnlock(this, actor);
    this.slotsLock.releaseHook = (actor) => bbmOnSlotsUnlock(this, actor);
    this.reschedGranulePages = (cfg.reschedGranule ?? RESCHED_GRANULE_DEFAULT) / PAGE_SIZE;
    this.reschedEvery = cfg.condReschedEvery ?? 64;
    this.reschedRng = new Int32Array(L.nActors);
    for (let a = 0; a < L.nActors; a++) this.reschedRng[a] = (Math.imul(a + 1, 0x9e3779b9) ^ 0x5bd1e995) | 1;
  }

  /**
   * read_unlock(&kvm->mmu_lock), with the live break-before-make check of
   * the critical section first (the write side runs it as the lock's
   * release hook).
   */
  mmuReadUnlock(actor: Actor): void {
    // stage2_try_break_pte() .. stage2_make_pte() inside one critical section:
    // an entry left LOCKED blocks every walker that meets it for ever.
    const locked = Atomics.load(this.m, this.actorWord(actor.id, ACTOR.LOCKED_ENTRY));
    if (locked !== 0) {
      this.violation(INV['kernel-bug'], actor.id, KBUG_LOCKED_AT_UNLOCK, locked - 1, Atomics.load(this.m, locked - 1));
      Atomics.store(this.m, this.actorWord(actor.id, ACTOR.LOCKED_ENTRY), 0);
    }
    // The break-before-make release check runs as the lock's releaseHook.
    this.mmuLock.readUnlock(actor);
  }

  /**
   * spin_needbreak(&kvm->mmu_lock) -> spin_is_contended(): somebody waits
   * for mmu_lock. Ticket lock: a ticket was taken after the holder's
   * (next - owner > 1); test-and-set: a waiter is in the slow path.
   * rwlock: rwlock_needbreak() -> rwlock_is_contended() ->
   * queued_rwlock_is_contended(): arch_spin_is_locked(&lock->wait_lock),
   * a writer or a slow-path reader is in the qrwlock's queue (what
   * cond_resched_rwlock_write() and cond_resched_rwlock_read() look at).
   */
  mmuLockIsContended(): boolean {
    const base = this.layout.mmuLock;
    if (this.cfg.lock === 'tas') return Atomics.load(this.m, base + LOCKW.WAITERS) !== 0;
    if (this.cfg.lock === 'rwlock') {
      const wl = Atomics.load(this.m, base + LOCKW.WAIT_LOCK);
      return wl >>> TICKET_SHIFT !== (wl & TICKET_MASK);
    }
    const w = Atomics.load(this.m, base + LOCKW.NEXT);
    return (((w >>> TICKET_SHIFT) - (w & TICKET_MASK)) & TICKET_MASK) > 1;
  }

  /**
   * need_resched() for `actor`: its time slice is up. Threads mode: at a
   * seeded one call in condReschedEvery (a per-actor xorshift stream); with
   * condReschedEvery 1 (sim mode) always, and the sim scheduler decides at
   * the scheduling point whether anybody else runs.
   */
  needResched(actorId: number): boolean {
    if (this.reschedEvery <= 1) return true;
    let x = this.reschedRng[actorId];
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.reschedRng[actorId] = x;
    return (x >>> 0) % this.reschedEvery === 0;
  }

  static allocate(cfg: ModelConfig): SharedArrayBuffer {
    const L = computeLayout(cfg);
    const sab = new SharedArrayBuffer(L.bytes);
    new Int32Array(sab)[CTRL.MAGIC] = SHM_MAGIC;
    return sab;
  }

  count(actor: Actor, counter: number, n = 1): void {
    this.f64[actor.id * N_COUNTERS + counter] += n;
  }

  counter(counter: number): number {
    let s = 0;
    for (let a = 0; a < this.layout.nActors; a++) s += this.f64[a * N_COUNTERS + counter];
    return s;
  }

  actorWord(actorId: number, word: number): number {
    return this.layout.actors + actorId * ACTOR_WORDS + word;
  }

  /**
   * Record a violation found as it happens (live checks). Words: invariant,
   * actor, kind, a, b, c, d. Returns false when the ring is full.
   */
  violation(inv: number, actorId: number, kind: number, a = 0, b = 0, c = 0, d = 0): boolean {
    const m = this.m;
    const n = Atomics.add(m, CTRL.VIOLATION_COUNT, 1);
    Atomics.store(m, CTRL.FAILED, 1);
    if (n >= MAX_VIOLATIONS) return false;
    const at = this.layout.violations + n * VIOLATION_WORDS;
    m[at + 1] = actorId;
    m[at + 2] = kind;
    m[at + 3] = a;
    m[at + 4] = b;
    m[at + 5] = c;
    m[at + 6] = d;
    Atomics.store(m, at, inv + 1); // published last
    return true;
  }

  /** Append an event to the actor's trace ring (the last TRACE_RING events). */
  trace(actor: Actor, ev: number, a: number, b = 0, c = 0): void {
    const base = this.layout.trace + actor.id * (1 + TRACE_RING * TRACE_WORDS);
    const m = this.m;
    const head = m[base];
    const at = base + 1 + (head % TRACE_RING) * TRACE_WORDS;
    m[at] = ev;
    m[at + 1] = a;
    m[at + 2] = b;
    m[at + 3] = c;
    m[base] = head + 1;
  }
}
