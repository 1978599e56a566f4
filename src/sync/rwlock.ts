/**
 * mmu_lock as arm64 has it since Linux 5.18: an rwlock_t, that is a queued
 * rwlock (kernel/locking/qrwlock.c, include/asm-generic/qrwlock.h,
 * include/asm-generic/qrwlock_types.h), behind the SpinLock interface
 * (`--lock rwlock`). Its write side is the interface's lock/unlock/tryLock
 * (write_lock() and friends); the read side is readLock/readUnlock/readTryLock.
 *
 * State, as the kernel's, in the lock block (LOCKW):
 * - CNTS, the 32-bit `cnts` word: the reader count in bits 9.. (_QR_BIAS per
 *   reader), _QW_WAITING (0x100: a writer waits for the readers to drain),
 *   _QW_LOCKED (0xff, the low byte `wlocked`: a writer holds the lock);
 * - WAIT_LOCK, the internal `wait_lock` (arch_spinlock_t: a ticket lock here,
 *   the arm ticket layout of TicketLock, owner in the low half and next in
 *   the high half), on which writers and slow-path readers queue in order:
 *   the queue is what makes the lock fair;
 * - OWNER, OWNER_SITE, LAST_OWNER: the write owner, as the spinlocks keep
 *   them (owner() and heldBy() are the write side's).
 * Which actors hold the read side lives in a region of its own, one word per
 * actor (site + 1 while it holds the read side, 0 when not): cnts only has a
 * count, and the `lock-held` check, the watchdog and the reports need names.
 *
 * Waiting is always Sched.waitWhile(word, value): a slow-path reader waits
 * on `cnts` while _QW_LOCKED is set (or on wait_lock behind the queue head),
 * a writer waits on `cnts` until it is exactly _QW_WAITING. In sim mode a
 * waiter is blocked while its word keeps that value: a reader behind a
 * writer and a writer behind readers are blocked, not runnable. Other
 * readers moving the count wake a waiter for nothing; it re-checks.
 *
 * In-flight hold statistics: a writer's live in the lock object, as a
 * spinlock's (one writer at a time); readers hold together, so theirs are
 * kept per holder, in arrays indexed by actor id (each thread builds its own
 * lock object, but several actors may share one: the orchestrator's checks,
 * single-threaded tests). Read acquisitions go to the read rows of lock_stat
 * (READ_ROW + site), write acquisitions to the usual rows.
 */
import type { Actor } from './actor.js';
import { SITE } from './sites.js';
import { LOCKW, OwnedLock, TICKET_MASK, TICKET_SHIFT, type LockStatsSink } from './spinlock.js';
import { READ_ROW } from './locksites.js';

/** _QW_LOCKED: the `wlocked` byte of cnts (a writer holds the lock). */
export const QW_LOCKED = 0xff;
/** _QW_WAITING: a writer waits (in the queue's head) for the readers to drain. */
export const QW_WAITING = 0x100;
/** _QW_WMASK: writer bits. */
export const QW_WMASK = 0x1ff;
/** _QR_SHIFT, _QR_BIAS: the reader count starts at bit 9. */
export const QR_SHIFT = 9;
export const QR_BIAS = 1 << QR_SHIFT;

const NS_PER_MS = 1e6;
const P_ACQUIRE = SITE['lock.acquire'];
const P_RELEASE = SITE['lock.release'];
const P_SPIN = SITE['lock.spin'];
const W_CNTS = LOCKW.CNTS;
const W_WAIT_LOCK = LOCKW.WAIT_LOCK;
const W_OWNER = LOCKW.OWNER;
const W_OWNER_SITE = LOCKW.OWNER_SITE;
const W_LAST_OWNER = LOCKW.LAST_OWNER;
/** rFlags bits of a reader's in-flight hold. */
const R_CONTENDED = 1;
const R_BOUNCE = 2;

export class RwLock extends OwnedLock {
  /** Halfword view: the owner half of wait_lock. */
  private readonly h: Int16Array;
  /** Byte view: the `wlocked` byte of cnts. */
  private readonly b: Uint8Array;
  // A reader's in-flight hold, by actor id: site, weight of its hold timing
  // (0: not timed), contended/bounce flags, wait (ns) and hold start.
  private readonly rSite: Int32Array;
  private readonly rWeight: Int32Array;
  private readonly rFlags: Uint8Array;
  private readonly rWaitNs: Float64Array;
  private readonly rStart: Float64Array;

