/**
 * `s2stress shrink`: from a failing run's report, the smallest configuration
 * and schedule found within a time budget that still fails with the same
 * signature (stress/campaign.ts signatureOf: profile, invariant, role,
 * normalized message), written as a normal report that replays exactly.
 *
 * The ideas are QuickCheck's and fast-check's:
 * - integrated shrinking of a counterexample: a candidate is kept only if a
 *   run of it still fails the same way (the "same failure" check is the
 *   signature, as Hypothesis compares its failures' origins, so that a
 *   shrink never slips from one bug to another);
 * - shrink towards a target, trying the target first (fast-check's
 *   shrinkInteger yields the target, then values halving the distance): the
 *   minimum of each dimension is tried before a bisection;
 * - one dimension at a time, in a fixed order of passes (vCPUs, guest,
 *   --ops, host-op kinds, then the schedule: a shorter prefix with
 *   --stop-step, fewer preemptions with --max-preemptions), each pass
 *   repeated until no candidate of it shrinks further, and the passes
 *   repeated until a whole round shrinks nothing (QuickCheck's "shrink the
 *   shrunk value again", the loop of fast-check's shrinking);
 * - dropping elements of a list one at a time (QuickCheck's shrinkList by
 *   removal) for the host operation kinds;
 * - preemption bounding (CHESS, Musuvathi and Qadeer): a schedule with fewer
 *   preemptions is the simpler counterexample.
 * - a budget: shrinking stops when it is spent (fast-check's
 *   interruptAfterTimeLimit), and the smallest failure reached is the result.
 *
 * Sim mode replays exactly, so every candidate runs once and the schedule
 * passes apply. A threads-mode report gets the configuration passes only,
 * each candidate run in threads mode up to THREADS_TRIES times and kept at
 * its first failure with the signature (an interleaving is luck: a
 * candidate that does not fail may still be able to).
 */
import { readFileSync } from 'node:fs';
import { ConfigError, MIN_VCPUS, formatBytes } from '../src/config.js';
import { SCHEDULE_VERSION } from '../src/sim/sched.js';
import { optionsFromReportConfig, runArgsOf, type RunOptions } from './options.js';
import { runThreads } from './run.js';
import { runSim } from './simrun.js';
import { findScenario, scenarioHostOpKinds } from './scenarios.js';
import { VERSION, type Report } from './report.js';
import { signatureOf } from './campaign.js';
import { checkJsonWritable, writeJsonAtomic } from './files.js';
import { formatDuration, parseDuration } from './units.js';

type Out = { out: (s: string) => void; err: (s: string) => void };

export const SHRINK_HELP = `s2stress shrink REPORT.json [--budget TIME] [--out FILE] [--json FILE] [--quiet]
    the smallest run found within TIME (default 60s) that fails with the report's signature:
    fewer vCPUs, a smaller guest, fewer --ops, fewer --host-ops kinds, then (sim mode) a shorter
    --stop-step prefix and fewer preemptions (--max-preemptions); --out writes its report (s2stress
    replay replays it), --json a summary of the passes. Exit 0 shrunk or already minimal, 1 the
    report's failure does not recur, 2 bad usage, 3 harness failure`;

/** Default --budget. */
export const DEFAULT_BUDGET_MS = 60_000;
/** Threads mode: runs of a candidate before it counts as not failing. */
export const THREADS_TRIES = 3;
/** Sim mode: a run ends only at its end-of-run checks, every this many steps (SLOW_PATH_EVERY of src/sim/sched.ts). */
const STOP_GRAIN = 1024;
/** The smallest guest: one stage-2 block. */
const MIN_GUEST = 2 * 1024 * 1024;

export const PASSES = ['vcpus', 'guest', 'ops', 'host-ops', 'stop-step', 'preemptions'] as const;
export type PassName = (typeof PASSES)[number];
const SIM_ONLY: ReadonlySet<PassName> = new Set(['stop-step', 'preemptions']);

/** What a run measures, side by side in the output. */
export interface ShrinkDims {
  vcpus: number;
  guestMem: number;
  ops: number | null;
  durationMs: number | null;
  /** The host operation kinds drawn (--host-ops, else the scenario's). */
  hostOps: string[];
  /** Sim mode: the schedule (null in threads mode). */
  steps: number | null;
  switches: number | null;
  preemptions: number | null;
  /** --stop-step (the step the run stopped at), null: ran to its end. */
  stopStep: number | null;
  /** --max-preemptions, null: unbounded. */
  maxPreemptions: number | null;
}

