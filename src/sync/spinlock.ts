/**
 * mmu_lock and the other spinlocks, as Atomics on words of shared memory.
 * Every lock knows its owner (actor id + 1 in the OWNER word), which is what
 * the `lock-held` invariant and the `progress` watchdog read.
 *
 * Two spinlock kinds behind one interface (`--lock`), and a third, the
 * queued rwlock of Linux 5.18+ arm64 (`rwlock`), in rwlock.ts:
 * - ticket: the arm spinlock of the seed's era (arch/arm/include/asm/spinlock.h),
 *   FIFO fair; the default. As there, one 32-bit word holds two 16-bit
 *   tickets, `owner` in the low half and `next` in the high half: taking a
 *   ticket is one atomic add of 1 << 16 to the word (ldrex/add/strex), whose
 *   old value says at once whether the lock was free; the release is
 *   `owner++` on the low half alone (a 16-bit Atomics.store of owner + 1 on
 *   an Int16Array view of the same memory), so `owner` wraps without
 *   carrying into `next`;
 * - tas: test-and-set with bounded exponential back-off (test-and-test-and-set).
 *
 * Cost. An uncontended acquire+release is two locked instructions, as the
 * bare compare-exchange + store pair it is measured against (`s2stress
 * bench`). The OWNER, OWNER_SITE and LAST_OWNER words are written with plain
 * stores inside the critical section: the release (a seq_cst Atomics write)
 * orders them for the next holder, the owner reads back its own writes
 * (`heldBy`, `unlock`), and observers that do not hold the lock (watchdog,
 * reports) read them with Atomics.load and only need "some recent value".
 * (Atomics.load is not free in V8: ~6 ns against ~0.5 ns for a plain read.)
 *
 * Waiting. A waiter spins, then sleeps in short Atomics.wait back-offs
 * (Sched.waitWhile); the release wakes the sleepers (Atomics.notify) when
 * somebody waits: that is the arm ticket lock's wfe() in the waiter and
 * dsb_sev() in arch_spin_unlock(). Without the wake-up, a FIFO lock handed to
 * a sleeping waiter stays idle until its back-off ends, and with more threads
 * than cores the ticket lock's throughput collapses. The releaser looks for
 * waiters with a plain read after its locked release instruction; should it
 * ever read a stale "nobody", the waiter still wakes at the end of its
 * back-off (at most 1 ms): a late wake-up, never a lost one.
 *
 * Statistics (lock_stat, see lockstat.ts) are kept through the sink the lock
 * is given; with none (`--no-lock-stats`) the lock times and counts nothing.
 * Under the lock only counting happens (and the clock reads of a timed
 * acquisition); the wait and hold of a timed acquisition go to the sink
 * after the release. The in-flight hold (site, wait, start, weight) lives
 * with the lock object: each thread builds its own lock objects over the
 * shared words, and one lock has one holder at a time.
 */
import type { Actor } from './actor.js';
import { SITE } from './sites.js';

/** Word offsets inside a lock block (LOCK_WORDS long). */
export const LOCKW = {
  /** ticket: the ticket word (owner: low 16 bits, next: high 16 bits); tas: the lock word. */
  NEXT: 0,
  /** rwlock: the qrwlock `cnts` word (reader count << 9 | _QW_WAITING | _QW_LOCKED), see rwlock.ts. */
  CNTS: 0,
  /** rwlock: the qrwlock's internal `wait_lock`, a ticket word as NEXT of a ticket lock. */
  WAIT_LOCK: 1,
  /** Owner actor id + 1, 0 when free (rwlock: the write owner; readers are in a region of their own). */
  OWNER: 2,
  /** Site the owner took it at (for reports). */
  OWNER_SITE: 3,
  /** Last owner (actor id + 1), for counting owner changes (bounces). */
  LAST_OWNER: 4,
  /** tas: waiters in the slow path (they may be asleep: the release wakes them). */
  WAITERS: 5,
} as const;

/** Ticket word layout (arch_spinlock_t: u16 owner; u16 next; little-endian). */
export const TICKET_SHIFT = 16;
export const TICKET_MASK = 0xffff;

/**
 * lock_stat-like per-call-site statistics sink (one per thread; the
 * orchestrator merges them at the end of a run). A `site` here is a
 * lock_stat row: the call site itself for an exclusive (spinlock, or rwlock
 * write) acquisition, READ_ROW + the call site for an rwlock read one
 * (locksites.ts).
 */
