/**
 * The JSON report (docs/design.md section 5: stable fields result, config,
 * violations, counters, migration, lock, schedule, replay) and its human
 * summary.
 */
import type { Kvm } from '../src/kvm/kvm.js';
import { COUNTER_NAMES, CNT, TRACE_EVENTS } from '../src/check/names.js';
import type { Violation } from '../src/check/invariants.js';
import { TRACE_RING, TRACE_WORDS, ACTOR } from '../src/shm/layout.js';
import { actorName } from '../src/vm.js';
import type { RunOptions } from './options.js';
import { formatBytes } from '../src/config.js';
import { EXACT_FIRST_HOLDS, formatLockTable, lockTableLines, type LockReport, type TimeStats } from '../src/sync/lockstat.js';

export interface ScheduleReport {
  hash: string;
  steps: number;
  switches: number;
  /**
   * Of the switches, the preemptive ones (the running actor could have gone
   * on); --max-preemptions bounds them. Absent in older reports.
   */
  preemptions?: number;
  strategy: string;
  /**
   * The scheduling step at which an interrupted run (or one given
   * --stop-step) ended, null when it ran to its end. `replay` ends there.
   */
  stoppedAtStep: number | null;
  /**
   * What a seed means in sim mode (SCHEDULE_VERSION of src/sim/sched.ts);
   * absent in reports of version 1. `replay` refuses another version.
   */
  version?: number;
}

export interface Report {
  tool: 's2stress';
  version: string;
  result: 'pass' | 'fail';
  /**
   * Exit code of the run: 0 pass, 1 violation, 3 harness failure or no
   * work done, 128 + the signal's number when interrupted (130 SIGINT, 143
   * SIGTERM, 129 SIGHUP) unless a violation (1) or a harness failure (3)
   * came first.
   */
  exitCode: number;
  config: RunOptions;
  /** The TLB semantics the run had: --arch, else the profile's architecture. */
  arch: string;
  violations: Violation[];
  counters: Record<string, number>;
  migration: { migrations: number; cancels: number; rounds: number; verifiedPages: number; mismatches: number; selftestRounds: number };
  lock: LockReport;
  schedule: ScheduleReport | null;
  replay: string;
  /** Said plainly when the run cannot be repeated interleaving for interleaving. */
  replayNote: string;
  elapsedMs: number;
  quiescentChecks: number;
  interrupted: boolean;
  /** The signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), null if none. */
  signal: string | null;
  /** Time from launch until every actor was running (the run clock starts then; elapsedMs does not include it). */
  startupMs: number;
  /**
   * Sim mode: the CPU every actor thread was pinned to (--sim-cpu), null
   * when they were not (threads mode, off, or pinning is not possible here).
   * Where the run ran, not what it did (outside `schedule`, whose hash is the
   * same either way). Absent in older reports.
   */
  pinnedCpu?: number | null;
  /**
   * Harness failure or no work done (exit 3): the cause; a crashed worker's
   * message is followed by its stack on the next lines.
   */
  error: string | null;
  /** The last events of every actor, oldest first (on failure). */
  traces: Record<string, string[]>;
  /**
   * Throughput over time: cumulative accesses and faults at ms since the run
   * clock started, about 100 samples over a run (the HTML report's plot).
   */
  timeline: TimelinePoint[];
}

export interface TimelinePoint {
  ms: number;
  accesses: number;
  faults: number;
}

/** Samples the counters for Report.timeline about every `everyMs`, at most 400 points (then every other is dropped). */
export class Timeline {
  readonly points: TimelinePoint[] = [];
  private last = -Infinity;
  constructor(private everyMs: number) {}
  sample(ms: number, accesses: number, faults: number, force = false): void {
    if (!force && ms - this.last < this.everyMs) return;
    this.last = ms;
    this.points.push({ ms: Math.round(ms * 10) / 10, accesses, faults });
    if (this.points.length > 400) {
      const kept = this.points.filter((_, i) => i % 2 === 0);
      this.points.length = 0;
      this.points.push(...kept);
      this.everyMs *= 2;
    }
  }
}

export const VERSION = '0.1.0';

export function collectCounters(kvm: Kvm): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < COUNTER_NAMES.length; i++) out[COUNTER_NAMES[i]] = kvm.counter(i);
  return out;
}

export function migrationSummary(kvm: Kvm): Report['migration'] {
  return {
    migrations: kvm.counter(CNT.migrations),
    cancels: kvm.counter(CNT.cancels),
    rounds: kvm.counter(CNT.rounds),
    verifiedPages: kvm.counter(CNT.verifiedPages),
    mismatches: kvm.counter(CNT.mismatches),
    selftestRounds: kvm.counter(CNT.selftestRounds),
  };
}