  /**
   * `base`: the lock block (LOCK_WORDS); `readersBase`: the read holders'
   * region, one word per actor id below `nActors` (layout.mmuLockReaders).
   */
  constructor(
    m: Int32Array,
    base: number,
    private readonly readersBase: number,
    private readonly nActors: number,
    stats: LockStatsSink | null = null,
  ) {
    super(m, base, stats);
    this.h = new Int16Array(m.buffer, m.byteOffset, m.length * 2);
    this.b = new Uint8Array(m.buffer, m.byteOffset, m.length * 4);
    const probe = new Uint8Array(new Int32Array([1]).buffer);
    if (probe[0] !== 1) throw new Error('RwLock assumes a little-endian machine');
    if (readersBase < 0 || readersBase + nActors > m.length) throw new RangeError(`RwLock: readers region ${readersBase}+${nActors} is outside the shared words`);
    this.rSite = new Int32Array(nActors);
    this.rWeight = new Int32Array(nActors);
    this.rFlags = new Uint8Array(nActors);
    this.rWaitNs = new Float64Array(nActors).fill(0.5);
    this.rStart = new Float64Array(nActors).fill(0.5);
  }

  // ------------------------------------------------------------ write side

  /** queued_write_trylock(): only when cnts is 0 (no reader, no writer, nobody waiting). */
  tryLock(actor: Actor, site: number): boolean {
    const m = this.m;
    const i = this.base + W_CNTS;
    if (Atomics.load(m, i) !== 0) return false;
    if (Atomics.compareExchange(m, i, 0, QW_LOCKED) !== 0) return false;
    this.taken(actor, site);
    return true;
  }

  /** queued_write_lock(): cnts 0 -> _QW_LOCKED in one compare-exchange, else the slow path. */
  lock(actor: Actor, site: number): void {
    actor.sched.point(P_ACQUIRE);
    if (Atomics.compareExchange(this.m, this.base + W_CNTS, 0, QW_LOCKED) !== 0) {
      this.writeSlow(actor, site);
      return;
    }
    this.taken(actor, site);
  }

  /**
   * queued_write_lock_slowpath(): queue on wait_lock; at the head, take the
   * lock at once if cnts is 0, else set _QW_WAITING (new readers now go to
   * the slow path and queue behind us) and wait until cnts is exactly
   * _QW_WAITING (the readers drained), then _QW_WAITING -> _QW_LOCKED;
   * leave the queue.
   */
  private writeSlow(actor: Actor, site: number): void {
    const m = this.m;
    const i = this.base + W_CNTS;
    const stats = this.stats;
    const t0 = stats !== null ? performance.now() : 0;
    this.waitLockAcquire(actor);
    if (!(Atomics.load(m, i) === 0 && Atomics.compareExchange(m, i, 0, QW_LOCKED) === 0)) {
      Atomics.or(m, i, QW_WAITING);
      actor.sched.point(P_SPIN);
      for (;;) {
        const c = Atomics.load(m, i);
        if (c === QW_WAITING) {
          if (Atomics.compareExchange(m, i, QW_WAITING, QW_LOCKED) === QW_WAITING) break;
          continue;
        }
        actor.sched.waitWhile(i, c, P_SPIN);
      }
    }
    const me = actor.id + 1;
    m[this.base + W_OWNER] = me;
    m[this.base + W_OWNER_SITE] = site;
    if (stats !== null) this.contendedSince(stats, me, site, t0);
    this.waitLockRelease();
  }

  /**
   * queued_write_unlock(): smp_store_release(&lock->wlocked, 0), a store of
   * the low byte alone (readers passing through the fast path may have
   * added their bias meanwhile: a store of the whole word would lose it);
   * then wake the queue's head if there is a queue (it waits on cnts).
   */
  protected release(): void {
    const m = this.m;
    m[this.base + W_OWNER] = 0;
    Atomics.store(this.b, (this.base + W_CNTS) * 4, 0);
    const w = m[this.base + W_WAIT_LOCK];
    if (w >>> TICKET_SHIFT !== (w & TICKET_MASK)) Atomics.notify(m, this.base + W_CNTS);
  }

  // ------------------------------------------------------------- read side