export interface LockStatsSink {
  /**
   * Count an acquisition at `site`, under the lock (keep it cheap);
   * `bounce` when the previous owner was another actor. Returns the weight
   * of its hold timing: 0 not to time the hold, 1 to time it as one hold,
   * N to time it as a sample standing for N holds. (The wait of a contended
   * acquisition is always timed.)
   */
  acquired(site: number, contended: boolean, bounce: boolean): number;
  /**
   * Re-tag: move the current acquisition, as counted, from site `from` to
   * site `to`. When its hold is not being timed (`timed` false), returns the
   * weight with which to time it from now on, by the new site's sampling
   * (0: not at all), so that a rare site reached by re-tagging is timed too.
   */
  moved(from: number, to: number, contended: boolean, bounce: boolean, timed: boolean): number;
  /**
   * After the release, for an acquisition that waited or whose hold was
   * timed, at its final site: the wait (ns, or -1 when it did not wait) and
   * the hold (ns, or -1 when not timed) with the weight acquired() gave it.
   */
  timed(site: number, waitNs: number, holdNs: number, holdWeight: number): void;
}

/**
 * mmu_lock's interface. lock/unlock/tryLock/heldBy/owner are the exclusive
 * side: spin_lock() of a spinlock, write_lock() of an rwlock. The read side
 * (read_lock() and friends) shares the lock among readers on an rwlock
 * (rwlock.ts); on a spinlock, as in a kernel without KVM_HAVE_MMU_RWLOCK
 * where KVM_MMU_LOCK() is spin_lock() whichever side the caller meant, it is
 * the exclusive side itself.
 */
export interface SpinLock {
  readonly base: number;
  lock(actor: Actor, site: number): void;
  unlock(actor: Actor): void;
  /** Actor id of the (write) owner, or -1. Readers are not owners: see readers(), readHolders(). */
  owner(): number;
  heldBy(actor: Actor): boolean;
  /**
   * read_lock(): take the read side at lock_stat site `site`, waiting while
   * a writer holds or waits for the lock. Spinlocks: lock().
   */
  readLock(actor: Actor, site: number): void;
  /** read_unlock(): release the read side `actor` holds (throws if it holds none). Spinlocks: unlock(). */
  readUnlock(actor: Actor): void;
  /** read_trylock(): take the read side only if no writer holds or waits; true if taken. Spinlocks: tryLock(). */
  readTryLock(actor: Actor, site: number): boolean;
  /** `actor` holds the read side now. Spinlocks: heldBy(). */
  readHeldBy(actor: Actor): boolean;
  /** How many actors hold the read side now (spinlocks: 0). Readable from any thread. */
  readers(): number;
  /** Actor ids of the read holders, ascending (spinlocks: none). Readable from any thread. */
  readHolders(): number[];
  /** The lock_stat site actor `actorId` took the read side at, or -1 when it holds none (spinlocks: -1). */
  readSite(actorId: number): number;
  /**
   * arch_spin_trylock(): take the lock only if it is free now, without
   * waiting; true if taken. For a caller that must not wait (the
   * orchestrator's checks, which no scheduled actor would ever release for).
   */
  tryLock(actor: Actor, site: number): boolean;
  /** Attribute `actor`'s current hold (of either side) to another call site (statistics only). */
  retag(actor: Actor, site: number): void;
  /**
   * Run by unlock() and readUnlock() while the lock is still held by
   * `actor`, before the release (null: none). mmu_lock's is the live
   * break-before-make check (src/check/bbm.ts), on the actor's own changes.
   */
  releaseHook: ((actor: Actor) => void) | null;
}

const NS_PER_MS = 1e6;
// Module constants rather than property loads on the hot path.
const P_ACQUIRE = SITE['lock.acquire'];
const P_RELEASE = SITE['lock.release'];
const P_SPIN = SITE['lock.spin'];
const W_NEXT = LOCKW.NEXT;
const W_OWNER = LOCKW.OWNER;
const W_OWNER_SITE = LOCKW.OWNER_SITE;
const W_LAST_OWNER = LOCKW.LAST_OWNER;
const W_WAITERS = LOCKW.WAITERS;

function notOwner(lock: SpinLock, actor: Actor): Error {
  const reading = lock.readers() > 0 && lock.readHeldBy(actor) ? ' (it holds the read side: readUnlock)' : '';
  return new Error(`actor ${actor.id} unlocks a lock it does not hold (owner ${lock.owner()})${reading}`);
}

/**
 * What every lock kind shares: the owner word (for `lock-held` and the
 * watchdog), the statistics of an exclusive hold, and unlock around a
 * kind's release. The read side defaults to the exclusive side (a
 * spinlock's); RwLock (rwlock.ts) has its own.
 */