export type AttemptResult = 'fails' | 'passes' | 'other-failure' | 'invalid' | 'budget';

export interface ShrinkAttempt {
  /** The candidate, as the flag it changes (`--vcpus 1`). */
  candidate: string;
  result: AttemptResult;
  /** Another signature's failure, or why a candidate is invalid. */
  detail?: string;
  runs: number;
  ms: number;
}

export interface ShrinkPassResult {
  pass: PassName;
  round: number;
  attempts: ShrinkAttempt[];
  /** The dimension before and after the pass (as flags print it). */
  from: string;
  to: string;
  /** Why the pass did not run (not this mode, nothing to shrink). */
  skipped?: string;
}

export interface ShrinkResult {
  tool: 's2stress';
  kind: 'shrink';
  version: string;
  mode: 'sim' | 'threads';
  signature: string;
  /** shrunk: a smaller reproducer; minimal: nothing smaller fails alike; not-reproduced: the original does not fail with its signature any more. */
  status: 'shrunk' | 'minimal' | 'not-reproduced';
  /** What the original's rerun gave, when not-reproduced. */
  notReproduced?: string;
  original: ShrinkDims;
  shrunk: ShrinkDims;
  passes: ShrinkPassResult[];
  /** Runs made (the original's rerun included). */
  runs: number;
  elapsedMs: number;
  budgetMs: number;
  /** The budget (or maxRuns) ran out before a round shrank nothing. */
  budgetReached: boolean;
  /** The shrunk run's rerun line. */
  replay: string;
  /** How candidates were run (said in the output). */
  method: string;
}

export interface ShrinkControl {
  budgetMs?: number;
  /** At most this many runs (the original's rerun included): a deterministic budget for tests. */
  maxRuns?: number;
  /** Only these passes (default all of PASSES that apply to the mode). */
  passes?: readonly PassName[];
  /** At most this many rounds of passes (default until a round shrinks nothing). */
  rounds?: number;
  onProgress?: (line: string) => void;
  signal?: AbortSignal;
  /**
   * Testing aid: the test a candidate must pass to be kept (default: fails
   * with the original's signature). A broken shrinker is one that accepts
   * another signature; the tests show theirs fail on it.
   */
  accept?: (candidate: Report, signature: string) => boolean;
}

/** The shrink's summary, and the shrunk run's report (the original's rerun when nothing smaller fails). */
export interface ShrinkOutcome {
  result: ShrinkResult;
  report: Report | null;
}

function dimsOf(r: Report): ShrinkDims {
  const c = r.config;
  const scenario = findScenario(c.scenario);
  const s = r.schedule;
  return {
    vcpus: c.vcpus,
    guestMem: c.guestMem,
    ops: c.ops,
    durationMs: c.durationMs,
    hostOps: c.hostOps ?? (scenario ? scenarioHostOpKinds(scenario) : []),
    steps: s?.steps ?? null,
    switches: s?.switches ?? null,
    preemptions: s?.preemptions ?? null,
    stopStep: s?.stoppedAtStep ?? c.stopStep ?? null,
    maxPreemptions: c.maxPreemptions ?? null,
  };
}

/** A report read and checked as replay checks it; the options of its run. */
export function readFailingReport(file: string): { report: Report; options: RunOptions } {
  let prior: Report;
  try {
    prior = JSON.parse(readFileSync(file, 'utf8')) as Report;
  } catch (e) {
    throw new ConfigError('shrink', `cannot read report '${file}': ${(e as Error).message}`);
  }
  return { report: prior, options: failingReportOptions(prior, `'${file}'`) };
}

