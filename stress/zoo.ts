/**
 * The bug zoo's kill table: every injectable defect, run over seeds in sim
 * and threads mode until the harness reports it; the invariant that caught
 * it, the seeds tried, and the median time to detection.
 */
import { htmlZoo } from './html.js';
import { checkWritable, writeTextAtomic } from './files.js';
import { cpus, loadavg } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
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
  // Logging that comes and goes (cancelled migrations): blocks come back between
  // logging periods, so there is something to dissolve (a migration's logging
  // may cover the whole run, and faults while logging map no block).
  'leak-on-dissolve': { scenario: 'cancel', backing: 'thp' },
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
  // Threads: random delays (chaos) widen the one-point window between the host
  // lookup and the sequence read; without them a detection takes 6-9 s.
  'seq-after-lookup': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '2M', '--write-pct', '80'], threadsExtra: ['--chaos', '0.2'] },
  'harvest-wp-short': { scenario: 'migrate', backing: 'anon' },
  // A fault must take mmu_lock in the one step between the notifier's unlock and its count++.
  'count-after-unlock': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '2M', '--write-pct', '80'] },
  // As wp-before-grace: a fault of the last vCPU that read the old slot must reach mmu_lock after the write-protect.
  'srcu-skips-reader': { scenario: 'log-toggle', backing: 'thp', threadsExtra: ['--chaos', '0.2', '--write-pct', '90'] },
  'write-fault-maps-readonly': { scenario: 'migrate', backing: 'anon' },
  // Dissolves and write-protect faults replace entries: a THP guest under migration.
  'flush-before-clear': { scenario: 'migrate', backing: 'thp' },
  // The host must leave a THP compound and mapped by PTEs (a partial zap): thp-churn does little else.
  'thp-adjust-compound': { scenario: 'thp-churn', backing: 'thp', threadsExtra: ['--check-every', '20ms'] },
  // ---- the modern design (profile `modern`) ----
  // Two vCPUs must fault on one entry at once: a write-heavy small guest.
  'shared-plain-store': { scenario: 'fault-storm', backing: 'thp', extra: ['--guest-mem', '4M', '--write-pct', '80'] },
  // Breaks of valid entries: splits and table-to-block under migration.
  'break-without-tlbi': { scenario: 'cancel', backing: 'thp', extra: ['--vcpus', '3'] },
  'make-without-break': { scenario: 'cancel', backing: 'thp', extra: ['--vcpus', '3'] },
  // A table unlinked (a block back after logging) while another vCPU walks inside it.
  'unlinked-free-no-grace': { scenario: 'log-toggle', backing: 'thp', extra: ['--vcpus', '3', '--guest-mem', '4M'] },
  'relax-skips-tlbi': { scenario: 'migrate', backing: 'anon' },
  // 4 KiB entries cached beside the block that replaces their table.
  'table-break-flushes-ipa': { scenario: 'cancel', backing: 'thp', extra: ['--vcpus', '3', '--write-pct', '10'] },
  'wp-under-read-lock': { scenario: 'log-toggle', backing: 'thp' },
  // Splits while logging race on small THP memory; the leak shows at the next
  // stop-the-world check (fault-storm leaked faster than the checks came, and
  // a run whose table pool ran dry could not stop its workers in time).
  'lost-race-leaks-table': { scenario: 'migrate', backing: 'thp', extra: ['--guest-mem', '4M', '--vcpus', '3'] },
  'unmap-under-read-lock': { scenario: 'notifier-storm', backing: 'anon', extra: ['--guest-mem', '4M'] },
  // ---- manual-protect dirty logging and eager splitting (their flags in `extra`) ----
  // Harvests back to back with writes through the TLB: the missing flush shows at slots_lock's release.
  'clear-no-flush': { scenario: 'migrate', backing: 'anon', extra: ['--manual-protect', 'on'] },
  // Logging that comes and goes on a THP guest: writes map blocks back while
  // logging is off, and each logging-on splits them; the live check when
  // logging-on returns sees writable PTEs nobody marked dirty.
  'split-keeps-write': { scenario: 'log-toggle', backing: 'thp', extra: ['--eager-split-chunk', '2M'] },
  // Pages left writable by the previous migration stay writable after their CLEAR.
  'initially-set-skips-wp': { scenario: 'migrate', backing: 'anon', extra: ['--manual-protect', 'initially-set'] },
  // Cancelled migrations of a THP guest: splits at logging-on fill the cache; a check between two migrations sees it kept.
  'split-cache-leak': { scenario: 'cancel', backing: 'thp', extra: ['--eager-split-chunk', '2M'] },
  // ---- the dirty ring (profile `modern`, --dirty-log ring) ----
  // The collector must read an entry between its flag and its offset: the
  // migrator collects back to back in migrate; threads mode widens the
  // two-store window with chaos delays.
  'ring-publish-before-offset': { scenario: 'migrate', backing: 'anon', extra: ['--dirty-log', 'ring'], threadsExtra: ['--chaos', '0.2'] },
  // These two share ring-full-no-exit's threads configuration (one clean run checks all three).
  'ring-reset-no-wp': { scenario: 'migrate', backing: 'anon', extra: ['--dirty-log', 'ring', '--write-pct', '95'] },
  // The vgic/ITS table save at stop-and-copy goes to the backup bitmap only.
  'backup-bitmap-not-collected': { scenario: 'migrate', backing: 'anon', extra: ['--dirty-log', 'ring', '--write-pct', '95'] },
  // The default ring (256 entries) must fill between two collections: a
  // write-heavy guest; in sim mode PCT, which lets a vCPU run batches while
  // the random strategy gives the migrator most turns (it collects every
  // ~100 pushes there).
  'ring-full-no-exit': { scenario: 'migrate', backing: 'anon', extra: ['--dirty-log', 'ring', '--write-pct', '95'], simExtra: ['--sched', 'pct'] },
};

