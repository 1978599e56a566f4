/**
 * The bug zoo's kill table: every injectable defect, run over seeds in sim
 * and threads mode until the harness reports it; the invariant that caught
 * it, the seeds tried, and the median time to detection.
 */
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { BUGS, type BugInfo } from '../src/profiles.js';
import { ConfigError } from '../src/config.js';
import { parseRunArgs } from './options.js';
import { runThreads } from './run.js';
import { runSim } from './simrun.js';
import type { Report } from './report.js';
import { parseDuration, parseIntFlag } from './units.js';

/** Where each defect lives: the scenario and backing that reach it. */
export interface ZooTarget {
  scenario: string;
  backing: string;
  /** Extra run flags. */
  extra?: string[];
  /** Extra flags for threads mode only (chaos delays widen a race window). */
  threadsExtra?: string[];
  /** Extra flags for sim mode only. */
  simExtra?: string[];
}

export const ZOO_TARGETS: Readonly<Record<string, ZooTarget>> = {
  // A stale read-only block entry survives only in a TLB that keeps reading
  // (a write faults and drops it): a read-mostly guest with more vCPUs.
  // It lives until the next whole-VM flush, so checks must come often.
  'no-tlbi-on-dissolve': { scenario: 'migrate', backing: 'thp', extra: ['--write-pct', '5', '--vcpus', '4'], simExtra: ['--check-steps', '500'], threadsExtra: ['--check-every', '20ms'] },
  'no-mark-dirty': { scenario: 'migrate', backing: 'thp' },
  'thp-while-logging': { scenario: 'migrate', backing: 'thp' },
  'hugetlb-while-logging': { scenario: 'migrate', backing: 'hugetlb' },
  'no-wp-on-enable': { scenario: 'migrate', backing: 'thp' },
  // A fault that read the old slot must reach mmu_lock after the early
  // write-protect: in threads mode, chaos delays widen that window.
  'wp-before-grace': { scenario: 'log-toggle', backing: 'thp', threadsExtra: ['--chaos', '0.2', '--write-pct', '90'] },
  // A fault must map a page the host is changing: a small guest makes them meet.
  'no-notifier-retry': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '4M'] },
  'leak-on-dissolve': { scenario: 'migrate', backing: 'thp' },
  'harvest-no-wp': { scenario: 'migrate', backing: 'anon' },
  'harvest-no-flush': { scenario: 'migrate', backing: 'anon' },
  // The window is one store wide: a small, write-heavy guest under a host storm.
  'flush-no-wait': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '2M', '--write-pct', '80'] },
  'unlocked-change-pte': { scenario: 'notifier-storm', backing: 'anon' },
  'valid-pte-ref-leak': { scenario: 'migrate', backing: 'anon' },
  'wp-range-unaligned': { scenario: 'notifier-storm', backing: 'anon' },
  'block-over-table': { scenario: 'cancel', backing: 'thp' },
  'gup-under-mmu-lock': { scenario: 'notifier-storm', backing: 'anon' },
  // Retries need invalidations racing faults; the leak shows at the next stop-the-world check.
  'retry-leaks-page': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '4M'] },
  // An invalidation must complete between a fault's host lookup and its
  // sequence read, on the page it faults on: a small guest under a host storm.
  'seq-after-lookup': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '2M', '--write-pct', '80'] },
  'harvest-wp-short': { scenario: 'migrate', backing: 'anon' },
  // A fault must take mmu_lock in the one step between the notifier's unlock and its count++.
  'count-after-unlock': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '2M', '--write-pct', '80'] },
  // As wp-before-grace: a fault of the last vCPU that read the old slot must reach mmu_lock after the write-protect.
  'srcu-skips-reader': { scenario: 'log-toggle', backing: 'thp', threadsExtra: ['--chaos', '0.2', '--write-pct', '90'] },
  'write-fault-maps-readonly': { scenario: 'migrate', backing: 'anon' },
  // Dissolves and write-protect faults replace entries: a THP guest under migration.
  'flush-before-clear': { scenario: 'migrate', backing: 'thp' },
  // The host must leave a THP compound and mapped by PTEs (a partial zap): thp-churn does little else.
  'thp-adjust-compound': { scenario: 'thp-churn', backing: 'thp' },
};