/** The options of a failing report's run; a ConfigError if it is no report, or of a run that passed. */
export function failingReportOptions(prior: Report, name = 'the report'): RunOptions {
  const file = name;
  if (!prior || typeof prior !== 'object' || Array.isArray(prior)) throw new ConfigError('shrink', `${file} is not an s2stress report (not a JSON object)`);
  if (prior.tool !== undefined && prior.tool !== 's2stress') throw new ConfigError('tool', `${file} is not an s2stress report (tool '${String(prior.tool)}')`);
  if (!('config' in prior)) throw new ConfigError('config', `${file} is not an s2stress report: it has no config`);
  if (!Array.isArray(prior.violations)) throw new ConfigError('violations', `${file} is not an s2stress report: its violations field is not a list`);
  if (prior.violations.length === 0 && !prior.error) throw new ConfigError('shrink', `${file} is the report of a run that passed: there is no failure to shrink`);
  const stopAt = prior.schedule?.stoppedAtStep;
  return optionsFromReportConfig(prior.config, [], typeof stopAt === 'number' ? { stopStep: stopAt } : {});
}

/**
 * Shrink the failure of `original` (a report; its configuration in
 * `options`). Resolves to the summary and the shrunk run's report.
 */
export async function shrinkReport(original: Report, options: RunOptions, control: ShrinkControl = {}): Promise<ShrinkOutcome> {
  const t0 = performance.now();
  const budgetMs = control.budgetMs ?? DEFAULT_BUDGET_MS;
  const deadline = t0 + budgetMs;
  const say = control.onProgress ?? ((): void => {});
  const target = signatureOf(original).signature;
  const mode = options.mode;
  const tries = mode === 'sim' ? 1 : THREADS_TRIES;
  const method =
    mode === 'sim'
      ? 'sim mode: each candidate run once (a seed replays exactly); configuration and schedule shrunk'
      : `threads mode: configuration only (no schedule to shrink); each candidate run up to ${THREADS_TRIES} times in threads mode and kept at its first failure with the signature; the shrunk run may not fail every time`;
  const accept = control.accept ?? ((r: Report, sig: string): boolean => r.result === 'fail' && signatureOf(r).signature === sig);
  let runs = 0;
  let budgetReached = false;
  const outOfBudget = (): boolean => {
    if (performance.now() >= deadline || (control.maxRuns !== undefined && runs >= control.maxRuns) || control.signal?.aborted) budgetReached = true;
    return budgetReached;
  };

  /** One run, stopped at the deadline; null when the budget stopped it. */
  const runOnce = async (o: RunOptions, bounded: boolean): Promise<Report | null> => {
    runs++;
    const ac = new AbortController();
    const onOuter = (): void => ac.abort('SIGINT');
    control.signal?.addEventListener('abort', onOuter);
    const timer = bounded ? setTimeout(() => ac.abort('SIGINT'), Math.max(0, deadline - performance.now())) : undefined;
    try {
      const r = await (o.mode === 'sim' ? runSim : runThreads)({ ...o, quiet: true, json: null, html: null }, { signal: ac.signal });
      if (ac.signal.aborted || r.interrupted) return null;
      return r;
    } finally {
      clearTimeout(timer);
      control.signal?.removeEventListener('abort', onOuter);
    }
  };

  // The original, rerun: it must still fail with its signature (in threads
  // mode, within THREADS_TRIES runs). Not cut by the budget.
  let current: Report | null = null;
  let last: Report | null = null;
  for (let i = 0; i < tries && !current; i++) {
    last = await runOnce(options, false);
    if (last && accept(last, target)) current = last;
  }
  const originalDims = dimsOf(last ?? original);
  const finish = (status: ShrinkResult['status'], passes: ShrinkPassResult[], extra: Partial<ShrinkResult> = {}): ShrinkOutcome => ({
    result: {
      tool: 's2stress',
      kind: 'shrink',
      version: VERSION,
      mode,
      signature: target,
      status,
      original: originalDims,
      shrunk: current ? dimsOf(current) : originalDims,
      passes,
      runs,
      elapsedMs: Math.round(performance.now() - t0),
      budgetMs,
      budgetReached,
      replay: current ? current.replay : original.replay,
      method,
      ...extra,
    },
    report: current,
  });
  if (!current) {
    const got = !last ? 'the run was interrupted' : last.result === 'pass' ? 'the run passed' : `it failed otherwise: ${signatureOf(last).signature}`;
    return finish('not-reproduced', [], { notReproduced: `${mode === 'threads' ? `${tries} runs: ` : ''}${got}` });
  }
  say(`shrink: the original fails with its signature (${method})`);

  // Every candidate run so far, by its command line: a bisection or a later
  // round never runs the same configuration twice (the runs are
  // deterministic in sim mode; in threads mode a rerun would be another
  // draw, and the budget is better spent elsewhere).
  const seen = new Map<string, { result: AttemptResult; report: Report | null; detail?: string }>();

  /** Run a candidate (changes to the current configuration); keep it if it fails alike. */
  const tryCandidate = async (label: string, changes: Partial<RunOptions>, attempts: ShrinkAttempt[]): Promise<boolean> => {
    const tc = performance.now();
    let o: RunOptions;
    try {
      o = optionsFromReportConfig({ ...current!.config, ...changes }, [], {}, 'api');
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      attempts.push({ candidate: label, result: 'invalid', detail: e.message, runs: 0, ms: 0 });
      return false;
    }
    const key = runArgsOf(o, false).join(' ');
    let hit = seen.get(key);
    let made = 0;
    if (!hit) {
      let rep: Report | null = null;
      let result: AttemptResult = 'passes';
      let detail: string | undefined;
      for (let i = 0; i < tries; i++) {
        if (outOfBudget()) {
          result = 'budget';
          break;
        }
        made++;
        rep = await runOnce(o, true);
        if (!rep) {
          result = 'budget';
          budgetReached = true;
          break;
        }
        if (accept(rep, target)) {
          result = 'fails';
          if (detail) detail = `an earlier try failed otherwise: ${detail}`;
          break;
        }
        if (rep.result === 'fail') {
          result = 'other-failure';
          detail = signatureOf(rep).signature;
        }
      }
      hit = { result, report: result === 'fails' ? rep : null, detail };
      if (result !== 'budget') seen.set(key, hit);
    }
    const a: ShrinkAttempt = { candidate: label, result: hit.result, runs: made, ms: Math.round(performance.now() - tc) };
    if (hit.detail) a.detail = hit.detail;
    attempts.push(a);
    say(`shrink: ${label}: ${hit.result === 'fails' ? 'fails alike, kept' : hit.result}${hit.detail ? ` (${hit.detail})` : ''}${made ? ` (${(a.ms / 1000).toFixed(1)} s)` : ''}`);
    if (hit.result === 'fails') {
      current = hit.report;
      return true;
    }
    return false;
  };

  /**
   * The smallest failing value in [lo, cur) of one dimension, as fast-check
   * shrinks an integer: the target `lo` first, then a bisection between the
   * largest value known to pass and the smallest known to fail. Keeps every
   * failing candidate on the way (each is smaller than the one before).
   */
  const bisect = async (lo: number, cur: number, label: (v: number) => string, changes: (v: number) => Partial<RunOptions>, attempts: ShrinkAttempt[]): Promise<void> => {
    if (lo >= cur) return;
    if (await tryCandidate(label(lo), changes(lo), attempts)) return;
    let pass = lo;
    let fail = cur;
    while (fail - pass > 1 && !outOfBudget()) {
      const mid = Math.floor((pass + fail) / 2);
      if (await tryCandidate(label(mid), changes(mid), attempts)) fail = mid;
      else if (budgetReached) return;
      else pass = mid;
    }
  };

  /**
   * The shortest failing prefix (--stop-step). A prefix of a sim run is the
   * same run up to its end (the stop is taken at the end-of-run checks, every
   * STOP_GRAIN steps): whether a prefix fails is monotone in its length, so
   * the bisection finds the shortest. The longest shorter prefix first: if
   * even that passes, there is none (one run). False: no shorter prefix to try.
   */
  const shortestPrefix = async (attempts: ShrinkAttempt[]): Promise<boolean> => {
    const limit = current!.schedule?.stoppedAtStep ?? current!.schedule?.steps ?? 0;
    const top = Math.ceil(limit / STOP_GRAIN) - 1;
    if (top < 1) return false;
    const at = (k: number): Partial<RunOptions> => ({ stopStep: k * STOP_GRAIN });
    if (await tryCandidate(`--stop-step ${top * STOP_GRAIN}`, at(top), attempts)) {
      await bisect(1, top, (k) => `--stop-step ${k * STOP_GRAIN}`, at, attempts);
    }
    return true;
  };

  const wanted = new Set<PassName>((control.passes ?? PASSES).filter((p) => mode === 'sim' || !SIM_ONLY.has(p)));
  const passes: ShrinkPassResult[] = [];
  const maxRounds = control.rounds ?? Infinity;
  for (let round = 1; round <= maxRounds && !outOfBudget(); round++) {
    let shrankThisRound = false;
    for (const pass of PASSES) {
      if (outOfBudget()) break;
      const cfg = (): RunOptions => current!.config;
      const before: Report | null = current;
      const res: ShrinkPassResult = { pass, round, attempts: [], from: '', to: '' };
      const show = (): string => describeDim(pass, dimsOf(current!));
      res.from = show();
      if (!wanted.has(pass)) {
        if (round === 1) res.skipped = SIM_ONLY.has(pass) && mode !== 'sim' ? 'threads mode: no schedule to shrink' : 'not asked for';
      } else if (pass === 'vcpus') {
        await bisect(MIN_VCPUS, cfg().vcpus, (v) => `--vcpus ${v}`, (v) => ({ vcpus: v }), res.attempts);
      } else if (pass === 'guest') {
        // The smallest guest first, then halving while it fails.
        const g = cfg().guestMem;
        if (g > MIN_GUEST && !(await tryCandidate(`--guest-mem ${formatBytes(MIN_GUEST)}`, { guestMem: MIN_GUEST }, res.attempts))) {
          for (let half = Math.floor(cfg().guestMem / 2 / MIN_GUEST) * MIN_GUEST; half > MIN_GUEST && half < cfg().guestMem && !outOfBudget(); half = Math.floor(half / 2 / MIN_GUEST) * MIN_GUEST) {
            if (!(await tryCandidate(`--guest-mem ${formatBytes(half)}`, { guestMem: half }, res.attempts))) break;
          }
        }
      } else if (pass === 'ops') {
        const ops = cfg().ops;
        if (ops === null) res.skipped = `the run is timed (--duration ${formatDuration(cfg().durationMs ?? 0)}), not counted in --ops`;
        else await bisect(1, ops, (v) => `--ops ${v}`, (v) => ({ ops: v }), res.attempts);
      } else if (pass === 'host-ops') {
        // QuickCheck's shrinkList by removal: drop one kind at a time, again
        // from the start after every kind dropped, until none can go.
        let dropped = true;
        while (dropped && !outOfBudget()) {
          dropped = false;
          const kinds = dimsOf(current!).hostOps;
          for (const k of kinds) {
            const rest = kinds.filter((x) => x !== k);
            if (await tryCandidate(`--host-ops ${rest.length ? rest.join(',') : 'none'}`, { hostOps: rest }, res.attempts)) {
              dropped = true;
              break;
            }
            if (budgetReached) break;
          }
        }
      } else if (pass === 'stop-step') {
        if (!(await shortestPrefix(res.attempts))) res.skipped = 'the run is within one end-of-run check';
      } else if (pass === 'preemptions') {
        // Preemption bounding: the fewest preemptive switches that still
        // fail. A bound changes the whole schedule, so each candidate runs to
        // its end (no --stop-step), and the shortest prefix of the kept one
        // is looked for again at once.
        const p = current!.config.maxPreemptions ?? current!.schedule?.preemptions ?? 0;
        const had: Report | null = current;
        await bisect(0, p, (k) => `--max-preemptions ${k}`, (k) => ({ maxPreemptions: k, stopStep: null }), res.attempts);
        if (current !== had && !outOfBudget()) await shortestPrefix(res.attempts);
      }
      res.to = show();
      if (current !== before) shrankThisRound = true;
      if (round === 1 || res.attempts.length) passes.push(res);
    }
    if (!shrankThisRound) break;
  }
  const s = dimsOf(current);
  const smaller = passes.some((p) => p.attempts.some((a) => a.result === 'fails'));
  return finish(smaller && smallerThan(s, originalDims) ? 'shrunk' : 'minimal', passes);
}