export interface ZooBudget {
  /** Seeds per bug and mode: seedBase .. seedBase + seeds - 1. */
  seeds: number;
  /** First seed (1 unless --seeds A..B says otherwise). */
  seedBase?: number;
  /**
   * Run flags given to every bug's runs after its own (they win): one
   * configuration for every defect instead of the per-bug targets, e.g.
   * `--scenario mixed --backing mixed --vcpus 3 --guest-mem 64M`.
   */
  runFlags?: string[];
  /** Ignore the per-bug targets: every bug in GENERIC_TARGET (plus runFlags). */
  generic?: boolean;
  simOps: number;
  threadsMs: number;
  vcpus: number;
  guestMem: string;
}

/** One configuration for every defect (`--generic`): everything at once, every backing. */
export const GENERIC_TARGET: ZooTarget = { scenario: 'mixed', backing: 'mixed' };

export const DEFAULT_BUDGET: ZooBudget = { seeds: 5, simOps: 60_000, threadsMs: 10_000, vcpus: 2, guestMem: '8M' };

/** The clean profile a defect is injected into: `fixed`, or `modern` for a defect of the modern design. */
export function zooProfile(bug: string): string {
  return BUGS.find((b) => b.name === bug)?.profile ?? 'fixed';
}

export function zooArgs(bug: string, mode: 'sim' | 'threads', seed: number, b: ZooBudget, profile = zooProfile(bug)): string[] {
  const t = b.generic ? GENERIC_TARGET : ZOO_TARGETS[bug];
  const args = ['--profile', profile, '--scenario', t.scenario, '--backing', t.backing, '--vcpus', String(b.vcpus), '--guest-mem', b.guestMem, '--mode', mode, '--seed', String(seed)];
  if (profile === zooProfile(bug) && bug) args.push('--bug', bug);
  if (mode === 'sim') args.push('--ops', String(b.simOps));
  // The watchdog must fire well inside the budget (a deadlock is a defect
  // too), yet not while a loaded machine is still starting the workers
  // (seconds, at a load average of 40 on 2 cores).
  else args.push('--duration', `${b.threadsMs}ms`, '--check-every', '200ms', '--watchdog', `${Math.max(3000, Math.floor(b.threadsMs * 0.8))}ms`);
  // A dirty-ring defect acts only with the ring: the generic target keeps --dirty-log ring for it.
  const ring = b.generic && (ZOO_TARGETS[bug]?.extra ?? []).includes('--dirty-log') ? ['--dirty-log', 'ring'] : [];
  return lastWins([...args, ...ring, ...(t.extra ?? []), ...(mode === 'threads' ? (t.threadsExtra ?? []) : (t.simExtra ?? [])), ...(b.runFlags ?? [])]);
}