/** The last `n` events of each actor's trace ring, oldest first. */
export function collectTraces(kvm: Kvm, n = 16): Record<string, string[]> {
  const m = kvm.m;
  const L = kvm.layout;
  const out: Record<string, string[]> = {};
  for (let a = 0; a < L.nActors; a++) {
    const base = L.trace + a * (1 + TRACE_RING * TRACE_WORDS);
    const head = m[base];
    if (head === 0) continue;
    const events: string[] = [];
    for (let k = Math.max(0, head - Math.min(n, TRACE_RING)); k < head; k++) {
      const at = base + 1 + (k % TRACE_RING) * TRACE_WORDS;
      const name = TRACE_EVENTS[m[at]] ?? `ev${m[at]}`;
      events.push(`${name} ${m[at + 1]} ${m[at + 2]} ${m[at + 3]}`.trimEnd());
    }
    out[actorName(kvm, a)] = events;
  }
  return out;
}

export function progressOf(kvm: Kvm): number[] {
  const out: number[] = [];
  for (let a = 0; a < kvm.layout.nActors; a++) out.push(Atomics.load(kvm.m, kvm.actorWord(a, ACTOR.PROGRESS)));
  return out;
}

function fmtNum(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return `${Math.round(n)}`;
}

/** The headline word: FAIL, PASS, or INTERRUPTED (no violation before the signal). */
function verdict(r: Report): string {
  if (r.result === 'fail') return r.interrupted ? `FAIL (interrupted by ${r.signal})` : 'FAIL';
  return r.interrupted ? `INTERRUPTED by ${r.signal} (no violation before it)` : 'PASS';
}

export interface SummaryOptions {
  /** Print a crashed worker's stack (the lines after the first of `error`). */
  verbose?: boolean;
}

/** The human summary printed at the end of a run. */
export function formatSummary(r: Report, so: SummaryOptions = {}): string {
  const c = r.counters;
  const secs = Math.max(r.elapsedMs, 1) / 1000;
  const lines: string[] = [];
  const o = r.config;
  lines.push(
    `s2stress ${verdict(r)}: scenario ${o.scenario}, profile ${o.profile}${r.arch ? ` (${r.arch})` : ''}${o.bugs.length ? ` + bugs ${o.bugs.join(',')}` : ''}, ${o.mode} mode, ${o.vcpus} vCPUs, ${formatBytes(o.guestMem)} ${o.backing}, seed ${o.seed}, ${secs.toFixed(1)}s`,
  );
  lines.push(
    `  accesses ${fmtNum(c.accesses)} (${fmtNum(c.accesses / secs)}/s), faults ${fmtNum(c.faults)} (${fmtNum(c.faults / secs)}/s, ${fmtNum(c.faultRetries)} retried), TLB hits ${fmtNum(c.tlbHits)}, flushes ${fmtNum(c.tlbFlushes)}`,
  );
  if (o.lockOverride) lines.push(`  note: ${o.lockOverride}`);
  lines.push(
    `  maps: ${fmtNum(c.pteMaps)} PTE, ${fmtNum(c.blockMaps)} block, ${fmtNum(c.dissolves)} dissolved; dirty marked ${fmtNum(c.dirtyMarked)}, harvests ${fmtNum(c.harvests)}, pages copied ${fmtNum(c.pagesCopied)}`,
  );
  if ((c.readSideFaults ?? 0) > 0 || (c.relaxes ?? 0) > 0) {
    lines.push(
      `  arm64 walker: ${fmtNum(c.readSideFaults ?? 0)} faults on the read side, ${fmtNum(c.relaxes ?? 0)} relaxes, ${fmtNum(c.lostRaces ?? 0)} lost races (-EAGAIN), ${fmtNum(c.blockSplits ?? 0)} block splits, ${fmtNum(c.rcuTablesFreed ?? 0)} tables freed after RCU grace periods, ${fmtNum(c.spuriousPermFaults ?? 0)} spurious permission faults`,
    );
  }
  lines.push(
    `  host: ${fmtNum(c.invalidations)} invalidations, ${fmtNum(c.changePte)} change_pte, ${fmtNum(c.hostMigrations)} migrations, ${fmtNum(c.ksmMerges)} KSM, ${fmtNum(c.cowBreaks)} CoW, ${fmtNum(c.thpSplits)}/${fmtNum(c.thpCollapses)} THP split/collapse, ${fmtNum(c.zaps)} zaps`,
  );
  const mg = r.migration;
  lines.push(
    `  migration: ${mg.migrations} completed (${fmtNum(mg.verifiedPages)} pages verified, ${mg.mismatches} mismatches), ${mg.cancels} cancelled, ${mg.rounds} rounds${mg.selftestRounds ? `, ${mg.selftestRounds} dirty_log_test rounds` : ''}; ${r.quiescentChecks} stop-the-world checks`,
  );
  if (r.schedule) {
    const stop = r.schedule.stoppedAtStep != null ? `, stopped at step ${r.schedule.stoppedAtStep}` : '';
    lines.push(`  schedule: ${r.schedule.strategy}, ${r.schedule.steps} steps${stop}, ${r.schedule.switches} switches${r.schedule.preemptions != null ? ` (${r.schedule.preemptions} preemptive)` : ''}${r.config.maxPreemptions != null ? ` of at most ${r.config.maxPreemptions}` : ''}, hash ${r.schedule.hash}${r.pinnedCpu != null ? `, actors on CPU ${r.pinnedCpu}` : ''}`);
  }
  if (r.error) {
    const [first, ...stack] = r.error.split('\n');
    lines.push(`  HARNESS FAILURE: ${first}`);
    if (stack.length) lines.push(...(so.verbose ? stack.map((l) => `    ${l.trim()}`) : ['    (the worker\'s stack is in the report\'s "error"; --verbose prints it)']));
  }
  if (r.violations.length) {
    lines.push(`  ${r.violations.length} violation(s):`);
    for (const v of r.violations) lines.push(`    [${v.invariant}] ${v.actor}: ${v.message}`);
    const traces = Object.entries(r.traces);
    if (traces.length) {
      lines.push('  last events of every actor (oldest first):');
      for (const [actor, evs] of traces) lines.push(`    ${actor}: ${evs.join(' | ')}`);
    }
  }
  if (r.result === 'fail' || r.interrupted) {
    lines.push(`  rerun: ${r.replay}`);
    if (r.replayNote) lines.push(`  note: ${r.replayNote}`);
  }
  return lines.join('\n');
}