export interface ZooBudget {
  seeds: number;
  simOps: number;
  threadsMs: number;
  vcpus: number;
  guestMem: string;
}

export const DEFAULT_BUDGET: ZooBudget = { seeds: 5, simOps: 60_000, threadsMs: 10_000, vcpus: 2, guestMem: '8M' };

export function zooArgs(bug: string, mode: 'sim' | 'threads', seed: number, b: ZooBudget, profile = 'fixed'): string[] {
  const t = ZOO_TARGETS[bug];
  const args = ['--profile', profile, '--scenario', t.scenario, '--backing', t.backing, '--vcpus', String(b.vcpus), '--guest-mem', b.guestMem, '--mode', mode, '--seed', String(seed)];
  if (profile === 'fixed' && bug) args.push('--bug', bug);
  if (mode === 'sim') args.push('--ops', String(b.simOps));
  else args.push('--duration', `${b.threadsMs}ms`, '--check-every', '200ms', '--watchdog', '3s');
  return lastWins([...args, ...(t.extra ?? []), ...(mode === 'threads' ? (t.threadsExtra ?? []) : (t.simExtra ?? []))]);
}

/** Per-bug flags override the budget's (`run` refuses a repeated flag): keep the last value of each flag but --bug. */
function lastWins(args: string[]): string[] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < args.length; i += 2) pairs.push([args[i], args[i + 1]]);
  return pairs.filter(([f], i) => f === '--bug' || !pairs.slice(i + 1).some(([g]) => g === f)).flat();
}

export async function runZooOnce(bug: string, mode: 'sim' | 'threads', seed: number, b: ZooBudget): Promise<Report> {
  const o = parseRunArgs(zooArgs(bug, mode, seed, b), { ...parseRunArgs([]), seed });
  o.quiet = true;
  return mode === 'sim' ? runSim(o) : runThreads(o);
}

export interface ZooCell {
  caught: number;
  tried: number;
  invariant: string | null;
  /** Median time to detection over the seeds, ms (an uncaught seed counts as the budget). */
  medianMs: number | null;
  expectedSeen: boolean;
}