  /** queued_read_lock(): add a reader; done unless a writer holds or waits. */
  override readLock(actor: Actor, site: number): void {
    this.checkReader(actor);
    actor.sched.point(P_ACQUIRE);
    const old = Atomics.add(this.m, this.base + W_CNTS, QR_BIAS);
    if ((old & QW_WMASK) !== 0) {
      this.readSlow(actor, site);
      return;
    }
    this.readTaken(actor, site, false, 0);
  }

  /**
   * queued_read_lock_slowpath(), process context: back out of the count,
   * queue on wait_lock (behind a waiting writer: fair), add the reader again
   * at the queue's head and wait until no writer holds the lock, then let
   * the next one in the queue become its head.
   */
  private readSlow(actor: Actor, site: number): void {
    const m = this.m;
    const i = this.base + W_CNTS;
    const t0 = this.stats !== null ? performance.now() : 0;
    this.readerLeaves();
    actor.sched.point(P_SPIN);
    this.waitLockAcquire(actor);
    Atomics.add(m, i, QR_BIAS);
    for (;;) {
      const c = Atomics.load(m, i);
      if ((c & QW_LOCKED) === 0) break;
      actor.sched.waitWhile(i, c, P_SPIN);
    }
    this.readTaken(actor, site, true, t0);
    this.waitLockRelease();
  }

  /** queued_read_trylock(): add a reader only if no writer holds or waits, and keep it only if that is still so. */
  override readTryLock(actor: Actor, site: number): boolean {
    this.checkReader(actor);
    const m = this.m;
    const i = this.base + W_CNTS;
    if ((Atomics.load(m, i) & QW_WMASK) !== 0) return false;
    if ((Atomics.add(m, i, QR_BIAS) & QW_WMASK) !== 0) {
      this.readerLeaves();
      return false;
    }
    this.readTaken(actor, site, false, 0);
    return true;
  }

  /** queued_read_unlock(): atomic_sub_return_release(_QR_BIAS, &lock->cnts), waking a writer the last reader leaves to. */
  override readUnlock(actor: Actor): void {
    const id = actor.id;
    const m = this.m;
    if (id >= this.nActors || m[this.readersBase + id] === 0) throw this.notReader(actor);
    const hook = this.releaseHook;
    if (hook !== null) hook(actor);
    const stats = this.stats;
    if (stats === null || (this.rWeight[id] === 0 && (this.rFlags[id] & R_CONTENDED) === 0)) {
      m[this.readersBase + id] = 0;
      this.readerLeaves();
    } else {
      const weight = this.rWeight[id];
      const holdNs = weight !== 0 ? (performance.now() - this.rStart[id]) * NS_PER_MS : -1;
      const site = this.rSite[id];
      const waitNs = (this.rFlags[id] & R_CONTENDED) !== 0 ? this.rWaitNs[id] : -1;
      this.rWeight[id] = 0;
      this.rFlags[id] = 0;
      m[this.readersBase + id] = 0;
      this.readerLeaves();
      stats.timed(READ_ROW + site, waitNs, holdNs, weight);
    }
    actor.sched.point(P_RELEASE);
  }

  override readHeldBy(actor: Actor): boolean {
    return actor.id < this.nActors && Atomics.load(this.m, this.readersBase + actor.id) !== 0;
  }

  override readers(): number {
    let n = 0;
    for (let a = 0; a < this.nActors; a++) if (Atomics.load(this.m, this.readersBase + a) !== 0) n++;
    return n;
  }

  override readHolders(): number[] {
    const out: number[] = [];
    for (let a = 0; a < this.nActors; a++) if (Atomics.load(this.m, this.readersBase + a) !== 0) out.push(a);
    return out;
  }

  override readSite(actorId: number): number {
    return actorId >= 0 && actorId < this.nActors ? Atomics.load(this.m, this.readersBase + actorId) - 1 : -1;
  }

  /** A reader's hold moves to another lock_stat site (a writer's: OwnedLock.retag). */
  override retag(actor: Actor, site: number): void {
    const id = actor.id;
    if (id >= this.nActors || this.m[this.readersBase + id] === 0) {
      super.retag(actor, site);
      return;
    }
    const stats = this.stats;
    const from = this.rSite[id];
    if (stats === null || site === from) return;
    const f = this.rFlags[id];
    const weight = stats.moved(READ_ROW + from, READ_ROW + site, (f & R_CONTENDED) !== 0, (f & R_BOUNCE) !== 0, this.rWeight[id] !== 0);
    this.rSite[id] = site;
    if (this.rWeight[id] === 0 && weight !== 0) {
      this.rWeight[id] = weight;
      this.rStart[id] = performance.now();
    }
  }