/** Is `a` smaller than `b` on some dimension the passes shrink? */
function smallerThan(a: ShrinkDims, b: ShrinkDims): boolean {
  return (
    a.vcpus < b.vcpus ||
    a.guestMem < b.guestMem ||
    (a.ops ?? Infinity) < (b.ops ?? Infinity) ||
    a.hostOps.length < b.hostOps.length ||
    (a.stopStep ?? Infinity) < (b.stopStep ?? Infinity) ||
    (a.maxPreemptions ?? Infinity) < (b.maxPreemptions ?? Infinity) ||
    (a.preemptions ?? Infinity) < (b.preemptions ?? Infinity)
  );
}

function describeDim(pass: PassName, d: ShrinkDims): string {
  switch (pass) {
    case 'vcpus':
      return String(d.vcpus);
    case 'guest':
      return formatBytes(d.guestMem);
    case 'ops':
      return d.ops === null ? `${formatDuration(d.durationMs ?? 0)}` : String(d.ops);
    case 'host-ops':
      return d.hostOps.length ? d.hostOps.join(',') : 'none';
    case 'stop-step':
      return d.stopStep === null ? 'to the end' : String(d.stopStep);
    case 'preemptions':
      return d.maxPreemptions === null ? `unbounded (${d.preemptions ?? '?'})` : String(d.maxPreemptions);
  }
}