/**
 * Per-bug flags and --run-flags override the budget's (`run` refuses a
 * repeated flag): keep the last value of each flag but --bug. A flag's value
 * is the next word unless that is a flag itself (`run` refuses values that
 * start with --).
 */
export function lastWins(args: string[]): string[] {
  const groups: string[][] = [];
  for (let i = 0; i < args.length; i++) {
    if (i + 1 < args.length && !args[i + 1].startsWith('--')) {
      groups.push([args[i], args[i + 1]]);
      i++;
    } else groups.push([args[i]]);
  }
  return groups.filter(([f], i) => f === '--bug' || !groups.slice(i + 1).some(([g]) => g === f)).flat();
}

export async function runZooOnce(bug: string, mode: 'sim' | 'threads', seed: number, b: ZooBudget): Promise<Report> {
  const o = parseRunArgs(zooArgs(bug, mode, seed, b), { ...parseRunArgs([]), seed });
  o.quiet = true;
  return mode === 'sim' ? runSim(o) : runThreads(o);
}

/** One seed's outcome in a kill-table cell. */
export interface ZooSeedResult {
  seed: number;
  caught: boolean;
  ms: number;
  invariants: string[];
  /** Harness failure (exit 3), if any. */
  error?: string;
}

export interface ZooCell {
  caught: number;
  tried: number;
  invariant: string | null;
  /** Median time to detection over the seeds, ms (an uncaught seed counts as the budget). */
  medianMs: number | null;
  expectedSeen: boolean;
  /** Seeds that failed by an invariant not expected for this defect (not counted as caught). */
  otherFailures?: number;
  /** Per seed, in order. */
  seeds?: ZooSeedResult[];
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
  let otherFailures = 0;
  const perSeed: ZooSeedResult[] = [];
  const first = b.seedBase ?? 1;
  for (let seed = first; seed < first + b.seeds; seed++) {
    const r = await runZooOnce(info.name, mode, seed, b);
    const invs = r.violations.map((v) => v.invariant);
    // Caught means reported by an invariant that names this defect: a
    // report of another kind (a watchdog firing on a loaded machine, say)
    // is counted apart, not as a kill.
    const failed = r.result === 'fail' && r.exitCode === 1;
    const hit = failed && invs.some((i) => i === info.expected || (info.also ?? []).includes(i as never));
    perSeed.push({ seed, caught: hit, ms: Math.round(r.elapsedMs), invariants: [...new Set(invs)], ...(r.error ? { error: r.error } : {}) });
    if (hit) {
      caught++;
      times.push(r.elapsedMs);
      invariant ??= invs[0];
      expectedSeen = true;
    } else {
      if (failed) otherFailures++;
      times.push(mode === 'sim' ? r.elapsedMs : b.threadsMs);
    }
    log?.(`  ${info.name} ${mode} seed ${seed}: ${r.result}${invs.length ? ` [${[...new Set(invs)].join(',')}]` : ''} ${Math.round(r.elapsedMs)} ms${r.error ? ` ERROR ${r.error}` : ''}`);
  }
  return { caught, tried: b.seeds, invariant, medianMs: caught > b.seeds / 2 ? median(times) : null, expectedSeen, otherFailures, seeds: perSeed };
}

