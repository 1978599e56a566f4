/**
 * Shared pieces of the single-threaded model tests: a scripted scheduler
 * that makes interleavings deterministic, and small readers of the shared
 * state (TLB slots, dirty bitmap, trace rings, table pages).
 *
 * A test that needs "another actor runs here" registers an action at a named
 * site on the actor's ScriptSched; the action runs synchronously at that
 * point, as if the scheduler had switched to the other actor and back. A
 * wait (`waitWhile`) cannot block a single thread: the script must say what
 * happens while the actor waits (the other actor's step that changes the
 * word), and a wait nobody scripted fails the test instead of hanging it.
 */
import { Actor } from '../../src/sync/actor.js';
import type { Sched } from '../../src/sync/sched.js';
import { SITE, siteName, type SiteName } from '../../src/sync/sites.js';
import type { Kvm } from '../../src/kvm/kvm.js';
import { TRACE_RING, TRACE_WORDS, ACTOR, CTRL } from '../../src/shm/layout.js';
import { PTRS_PER_TABLE, descValid, descIsTable, descOa, pgdIndex, pmdIndex } from '../../src/arch/stage2.js';
import { ROOT_TABLE, entryIndex } from '../../src/kvm/pgtable.js';
import { SLOTW, slotWord } from '../../src/kvm/memslot.js';
import { CNT, EV, type CounterName, type TraceEventName } from '../../src/check/names.js';
import { TLB_S2_ONLY_ONE_IN, tlbBlockSlot, tlbLiveBase, tlbPageSlot } from '../../src/kvm/tlb.js';

export const MiB = 1024 * 1024;
export const PROFILES = ['v14', 'v15', 'fixed'] as const;

export interface WaitRecord {
  index: number;
  value: number;
  site: string;
}

/** What a scripted wait does: the other actor's step that ends the wait. */
export type WaitHandler = (w: WaitRecord, nth: number) => void;

/** A deterministic Sched: actions at named sites, scripted waits, a log of both. */
export class ScriptSched implements Sched {
  readonly points: string[] = [];
  readonly waits: WaitRecord[] = [];
  private readonly actions = new Map<number, Array<() => void>>();
  onWait: WaitHandler | null = null;
  /** Keep a log of every point (off by default: the walker has many). */
  logPoints = false;

  constructor(readonly m: Int32Array) {}

  /** Run `fn` once, the next time this actor reaches `site`. */
  at(site: SiteName, fn: () => void): this {
    const id = SITE[site];
    const list = this.actions.get(id) ?? [];
    list.push(fn);
    this.actions.set(id, list);
    return this;
  }

  /** Actions registered but never reached (a script that did not run as planned). */
  pending(): string[] {
    const out: string[] = [];
    for (const [site, list] of this.actions) for (let i = 0; i < list.length; i++) out.push(siteName(site));
    return out;
  }

  point(site: number): void {
    if (this.logPoints) this.points.push(siteName(site));
    const list = this.actions.get(site);
    if (list && list.length > 0) {
      const fn = list.shift()!;
      if (list.length === 0) this.actions.delete(site);
      fn();
    }
  }

  idle(_ms: number): void {}

  waitWhile(index: number, value: number, site: number): void {
    const w: WaitRecord = { index, value, site: siteName(site) };
    this.waits.push(w);
    if (this.waits.length > 1000) throw new Error('scripted scheduler: more than 1000 waits, the script loops');
    if (Atomics.load(this.m, index) !== value) return;
    if (!this.onWait) {
      throw new Error(`unscripted wait at ${w.site} on word ${index} (value ${value}): a single-threaded test would hang here`);
    }
    this.onWait(w, this.waits.length - 1);
  }
}

/** An 8 MiB, 2-vCPU VM (4 regions of 2 MiB) by default; actors with FreeSched. */
export { makeWorld as world, wval, type World } from '../helpers.js';

/** The same actor id driven by a ScriptSched (fresh per-actor state: srcu depth 0). */
export function scripted(kvm: Kvm, id: number): { actor: Actor; sched: ScriptSched } {
  const sched = new ScriptSched(kvm.m);
  return { actor: new Actor(id, sched), sched };
}

export function counter(kvm: Kvm, name: CounterName): number {
  return kvm.counter(CNT[name]);
}

// ------------------------------------------------------------------ TLB

/** The descriptor vCPU `v` caches for gfn as a 4 KiB entry, or null. */
export function tlbPage(kvm: Kvm, v: number, gfn: number): number | null {
  const s = tlbPageSlot(kvm, v, gfn);
  return tlbLiveBase(kvm, Atomics.load(kvm.m, s)) === gfn + 1 ? Atomics.load(kvm.m, s + 1) : null;
}

/** The descriptor vCPU `v` caches for gfn's 2 MiB block, or null. */
export function tlbBlock(kvm: Kvm, v: number, gfn: number): number | null {
  const s = tlbBlockSlot(kvm, v, gfn);
  return tlbLiveBase(kvm, Atomics.load(kvm.m, s)) === (gfn >>> 9) + 1 ? Atomics.load(kvm.m, s + 1) : null;
}