export abstract class OwnedLock implements SpinLock {
  // The in-flight hold, for statistics. Fields of the lock object itself
  // (each thread builds its own lock objects over the shared words, and a
  // lock has one holder at a time), so that the fast path loads nothing
  // else: the hold's site (re-tagged by retag()), whether it waited, whether
  // the owner changed, its wait (ns, contended only, else -1), when its
  // timing began (performance.now()) and the weight of that timing (0: the
  // hold is not timed). The two times start as doubles: V8 keeps a field's
  // representation, and turning a small-integer field into a double later
  // deoptimizes the code that uses it.
  private hSite = 0;
  private hContended = false;
  private hBounce = false;
  private hWaitNs = 0.5;
  private hStart = 0.5;
  private hWeight = 0;
  releaseHook: ((actor: Actor) => void) | null = null;

  constructor(
    protected readonly m: Int32Array,
    readonly base: number,
    protected readonly stats: LockStatsSink | null = null,
  ) {}

  abstract lock(actor: Actor, site: number): void;
  abstract tryLock(actor: Actor, site: number): boolean;
  /** The kind's own release of the lock word (owner already checked). */
  protected abstract release(): void;

  /**
   * Count an acquisition (the lock is held). A bounce is an owner change:
   * LAST_OWNER is only accessed under the lock, with plain accesses.
   */
  private counted(stats: LockStatsSink, me: number, site: number, contended: boolean): number {
    const m = this.m;
    const last = m[this.base + W_LAST_OWNER];
    let bounce = false;
    if (last !== me) {
      m[this.base + W_LAST_OWNER] = me;
      bounce = last !== 0;
    }
    this.hSite = site;
    this.hContended = contended;
    this.hBounce = bounce;
    return stats.acquired(site, contended, bounce);
  }

  /** The lock word was just taken without waiting: the owner words and the statistics of an uncontended acquisition. */
  protected taken(actor: Actor, site: number): void {
    const me = actor.id + 1;
    this.m[this.base + W_OWNER] = me;
    this.m[this.base + W_OWNER_SITE] = site;
    if (this.stats !== null) this.uncontended(this.stats, me, site);
  }

  /** An uncontended acquisition by `me` (actor id + 1) at `site`, the lock held. */
  protected uncontended(stats: LockStatsSink, me: number, site: number): void {
    const weight = this.counted(stats, me, site, false);
    this.hWeight = weight;
    if (weight !== 0) this.hStart = performance.now();
  }

  /** An acquisition that waited since `t0` (performance.now()), the lock held. */
  protected contendedSince(stats: LockStatsSink, me: number, site: number, t0: number): void {
    const now = performance.now();
    this.hWeight = this.counted(stats, me, site, true);
    this.hWaitNs = (now - t0) * NS_PER_MS;
    this.hStart = now;
  }

  unlock(actor: Actor): void {
    if (this.m[this.base + W_OWNER] !== actor.id + 1) throw notOwner(this, actor);
    const hook = this.releaseHook;
    if (hook !== null) hook(actor);
    const stats = this.stats;
    if (stats === null || (this.hWeight === 0 && !this.hContended)) {
      this.release();
    } else {
      // Read the hold before the release: once released, another actor of
      // this thread (sim mode, scripted tests) may take the lock.
      const weight = this.hWeight;
      const holdNs = weight !== 0 ? (performance.now() - this.hStart) * NS_PER_MS : -1;
      const site = this.hSite;
      const waitNs = this.hContended ? this.hWaitNs : -1;
      this.hWeight = 0;
      this.hContended = false;
      this.release();
      stats.timed(site, waitNs, holdNs, weight);
    }
    actor.sched.point(P_RELEASE);
  }

  /** No read side: read_lock() is spin_lock(). */
  readLock(actor: Actor, site: number): void {
    this.lock(actor, site);
  }
  readUnlock(actor: Actor): void {
    this.unlock(actor);
  }
  readTryLock(actor: Actor, site: number): boolean {
    return this.tryLock(actor, site);
  }
  readHeldBy(actor: Actor): boolean {
    return this.heldBy(actor);
  }
  readers(): number {
    return 0;
  }
  readHolders(): number[] {
    return [];
  }
  readSite(_actorId: number): number {
    return -1;
  }

  owner(): number {
    return Atomics.load(this.m, this.base + W_OWNER) - 1;
  }
  heldBy(actor: Actor): boolean {
    return Atomics.load(this.m, this.base + W_OWNER) === actor.id + 1;
  }
  retag(_actor: Actor, site: number): void {
    const stats = this.stats;
    if (stats === null || site === this.hSite) return;
    const weight = stats.moved(this.hSite, site, this.hContended, this.hBounce, this.hWeight !== 0);
    this.hSite = site;
    if (this.hWeight === 0 && weight !== 0) {
      // Timed from the re-tag on: the part of the hold before it (the
      // fault's first steps, well under a microsecond) is not counted.
      this.hWeight = weight;
      this.hStart = performance.now();
    }
  }
}

export class TicketLock extends OwnedLock {
  private readonly h: Int16Array;