export function formatKillTable(rows: ZooRow[], meta: string): string {
  const cell = (c: ZooCell | null): string =>
    c === null
      ? '-'
      : `${c.caught}/${c.tried} ${c.medianMs === null ? 'median >budget' : `median ${(c.medianMs / 1000).toFixed(2)}s`}${c.otherFailures ? ` (+${c.otherFailures} other)` : ''}`;
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

export const ZOO_USAGE = `s2stress zoo [--mode sim|threads|both] [--seeds N|A..B] [--bug NAME]... [--sim-ops N] [--threads-duration TIME]
             [--run-flags 'FLAGS'] [--generic] [--clean] [--json FILE] [--html FILE] [--verbose]
s2stress zoo --from FILE [--compare BEFORE.json] [--html FILE]
  run every --bug (or the ones named) over seeds 1..N (or A..B) in each mode and print the kill table;
  --run-flags adds run flags to every run, --generic runs every bug in one untuned configuration;
  --from prints a saved kill table (with --compare, before and after columns) without running;
  --clean runs each bug's configuration without the bug (its clean profile) over the same seeds
  instead, and exits 1 if any clean run failed;
  exit 0 when every bug was caught, 1 when one was not, 2 on bad usage`;

/** What `--json` writes. */
export interface ZooFile {
  meta: string;
  budget: ZooBudget;
  load?: { start: number[]; end: number[] };
  wallMs?: number;
  rows: ZooRow[];
}

function accepted(bug: string, invariant: string): boolean {
  const info = BUGS.find((x) => x.name === bug);
  return info !== undefined && (invariant === info.expected || (info.also ?? []).includes(invariant as never));
}

/**
 * A cell counted again from its seeds by today's rule (caught = reported by
 * an invariant that names the defect): files written before that rule
 * counted any failure.
 */
export function recount(bug: string, c: ZooCell | null, mode: 'sim' | 'threads', b: ZooBudget): ZooCell | null {
  if (c === null || !c.seeds) return c;
  const times: number[] = [];
  let caught = 0;
  let other = 0;
  for (const s of c.seeds) {
    const hit = s.invariants.some((i) => accepted(bug, i));
    if (hit) caught++;
    else if (s.invariants.length > 0) other++;
    times.push(hit || mode === 'sim' ? s.ms : b.threadsMs);
  }
  return { ...c, caught, otherFailures: other, medianMs: caught > c.tried / 2 ? median(times) : null };
}

/** One clean configuration's runs: each defect's zoo configuration without the defect. */
export interface ZooCleanRow {
  bug: string;
  profile: string;
  /** Per mode: runs that passed, runs, and each failure's seed and first invariant. */
  sim: { passed: number; runs: number; failures: { seed: number; invariant: string; message: string }[] } | null;
  threads: { passed: number; runs: number; failures: { seed: number; invariant: string; message: string }[] } | null;
}

/**
 * `zoo --clean`: every defect's configuration run without the defect (the
 * clean profile it is injected into) over the same seeds, in each mode: the
 * false-alarm side of the kill table. Exit 1 if any clean run failed.
 */
async function cleanTable(only: string[], modes: ('sim' | 'threads')[], b: ZooBudget, json: string | null, io: { out(s: string): void; err(s: string): void }): Promise<number> {
  const rows: ZooCleanRow[] = [];
  const seen = new Set<string>();
  const t0 = Date.now();
  const loadBefore = loadavg();
  for (const info of BUGS) {
    if (only.length && !only.includes(info.name)) continue;
    const row: ZooCleanRow = { bug: info.name, profile: zooProfile(info.name), sim: null, threads: null };
    for (const mode of modes) {
      const cell = { passed: 0, runs: 0, failures: [] as { seed: number; invariant: string; message: string }[] };
      for (let seed = b.seedBase ?? 1; seed < (b.seedBase ?? 1) + b.seeds; seed++) {
        const args = zooArgs(info.name, mode, seed, b).filter((x, i, a) => x !== '--bug' && a[i - 1] !== '--bug');
        const key = args.join(' ');
        if (seen.has(key)) continue; // another defect's configuration, already run
        seen.add(key);
        const o = parseRunArgs(args);
        o.quiet = true;
        const r = mode === 'sim' ? await runSim(o) : await runThreads(o);
        cell.runs++;
        if (r.result === 'pass') cell.passed++;
        else cell.failures.push({ seed, invariant: r.violations[0]?.invariant ?? 'harness', message: (r.violations[0]?.message ?? r.error ?? '').split('\n')[0] });
      }
      if (mode === 'sim') row.sim = cell;
      else row.threads = cell;
    }
    rows.push(row);
    io.err(`${info.name} (clean ${row.profile}): sim ${row.sim ? `${row.sim.passed}/${row.sim.runs}` : '-'}, threads ${row.threads ? `${row.threads.passed}/${row.threads.runs}` : '-'}`);
  }
  const c = (x: ZooCleanRow['sim']): string => (x === null ? '-' : x.runs === 0 ? 'same as above' : `${x.passed}/${x.runs} clean${x.failures.length ? `; ${x.failures.map((f) => `seed ${f.seed}: ${f.invariant}`).join(', ')}` : ''}`);
  io.out(`clean runs of each defect's configuration, seeds ${b.seedBase ?? 1}..${(b.seedBase ?? 1) + b.seeds - 1}, sim ${b.simOps} accesses, threads ${b.threadsMs / 1000}s${b.runFlags ? `, every run with ${b.runFlags.join(' ')}` : ''}`);
  io.out('');
  io.out('| configuration of | profile | sim | threads |');
  io.out('|---|---|---|---|');
  for (const r of rows) io.out(`| ${r.bug} | ${r.profile} | ${c(r.sim)} | ${c(r.threads)} |`);
  const load = { start: loadBefore.map((x) => +x.toFixed(2)), end: loadavg().map((x) => +x.toFixed(2)) };
  io.err(`zoo --clean: ${((Date.now() - t0) / 1000).toFixed(0)} s; load average at start ${load.start.join(' ')}, at end ${load.end.join(' ')}`);
  if (json) writeFileSync(json, JSON.stringify({ kind: 'clean', budget: b, load, wallMs: Date.now() - t0, rows }, null, 2));
  return rows.every((r) => (r.sim?.failures.length ?? 0) + (r.threads?.failures.length ?? 0) === 0) ? 0 : 1;
}

/** Kill table with before/after columns per mode (`--compare BEFORE.json`). */
export function formatCompareTable(before: ZooFile, after: ZooFile): string {
  const cell = (c: ZooCell | null): string =>
    c === null ? '-' : `${c.caught}/${c.tried}, ${c.medianMs === null ? '>budget' : `${(c.medianMs / 1000).toFixed(2)} s`}${c.otherFailures ? ` (+${c.otherFailures} other)` : ''}`;
  const lines = [
    `before: ${before.meta}${before.load ? `; load average ${before.load.start[0]} -> ${before.load.end[0]}` : ''}`,
    `after: ${after.meta}${after.load ? `; load average ${after.load.start[0]} -> ${after.load.end[0]}` : ''}`,
    '',
    '| bug | invariant (expected) | sim before | sim after | threads before | threads after |',
    '|---|---|---|---|---|---|',
  ];
  for (const r of after.rows) {
    const old = before.rows.find((x) => x.bug === r.bug);
    const inv = r.sim?.invariant ?? r.threads?.invariant ?? '-';
    lines.push(
      `| ${r.bug} | ${inv} (${r.expected}) | ${cell(recount(r.bug, old?.sim ?? null, 'sim', before.budget))} | ${cell(recount(r.bug, r.sim, 'sim', after.budget))} | ${cell(recount(r.bug, old?.threads ?? null, 'threads', before.budget))} | ${cell(recount(r.bug, r.threads, 'threads', after.budget))} |`,
    );
  }
  return lines.join('\n');
}

function readZooFile(flag: string, file: string): ZooFile {
  try {
    const f = JSON.parse(readFileSync(file, 'utf8')) as ZooFile;
    if (!Array.isArray(f.rows) || typeof f.meta !== 'string') throw new Error('no rows');
    return f;
  } catch (e) {
    throw new ConfigError(flag, `${flag} '${file}' is not a zoo JSON file (s2stress zoo --json): ${(e as Error).message}`);
  }
}

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
  let from: ZooFile | null = null;
  let compare: ZooFile | null = null;
  let html: string | null = null;
  let clean = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    // A value may not look like a flag, except --run-flags' own (a list of flags).
    const v = (flags = false): string => {
      const x = args[++i];
      if (x === undefined || (!flags && x.startsWith('--'))) throw new ConfigError(a, `${a} needs a value`);
      return x;
    };
    switch (a) {
      case '--seeds': {
        // N (seeds 1..N) or A..B (a range, e.g. seeds no test uses)
        const x = v();
        const range = /^(\d+)\.\.(\d+)$/.exec(x.trim());
        if (range) {
          const lo = parseIntFlag(a, range[1], 0, 0xffffffff);
          const hi = parseIntFlag(a, range[2], 0, 0xffffffff);
          if (hi < lo || hi - lo >= 1000) throw new ConfigError(a, `--seeds A..B needs A <= B and at most 1000 seeds, got '${x}'`);
          b.seedBase = lo;
          b.seeds = hi - lo + 1;
        } else {
          b.seeds = parseIntFlag(a, x, 1, 1000);
          b.seedBase = 1;
        }
        break;
      }
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
      case '--run-flags': {
        const flags = v(true).split(/\s+/).filter((x) => x !== '');
        for (const bad of ['--bug', '--mode', '--seed', '--ops', '--duration', '--profile']) {
          if (flags.includes(bad)) throw new ConfigError(a, `--run-flags may not set ${bad} (the zoo sets it per run)`);
        }
        parseRunArgs(flags); // a bad flag is reported here, naming it
        b.runFlags = flags;
        break;
      }
      case '--generic':
        b.generic = true;
        break;
      case '--clean':
        clean = true;
        break;
      case '--json':
        json = v();
        break;
      case '--verbose':
        verbose = true;
        break;
      case '--from':
        from = readZooFile(a, v());
        break;
      case '--html':
        html = v();
        checkWritable('--html', html);
        break;
      case '--compare':
        compare = readZooFile(a, v());
        break;
      default:
        throw new ConfigError(a, `unknown flag '${a}' for zoo; accepted:\n${ZOO_USAGE}`);
    }
  }
  if (from) {
    // Print a saved measurement (with --compare: against an earlier one); no run.
    io.out(compare ? formatCompareTable(compare, from) : formatKillTable(from.rows, from.meta));
    if (html) writeTextAtomic(html, htmlZoo(from.rows, from.meta));
    return 0;
  }
  if (clean) return cleanTable(only, modes, b, json, io);
  const rows: ZooRow[] = [];
  const loadBefore = loadavg();
  const t0 = Date.now();
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
  const meta = `s2stress zoo, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown cpu'}), node ${process.version}; seeds ${b.seedBase ?? 1}..${(b.seedBase ?? 1) + b.seeds - 1}; budget per seed: sim ${b.simOps} accesses, threads ${b.threadsMs / 1000}s; ${b.vcpus} vCPUs, ${b.guestMem} guest${b.generic ? `; every bug in the same configuration (scenario ${GENERIC_TARGET.scenario}, backing ${GENERIC_TARGET.backing})` : ''}${b.runFlags ? `; every run with ${b.runFlags.join(' ')}` : ''}`;
  io.out(formatKillTable(rows, meta));
  if (compare) io.out('\n' + formatCompareTable(compare, { meta, budget: b, rows }));
  // The machine may be shared: the load average says how busy it was.
  const load = { start: loadBefore.map((x) => +x.toFixed(2)), end: loadavg().map((x) => +x.toFixed(2)) };
  io.err(`zoo: ${((Date.now() - t0) / 1000).toFixed(0)} s; load average at start ${load.start.join(' ')}, at end ${load.end.join(' ')}`);
  if (json) writeFileSync(json, JSON.stringify({ meta, budget: b, load, wallMs: Date.now() - t0, rows }, null, 2));
  if (html) writeTextAtomic(html, htmlZoo(rows, meta));
  return rows.every((r) => (r.sim?.caught ?? 0) + (r.threads?.caught ?? 0) > 0) ? 0 : 1;
}