export interface ZooRow {
  bug: string;
  expected: string;
  sim: ZooCell | null;
  threads: ZooCell | null;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export async function zooCell(info: BugInfo, mode: 'sim' | 'threads', b: ZooBudget, log?: (s: string) => void): Promise<ZooCell> {
  const times: number[] = [];
  let caught = 0;
  let invariant: string | null = null;
  let expectedSeen = false;
  for (let seed = 1; seed <= b.seeds; seed++) {
    const r = await runZooOnce(info.name, mode, seed, b);
    const invs = r.violations.map((v) => v.invariant);
    if (r.result === 'fail' && r.exitCode === 1) {
      caught++;
      times.push(r.elapsedMs);
      invariant ??= invs[0];
      if (invs.some((i) => i === info.expected || (info.also ?? []).includes(i as never))) expectedSeen = true;
    } else {
      times.push(mode === 'sim' ? r.elapsedMs : b.threadsMs);
    }
    log?.(`  ${info.name} ${mode} seed ${seed}: ${r.result}${invs.length ? ` [${[...new Set(invs)].join(',')}]` : ''} ${Math.round(r.elapsedMs)} ms${r.error ? ` ERROR ${r.error}` : ''}`);
  }
  return { caught, tried: b.seeds, invariant, medianMs: caught > b.seeds / 2 ? median(times) : null, expectedSeen };
}

export function formatKillTable(rows: ZooRow[], meta: string): string {
  const cell = (c: ZooCell | null): string =>
    c === null ? '-' : `${c.caught}/${c.tried} ${c.medianMs === null ? 'median >budget' : `median ${(c.medianMs / 1000).toFixed(2)}s`}`;
  const lines = [
    meta,
    '',
    '| bug | caught | invariant (expected) | sim: caught/seeds, median time | threads: caught/seeds, median time |',
    '|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const caught = (r.sim?.caught ?? 0) + (r.threads?.caught ?? 0) > 0;
    const inv = r.sim?.invariant ?? r.threads?.invariant ?? '-';
    lines.push(`| ${r.bug} | ${caught ? 'yes' : 'NO'} | ${inv} (${r.expected}) | ${cell(r.sim)} | ${cell(r.threads)} |`);
  }
  return lines.join('\n');
}

export const ZOO_USAGE = `s2stress zoo [--mode sim|threads|both] [--seeds N] [--bug NAME]... [--sim-ops N] [--threads-duration TIME]
             [--json FILE] [--verbose]
  run every --bug (or the ones named) over seeds 1..N in each mode and print the kill table;
  exit 0 when every bug was caught, 1 when one was not, 2 on bad usage`;

export async function main(args: string[], io: { out(s: string): void; err(s: string): void }): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(`usage: ${ZOO_USAGE}`);
    return 0;
  }
  const b: ZooBudget = { ...DEFAULT_BUDGET };
  let modes: ('sim' | 'threads')[] = ['sim', 'threads'];
  let json: string | null = null;
  const only: string[] = [];
  let verbose = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = (): string => {
      const x = args[++i];
      if (x === undefined || x.startsWith('--')) throw new ConfigError(a, `${a} needs a value`);
      return x;
    };
    switch (a) {
      case '--seeds':
        b.seeds = parseIntFlag(a, v(), 1, 1000);
        break;
      case '--sim-ops':
        b.simOps = parseIntFlag(a, v(), 1000, 100_000_000);
        break;
      case '--threads-duration':
        b.threadsMs = parseDuration(a, v());
        break;
      case '--mode': {
        const m = v();
        if (m !== 'sim' && m !== 'threads' && m !== 'both') throw new ConfigError(a, `--mode must be sim|threads|both, got '${m}'`);
        modes = m === 'both' ? ['sim', 'threads'] : [m];
        break;
      }
      case '--bug': {
        const name = v();
        if (!BUGS.some((x) => x.name === name)) throw new ConfigError(a, `--bug '${name}' is not a known defect; known: ${BUGS.map((x) => x.name).join(', ')}`);
        only.push(name);
        break;
      }
      case '--json':
        json = v();
        break;
      case '--verbose':
        verbose = true;
        break;
      default:
        throw new ConfigError(a, `unknown flag '${a}' for zoo; accepted:\n${ZOO_USAGE}`);
    }
  }
  const rows: ZooRow[] = [];
  for (const info of BUGS) {
    if (only.length && !only.includes(info.name)) continue;
    const row: ZooRow = { bug: info.name, expected: info.expected, sim: null, threads: null };
    for (const mode of modes) {
      const c = await zooCell(info, mode, b, verbose ? io.err : undefined);
      if (mode === 'sim') row.sim = c;
      else row.threads = c;
    }
    rows.push(row);
    io.err(`${info.name}: sim ${row.sim ? `${row.sim.caught}/${row.sim.tried}` : '-'}, threads ${row.threads ? `${row.threads.caught}/${row.threads.tried}` : '-'}`);
  }
  const meta = `s2stress zoo, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown cpu'}), node ${process.version}; budget per seed: sim ${b.simOps} accesses, threads ${b.threadsMs / 1000}s; ${b.vcpus} vCPUs, ${b.guestMem} guest`;
  io.out(formatKillTable(rows, meta));
  if (json) writeFileSync(json, JSON.stringify({ meta, budget: b, rows }, null, 2));
  return rows.every((r) => (r.sim?.caught ?? 0) + (r.threads?.caught ?? 0) > 0) ? 0 : 1;
}