/** "8x fewer", "same", "1.8x more": how `to` compares with `from`. */
export function ratio(from: number | null, to: number | null, fewer = 'fewer', more = 'more'): string {
  if (from === null || to === null) return '';
  if (from === to) return 'same';
  if (to === 0) return `${from} -> 0`;
  const r = from > to ? from / to : to / from;
  const text = r >= 10 ? String(Math.round(r)) : r.toFixed(1).replace(/\.0$/, '');
  return `${text}x ${from > to ? fewer : more}`;
}

/** The side-by-side table, the passes and the replay command. */
export function formatShrink(r: ShrinkResult, outFile: string | null): string[] {
  const lines: string[] = [];
  lines.push(`s2stress shrink: ${r.signature}`);
  lines.push(`  ${r.method}`);
  if (r.status === 'not-reproduced') {
    lines.push(`  the original run does not fail with this signature any more (${r.notReproduced}): it cannot be shrunk`);
    lines.push(`  rerun: ${r.replay}`);
    return lines;
  }
  const o = r.original;
  const s = r.shrunk;
  const rows: [string, string, string, string][] = [
    ['vCPUs', String(o.vcpus), String(s.vcpus), ratio(o.vcpus, s.vcpus)],
    ['guest', formatBytes(o.guestMem), formatBytes(s.guestMem), ratio(o.guestMem, s.guestMem, 'smaller', 'larger')],
    o.ops !== null ? ['ops', String(o.ops), String(s.ops), ratio(o.ops, s.ops)] : ['duration', formatDuration(o.durationMs ?? 0), formatDuration(s.durationMs ?? 0), ratio(o.durationMs, s.durationMs, 'shorter', 'longer')],
    ['host ops', o.hostOps.join(',') || 'none', s.hostOps.join(',') || 'none', o.hostOps.length === s.hostOps.length ? 'same' : `${o.hostOps.length - s.hostOps.length} kind(s) fewer`],
  ];
  if (r.mode === 'sim') {
    rows.push(['steps', String(o.steps), String(s.steps), ratio(o.steps, s.steps)]);
    rows.push(['switches', String(o.switches), String(s.switches), ratio(o.switches, s.switches)]);
    rows.push(['preemptions', String(o.preemptions ?? '?'), `${s.preemptions ?? '?'}${s.maxPreemptions !== null ? ` (bound ${s.maxPreemptions})` : ''}`, ratio(o.preemptions, s.preemptions)]);
    rows.push(['stop step', o.stopStep === null ? 'end' : String(o.stopStep), s.stopStep === null ? 'end' : String(s.stopStep), '']);
  }
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max('original'.length, ...rows.map((x) => x[1].length));
  const w2 = Math.max('shrunk'.length, ...rows.map((x) => x[2].length));
  lines.push(`  ${''.padEnd(w0)}  ${'original'.padEnd(w1)}  shrunk`);
  for (const [a, b, c, d] of rows) lines.push(`  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c.padEnd(w2)}  ${d}`.trimEnd());
  const perPass = r.passes
    .filter((p) => !p.skipped || p.round === 1)
    .map((p) => {
      if (p.skipped) return `${p.pass} skipped (${p.skipped})`;
      const ran = p.attempts.reduce((n, a) => n + a.runs, 0);
      const known = p.attempts.filter((a) => a.runs === 0 && a.result !== 'invalid' && a.result !== 'budget').length;
      return `${p.pass}${p.round > 1 ? ` (round ${p.round})` : ''} ${p.from} -> ${p.to} in ${ran} run(s)${known ? ` and ${known} known` : ''}`;
    });
  lines.push(`  passes: ${perPass.join('; ')}`);
  lines.push(
    `  ${r.status === 'shrunk' ? 'shrunk' : r.budgetReached ? 'nothing smaller found' : 'already minimal: no smaller run fails alike'}; ${r.runs} runs in ${(r.elapsedMs / 1000).toFixed(1)} s (budget ${formatDuration(r.budgetMs)})${r.budgetReached ? '; the budget ran out: this is the smallest reached, not necessarily the smallest' : ''}`,
  );
  if (outFile) lines.push(`  replay: s2stress replay ${outFile}`);
  lines.push(`  rerun: ${r.replay}`);
  return lines;
}