  // --------------------------------------------------------------- helpers

  /** A reader took the lock (cnts has its bias, no writer holds): its word, and its statistics. */
  private readTaken(actor: Actor, site: number, contended: boolean, t0: number): void {
    const id = actor.id;
    const m = this.m;
    m[this.readersBase + id] = site + 1;
    const stats = this.stats;
    if (stats === null) return;
    // A bounce is a change of the last acquirer (either side), as lock_stat
    // counts one when the lock's last CPU changes. Readers race on the word:
    // the exchange says who was last.
    const me = id + 1;
    let bounce = false;
    if (m[this.base + W_LAST_OWNER] !== me) {
      const last = Atomics.exchange(m, this.base + W_LAST_OWNER, me);
      bounce = last !== 0 && last !== me;
    }
    const weight = stats.acquired(READ_ROW + site, contended, bounce);
    this.rSite[id] = site;
    this.rWeight[id] = weight;
    this.rFlags[id] = (contended ? R_CONTENDED : 0) | (bounce ? R_BOUNCE : 0);
    if (contended) {
      const now = performance.now();
      this.rWaitNs[id] = (now - t0) * NS_PER_MS;
      this.rStart[id] = now;
    } else if (weight !== 0) {
      this.rStart[id] = performance.now();
    }
  }

  /** atomic_sub(_QR_BIAS): a reader leaves the count; the last one before a waiting writer wakes it. */
  private readerLeaves(): void {
    const m = this.m;
    const i = this.base + W_CNTS;
    if (Atomics.sub(m, i, QR_BIAS) - QR_BIAS === QW_WAITING) Atomics.notify(m, i);
  }

  /** arch_spin_lock(&lock->wait_lock): take a ticket, wait until it is served (no owner words, no statistics). */
  private waitLockAcquire(actor: Actor): void {
    const m = this.m;
    const i = this.base + W_WAIT_LOCK;
    const old = Atomics.add(m, i, 1 << TICKET_SHIFT);
    const ticket = old >>> TICKET_SHIFT;
    let word = (old + (1 << TICKET_SHIFT)) | 0;
    while ((word & TICKET_MASK) !== ticket) {
      actor.sched.waitWhile(i, word, P_SPIN);
      word = Atomics.load(m, i);
    }
  }

  /** arch_spin_unlock(&lock->wait_lock): owner++ on the low half, and wake the queue if somebody waits. */
  private waitLockRelease(): void {
    const m = this.m;
    const h = this.h;
    const hi = (this.base + W_WAIT_LOCK) * 2;
    Atomics.store(h, hi, h[hi] + 1);
    const w = m[this.base + W_WAIT_LOCK];
    if (w >>> TICKET_SHIFT !== (w & TICKET_MASK)) Atomics.notify(m, this.base + W_WAIT_LOCK);
  }

  /**
   * read_lock() by an actor that holds the read side already: a recursive
   * read lock, which deadlocks against a waiting writer (lockdep reports it);
   * KVM never nests mmu_lock, so the model refuses it outright.
   */
  private checkReader(actor: Actor): void {
    const id = actor.id;
    if (id >= this.nActors || id < 0) throw new RangeError(`RwLock: actor ${id} is outside the readers region (${this.nActors} actors)`);
    if (this.m[this.readersBase + id] !== 0) throw new Error(`actor ${id} takes the read side of a lock it already holds for read (recursive read_lock)`);
  }

  private notReader(actor: Actor): Error {
    const w = this.heldBy(actor) ? ' (it holds the write side: unlock)' : '';
    return new Error(`actor ${actor.id} read-unlocks a lock it does not hold for read (readers ${this.readers()}, owner ${this.owner()})${w}`);
  }

  /** Whether somebody waits: rwlock_is_contended() -> arch_spin_is_locked(&lock->wait_lock). */
  isContended(): boolean {
    const w = Atomics.load(this.m, this.base + W_WAIT_LOCK);
    return w >>> TICKET_SHIFT !== (w & TICKET_MASK);
  }
}