/** The one line `--quiet` prints. */
export function formatQuiet(r: Report): string {
  const first = r.violations[0];
  const word = r.result === 'fail' ? 'fail' : r.interrupted ? `interrupted by ${r.signal}` : 'pass';
  const err = r.error ? `: ${r.error.split('\n')[0]}` : '';
  return `s2stress ${word}${first ? `: [${first.invariant}] ${first.message}` : ''}${err}${r.result === 'fail' || r.interrupted ? `\n  rerun: ${r.replay}` : ''}`;
}

/** The lock table's width by default: it fits a 120-column terminal. */
export const LOCK_TABLE_COLUMNS = 120;

/** Time in us, at most 10 characters. */
function usCell(ns: number): string {
  const us = ns / 1000;
  if (us < 100) return us.toFixed(2);
  if (us < 1e6) return us.toFixed(1);
  if (us < 1e9) return us.toFixed(0);
  return `${(us / 1e6).toFixed(0)}s`;
}

/** A count, at most 10 characters. */
function countCell(n: number): string {
  return n < 1e9 ? `${n}` : fmtNum(n);
}

/** Wrap words to lines of at most `width` columns. */
function wrap(text: string, width: number, indent = ''): string[] {
  const out: string[] = [];
  let line = '';
  for (const w of text.split(' ')) {
    if (line && line.length + 1 + w.length > width) {
      out.push(line);
      line = indent + w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out;
}

/**
 * The lock_stat table. By default the columns that matter (contentions,
 * acquisitions, wait and hold avg/p99/max), within 120 columns; `wide`
 * gives every /proc/lock_stat column. In sim mode one actor runs at a
 * time: the times are serialized time (a wait includes other actors' turns),
 * and the table says so.
 */
export function formatLockTableFor(r: LockReport, mode: string, wide = false): string {
  const sim = mode === 'sim';
  const simNote = sim
    ? "sim mode: one actor runs at a time, so these are serialized times (a wait or a hold includes other actors' turns), not the times of a parallel run"
    : '';
  if (!r.enabled || wide) {
    const t = formatLockTable(r);
    return r.enabled && sim ? `${t}\n${simNote}` : t;
  }
  const head = ['class name', 'contended', 'acquired', 'wait-avg', 'wait-p99', 'wait-max', 'hold-avg', 'hold-p99', 'hold-max'];
  const row = (name: string, x: { contentions: number; acquisitions: number; waitNs: TimeStats; holdNs: TimeStats }): string[] => [
    name,
    countCell(x.contentions),
    countCell(x.acquisitions),
    usCell(x.waitNs.avg),
    usCell(x.waitNs.p99),
    usCell(x.waitNs.max),
    usCell(x.holdNs.avg),
    usCell(x.holdNs.p99),
    usCell(x.holdNs.max),
  ];
  const rows = lockTableLines(r).map((l) => row(l.name, l.stats));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const notes = [
    `mmu_lock (${r.kind}) lock_stat, times in us${sim ? ' of serialized (sim) time' : ''}; --wide for every column.`,
    ...(r.holdSampleEvery > 1
      ? [`Hold times: each site's first ${EXACT_FIRST_HOLDS} acquisitions per thread, then 1 in ${r.holdSampleEvery} (avg is an estimate; --lock-hold-sample 1 times every hold).`]
      : []),
    ...(sim ? [simNote] : []),
  ];
  return [...notes.flatMap((n) => wrap(n, LOCK_TABLE_COLUMNS, '  ')), fmt(head), ...rows.map(fmt)].join('\n');
}