  constructor(m: Int32Array, base: number, stats: LockStatsSink | null = null) {
    super(m, base, stats);
    // owner is the low half of the ticket word: word index w is halfword 2w.
    this.h = new Int16Array(m.buffer, m.byteOffset, m.length * 2);
    const probe = new Int16Array(new Int32Array([1]).buffer);
    if (probe[0] !== 1) throw new Error('TicketLock assumes a little-endian machine');
  }

  /** arch_spin_trylock(): take a ticket only if it would be served at once (next == owner). */
  tryLock(actor: Actor, site: number): boolean {
    const m = this.m;
    const word = Atomics.load(m, this.base + W_NEXT);
    if (word >>> TICKET_SHIFT !== (word & TICKET_MASK)) return false;
    if (Atomics.compareExchange(m, this.base + W_NEXT, word, (word + (1 << TICKET_SHIFT)) | 0) !== word) return false;
    this.taken(actor, site);
    return true;
  }

  /** arch_spin_lock(): take a ticket, wait until it is served. */
  lock(actor: Actor, site: number): void {
    const m = this.m;
    actor.sched.point(P_ACQUIRE);
    const old = Atomics.add(m, this.base + W_NEXT, 1 << TICKET_SHIFT);
    const ticket = old >>> TICKET_SHIFT;
    if (ticket !== (old & TICKET_MASK)) {
      this.lockSlow(actor, site, ticket, old);
      return;
    }
    this.taken(actor, site);
  }

  private lockSlow(actor: Actor, site: number, ticket: number, word: number): void {
    const m = this.m;
    const stats = this.stats;
    const t0 = stats !== null ? performance.now() : 0;
    // Wait while the word is unchanged (a ticket taken behind us wakes us
    // for nothing: re-check), until `owner` is our ticket.
    do {
      actor.sched.waitWhile(this.base + W_NEXT, word, P_SPIN);
      word = Atomics.load(m, this.base + W_NEXT);
    } while ((word & TICKET_MASK) !== ticket);
    const me = actor.id + 1;
    m[this.base + W_OWNER] = me;
    m[this.base + W_OWNER_SITE] = site;
    if (stats !== null) this.contendedSince(stats, me, site, t0);
  }

  /**
   * arch_spin_unlock(): smp_mb(); owner++ (the low half only, a halfword
   * store: only the holder writes `owner`, and an Int16Array wraps it
   * without carrying into `next`), then wake the waiters (dsb_sev).
   */
  protected release(): void {
    const m = this.m;
    m[this.base + W_OWNER] = 0;
    const h = this.h;
    const hi = (this.base + W_NEXT) * 2;
    Atomics.store(h, hi, h[hi] + 1);
    const word = m[this.base + W_NEXT];
    if (word >>> TICKET_SHIFT !== (word & TICKET_MASK)) Atomics.notify(m, this.base + W_NEXT);
  }
}

const TAS_MAX_BACKOFF = 1024;

export class TasLock extends OwnedLock {
  tryLock(actor: Actor, site: number): boolean {
    if (Atomics.compareExchange(this.m, this.base + W_NEXT, 0, 1) !== 0) return false;
    this.taken(actor, site);
    return true;
  }

  lock(actor: Actor, site: number): void {
    const m = this.m;
    actor.sched.point(P_ACQUIRE);
    if (Atomics.compareExchange(m, this.base + W_NEXT, 0, 1) !== 0) {
      this.lockSlow(actor, site);
      return;
    }
    this.taken(actor, site);
  }

  private lockSlow(actor: Actor, site: number): void {
    const m = this.m;
    const stats = this.stats;
    const t0 = stats !== null ? performance.now() : 0;
    let backoff = 1;
    Atomics.add(m, this.base + W_WAITERS, 1);
    do {
      // test-and-test-and-set with bounded exponential back-off
      for (let i = 0; i < backoff && Atomics.load(m, this.base + W_NEXT) !== 0; i++) {
        /* spin */
      }
      if (backoff < TAS_MAX_BACKOFF) backoff <<= 1;
      actor.sched.waitWhile(this.base + W_NEXT, 1, P_SPIN);
    } while (Atomics.compareExchange(m, this.base + W_NEXT, 0, 1) !== 0);
    Atomics.sub(m, this.base + W_WAITERS, 1);
    const me = actor.id + 1;
    m[this.base + W_OWNER] = me;
    m[this.base + W_OWNER_SITE] = site;
    if (stats !== null) this.contendedSince(stats, me, site, t0);
  }

  protected release(): void {
    const m = this.m;
    m[this.base + W_OWNER] = 0;
    Atomics.store(m, this.base + W_NEXT, 0);
    if (m[this.base + W_WAITERS] !== 0) Atomics.notify(m, this.base + W_NEXT);
  }


}