const SHRINK_FLAGS = new Set(['--budget', '--out', '--json', '--quiet']);

export interface ShrinkArgs {
  file: string;
  budgetMs: number;
  out: string | null;
  json: string | null;
  quiet: boolean;
}

export function parseShrinkArgs(args: readonly string[]): ShrinkArgs {
  const file = args[0];
  if (!file || file.startsWith('-')) throw new ConfigError('shrink', `shrink needs a report file first: ${SHRINK_HELP.split('\n')[0]}`);
  const a: ShrinkArgs = { file, budgetMs: DEFAULT_BUDGET_MS, out: null, json: null, quiet: false };
  const given = new Set<string>();
  for (let i = 1; i < args.length; i++) {
    let flag = args[i];
    let value: string | undefined;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    if (!SHRINK_FLAGS.has(flag)) throw new ConfigError(flag, `unknown ${flag.startsWith('-') ? 'flag' : 'argument'} '${flag}' for shrink; accepted: --budget TIME, --out FILE, --json FILE, --quiet`);
    if (given.has(flag)) throw new ConfigError(flag, `${flag} is given more than once`);
    given.add(flag);
    if (flag === '--quiet') {
      if (value !== undefined) throw new ConfigError(flag, `--quiet is a switch and takes no value, got '--quiet=${value}'`);
      a.quiet = true;
      continue;
    }
    if (value === undefined) {
      value = args[i + 1];
      if (value === undefined || value.startsWith('--')) throw new ConfigError(flag, `${flag} needs a value${value === undefined ? '' : `, got the flag '${value}'`}`);
      i++;
    }
    if (flag === '--budget') a.budgetMs = parseDuration(flag, value, 1000);
    else if (flag === '--out') a.out = value;
    else a.json = value;
  }
  return a;
}

