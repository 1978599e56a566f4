/**
 * The JSON report (DESIGN.md section 5: stable fields result, config,
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
import type { LockReport } from '../src/sync/lockstat.js';

export interface ScheduleReport {
  hash: string;
  steps: number;
  switches: number;
  strategy: string;
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
  /** Exit code of the run: 0 pass, 1 violation, 3 harness failure. */
  exitCode: number;
  config: RunOptions;
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
  /** Harness failure (exit 3): the cause. */
  error: string | null;
  /** The last events of every actor, oldest first (on failure). */
  traces: Record<string, string[]>;
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

/** The human summary printed at the end of a run. */
export function formatSummary(r: Report): string {
  const c = r.counters;
  const secs = r.elapsedMs / 1000;
  const lines: string[] = [];
  const o = r.config;
  lines.push(
    `s2stress ${r.result.toUpperCase()}${r.interrupted ? ' (interrupted)' : ''}: scenario ${o.scenario}, profile ${o.profile}${o.bugs.length ? ` + bugs ${o.bugs.join(',')}` : ''}, ${o.mode} mode, ${o.vcpus} vCPUs, ${formatBytes(o.guestMem)} ${o.backing}, seed ${o.seed}, ${secs.toFixed(1)}s`,
  );
  lines.push(
    `  accesses ${fmtNum(c.accesses)} (${fmtNum(c.accesses / secs)}/s), faults ${fmtNum(c.faults)} (${fmtNum(c.faults / secs)}/s, ${fmtNum(c.faultRetries)} retried), TLB hits ${fmtNum(c.tlbHits)}, flushes ${fmtNum(c.tlbFlushes)}`,
  );
  lines.push(
    `  maps: ${fmtNum(c.pteMaps)} PTE, ${fmtNum(c.blockMaps)} block, ${fmtNum(c.dissolves)} dissolved; dirty marked ${fmtNum(c.dirtyMarked)}, harvests ${fmtNum(c.harvests)}, pages copied ${fmtNum(c.pagesCopied)}`,
  );
  lines.push(
    `  host: ${fmtNum(c.invalidations)} invalidations, ${fmtNum(c.changePte)} change_pte, ${fmtNum(c.hostMigrations)} migrations, ${fmtNum(c.ksmMerges)} KSM, ${fmtNum(c.cowBreaks)} CoW, ${fmtNum(c.thpSplits)}/${fmtNum(c.thpCollapses)} THP split/collapse, ${fmtNum(c.zaps)} zaps`,
  );
  const mg = r.migration;
  lines.push(
    `  migration: ${mg.migrations} completed (${fmtNum(mg.verifiedPages)} pages verified, ${mg.mismatches} mismatches), ${mg.cancels} cancelled, ${mg.rounds} rounds${mg.selftestRounds ? `, ${mg.selftestRounds} dirty_log_test rounds` : ''}; ${r.quiescentChecks} stop-the-world checks`,
  );
  if (r.schedule) lines.push(`  schedule: ${r.schedule.strategy}, ${r.schedule.steps} steps, ${r.schedule.switches} switches, hash ${r.schedule.hash}`);
  if (r.error) lines.push(`  HARNESS FAILURE: ${r.error}`);
  if (r.violations.length) {
    lines.push(`  ${r.violations.length} violation(s):`);
    for (const v of r.violations) lines.push(`    [${v.invariant}] ${v.actor}: ${v.message}`);
    const traces = Object.entries(r.traces);
    if (traces.length) {
      lines.push('  last events of every actor (oldest first):');
      for (const [actor, evs] of traces) lines.push(`    ${actor}: ${evs.join(' | ')}`);
    }
  }
  if (r.result === 'fail') {
    lines.push(`  rerun: ${r.replay}`);
    if (r.replayNote) lines.push(`  note: ${r.replayNote}`);
  }
  return lines.join('\n');
}