/**
 * Make vCPU v's next access attempt that walks fill a stage-2-only TLB entry
 * (`s2Only` true) or a combined stage-1+2 one: the kind follows the attempt
 * count in its ACCESS_SEQ word (src/kvm/tlb.ts).
 */
export function nextFill(kvm: Kvm, v: number, s2Only: boolean): void {
  const idx = kvm.actorWord(v, ACTOR.ACCESS_SEQ);
  const n = TLB_S2_ONLY_ONE_IN;
  const want = s2Only ? n - 1 : 0;
  while (((Atomics.load(kvm.m, idx) >>> 1) & (n - 1)) !== want) Atomics.add(kvm.m, idx, 2);
}

/** Number of occupied TLB slots of vCPU v. */
export function tlbCount(kvm: Kvm, v: number): number {
  const L = kvm.layout;
  let n = 0;
  for (let s = 0; s < L.tlbPageSlots + L.tlbBlockSlots; s++) if (tlbLiveBase(kvm, kvm.m[L.tlb + v * L.tlbWords + s * 2]) !== 0) n++;
  return n;
}

// ---------------------------------------------------------- dirty bitmap

/** The gfns whose bit is set in the slot's dirty bitmap (not consuming it). */
export function dirtyGfns(kvm: Kvm, slot = 0): number[] {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const bitmap = m[slotWord(kvm, slot, SLOTW.BITMAP)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const out: number[] = [];
  for (let i = 0; i < n; i++) if ((Atomics.load(m, bitmap + (i >>> 5)) >>> (i & 31)) & 1) out.push(base + i);
  return out;
}

/** The gfns a GET_DIRTY_LOG snapshot reports. */
export function snapshotGfns(kvm: Kvm, snapshot: Int32Array, slot = 0): number[] {
  const m = kvm.m;
  const base = m[slotWord(kvm, slot, SLOTW.BASE_GFN)];
  const n = m[slotWord(kvm, slot, SLOTW.NPAGES)];
  const out: number[] = [];
  for (let i = 0; i < n; i++) if ((snapshot[i >>> 5] >>> (i & 31)) & 1) out.push(base + i);
  return out;
}

export function newSnapshot(kvm: Kvm): Int32Array {
  return new Int32Array(kvm.layout.bitmapWords);
}

// ---------------------------------------------------------------- tables

/** The PMD entry (word index) for gfn, or -1 when there is no PMD table. */
export function pmdEntry(kvm: Kvm, gfn: number): number {
  const d1 = Atomics.load(kvm.m, entryIndex(kvm, ROOT_TABLE, pgdIndex(gfn)));
  if (!descIsTable(d1)) return -1;
  return entryIndex(kvm, descOa(d1), pmdIndex(gfn));
}

export function validEntries(kvm: Kvm, table: number): number {
  let n = 0;
  for (let i = 0; i < PTRS_PER_TABLE; i++) if (descValid(Atomics.load(kvm.m, entryIndex(kvm, table, i)))) n++;
  return n;
}

export function tableRef(kvm: Kvm, table: number): number {
  return Atomics.load(kvm.m, kvm.layout.tableRef + table);
}

/** Table pages in the free pool plus in every actor's memory cache. */
export function tablesAvailable(kvm: Kvm): number {
  const L = kvm.layout;
  let n = kvm.m[CTRL.TABLE_FREE_TOP];
  for (let a = 0; a < L.nActors; a++) n += kvm.m[L.memcache + a * L.memcacheWords];
  return n;
}

export function memcacheCount(kvm: Kvm, actorId: number): number {
  return kvm.m[kvm.layout.memcache + actorId * kvm.layout.memcacheWords];
}

// ----------------------------------------------------------------- trace

export interface TraceEntry {
  ev: TraceEventName | string;
  a: number;
  b: number;
  c: number;
}

/** The actor's trace events recorded since `since` (a head value from traceHead). */
export function traceSince(kvm: Kvm, actorId: number, since: number): TraceEntry[] {
  const base = kvm.layout.trace + actorId * (1 + TRACE_RING * TRACE_WORDS);
  const m = kvm.m;
  const head = m[base];
  if (head - since > TRACE_RING) throw new Error(`trace ring of actor ${actorId} wrapped: ${head - since} events since the mark`);
  const names = Object.keys(EV) as TraceEventName[];
  const out: TraceEntry[] = [];
  for (let i = since; i < head; i++) {
    const at = base + 1 + (i % TRACE_RING) * TRACE_WORDS;
    out.push({ ev: names[m[at]] ?? `ev#${m[at]}`, a: m[at + 1], b: m[at + 2], c: m[at + 3] });
  }
  return out;
}

export function traceHead(kvm: Kvm, actorId: number): number {
  return kvm.m[kvm.layout.trace + actorId * (1 + TRACE_RING * TRACE_WORDS)];
}

export function accessSeqWord(kvm: Kvm, vcpu: number): number {
  return kvm.actorWord(vcpu, ACTOR.ACCESS_SEQ);
}

/** Names of violations, for compact assertions. */
export function invariantsOf(vs: ReadonlyArray<{ invariant: string }>): string[] {
  return vs.map((v) => v.invariant);
}