/** `s2stress shrink`. */
export async function main(args: string[], io: Out): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(`usage: ${SHRINK_HELP}`);
    return 0;
  }
  const a = parseShrinkArgs(args);
  if (a.out) checkJsonWritable(a.out);
  if (a.json) checkJsonWritable(a.json);
  const { report, options } = readFailingReport(a.file);
  if (options.mode === 'sim' && (report.schedule?.version ?? 1) !== SCHEDULE_VERSION) {
    io.err(`s2stress shrink: '${a.file}' is of schedule version ${String(report.schedule?.version ?? 1)}, this s2stress runs ${SCHEDULE_VERSION}: the same seed is another run now, and its failure may not recur`);
  }
  const ac = new AbortController();
  const onSig = (): void => ac.abort('SIGINT');
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  let outcome: ShrinkOutcome;
  try {
    outcome = await shrinkReport(report, options, { budgetMs: a.budgetMs, signal: ac.signal, onProgress: a.quiet ? undefined : (l) => io.err(l) });
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
  const r = outcome.result;
  const lines = formatShrink(r, a.out && outcome.report ? a.out : null);
  if (a.quiet) {
    io.out(r.status === 'not-reproduced' ? lines[2] : `s2stress shrink ${r.status}: ${r.signature}\n  rerun: ${r.replay}`);
  } else for (const l of lines) io.out(l);
  try {
    if (a.out && outcome.report) writeJsonAtomic(a.out, outcome.report);
    if (a.json) writeJsonAtomic(a.json, { ...r, source: a.file, out: a.out && outcome.report ? a.out : null });
  } catch (e) {
    io.err(`s2stress shrink: cannot write ${a.out ?? a.json}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return 3;
  }
  return r.status === 'not-reproduced' ? 1 : 0;
}
