/**
 * The library: `import { run, replay, campaign } from 's2stress'`. Each
 * returns the very object the CLI writes as JSON (`run --json`, `campaign
 * --out`), and takes its options as that JSON's `config` names them. Bad
 * options throw a ConfigError naming the option and what is accepted. A run
 * never throws for what it finds: a violation is `result: 'fail'`.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../src/config.js';
import { defaultOptions, optionsFromObject, optionsFromReportConfig, runArgsOf, type RunOptions } from './options.js';
import { runThreads } from './run.js';
import { runSim } from './simrun.js';
import { SCHEDULE_VERSION } from '../src/sim/sched.js';
import type { Report } from './report.js';
import { runCampaign, type CampaignOptions, type CampaignResult } from './campaign.js';
import { failingReportOptions, readFailingReport, shrinkReport, type ShrinkOutcome, type ShrinkResult } from './shrink.js';

export type { Report, RunOptions, CampaignResult, ShrinkOutcome, ShrinkResult };
export type { CampaignRun, CampaignSignature } from './campaign.js';
export type { Violation } from '../src/check/invariants.js';
export { ConfigError };

/** run()'s options: any RunOptions field (as in a report's `config`), the rest at their defaults. */
export type RunInput = Partial<Omit<RunOptions, 'json' | 'quiet' | 'verbose' | 'wide'>>;

export interface RunControl {
  /** Aborting stops the run cleanly; the partial report says interrupted. */
  signal?: AbortSignal;
}

/** One run, in sim or threads mode (options.mode), as `s2stress run`. */
export async function run(options: RunInput = {}, control: RunControl = {}): Promise<Report> {
  const o = optionsFromObject(options);
  o.quiet = true;
  return o.mode === 'sim' ? runSim(o, { signal: control.signal }) : runThreads(o, { signal: control.signal });
}

/** What replay() found: the new report, and whether it repeated the old run exactly (sim mode; null in threads mode). */
export interface ReplayResult {
  report: Report;
  exact: boolean | null;
}

/**
 * Run again the run a report describes (the object, or the path of its JSON
 * file), as `s2stress replay`: exactly in sim mode (same schedule hash and
 * first violation, or exact: false), the same seeds and configuration in
 * threads mode (exact: null).
 */
export async function replay(report: Report | string, control: RunControl = {}): Promise<ReplayResult> {
  let prior: Report;
  if (typeof report === 'string') {
    try {
      prior = JSON.parse(readFileSync(report, 'utf8')) as Report;
    } catch (e) {
      throw new ConfigError('report', `cannot read report '${report}': ${(e as Error).message}`);
    }
  } else prior = report;
  if (!prior || typeof prior !== 'object' || !('config' in prior)) throw new ConfigError('report', 'replay() takes an s2stress report (an object with a config), or the path of one');
  const s = prior.schedule;
  if (prior.config?.mode === 'sim' && (s?.version ?? 1) !== SCHEDULE_VERSION) {
    throw new ConfigError('schedule.version', `the report is of schedule version ${String(s?.version ?? 1)}, this s2stress runs ${SCHEDULE_VERSION}: the same seed now gives another run`);
  }
  const stopAt = s?.stoppedAtStep;
  const o = optionsFromReportConfig(prior.config, [], typeof stopAt === 'number' ? { stopStep: stopAt } : {});
  o.quiet = true;
  o.json = null;
  const r = o.mode === 'sim' ? await runSim(o, { signal: control.signal }) : await runThreads(o, { signal: control.signal });
  const exact = o.mode === 'sim' ? r.schedule?.hash === s?.hash && r.violations[0]?.message === prior.violations?.[0]?.message : null;
  return { report: r, exact };
}

/**
 * The smallest run that fails as the report's did, as `s2stress shrink`:
 * `{ result, report }`, the summary `shrink --json` writes and the shrunk
 * run's report (null when the failure does not recur). budgetMs defaults to 60 s.
 */
export async function shrink(report: Report | string, control: { budgetMs?: number; signal?: AbortSignal; onProgress?: (line: string) => void } = {}): Promise<ShrinkOutcome> {
  let prior: Report;
  let options: RunOptions;
  if (typeof report === 'string') ({ report: prior, options } = readFailingReport(report));
  else {
    prior = report;
    options = failingReportOptions(prior);
  }
  return shrinkReport(prior, options, control);
}

/** campaign()'s options: as `s2stress campaign`'s flags. */
export interface CampaignInput {
  /** The options every run shares (run()'s), seed aside. */
  run?: RunInput;
  /** Seeds 1..N, or [A, B]. */
  seeds: number | [number, number];
  profiles?: RunOptions['profile'][];
  scenarios?: string[];
  backings?: RunOptions['backing'][];
  /** Runs at a time (default: the cores). */
  jobs?: number;
  /** [I, N]: share I of N. */
  shard?: [number, number];
  /** Directory for campaign.json and failures/ (new or empty). */
  out?: string;
  signal?: AbortSignal;
  /** Progress lines (default: none). */
  onProgress?: (line: string) => void;
}

/** Many seeded runs, as `s2stress campaign`; the result is campaign.json's content. */
export async function campaign(input: CampaignInput): Promise<CampaignResult> {
  if (!input || typeof input !== 'object') throw new ConfigError('campaign', 'campaign() takes an object of options');
  const base = optionsFromObject({ ...(input.run ?? {}), seed: 0 });
  const matrix = { profile: input.profiles, scenario: input.scenarios, backing: input.backings };
  // The shared run flags: those of run(), without the seed and the cells' own.
  const args = runArgsOf(base, false);
  const runFlags: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i].slice(2) as keyof typeof matrix;
    if (args[i] === '--seed' || (flag in matrix && matrix[flag])) {
      i++;
      continue;
    }
    runFlags.push(args[i]);
  }
  const seeds = input.seeds;
  let lo: number;
  let hi: number;
  if (typeof seeds === 'number' && Number.isInteger(seeds) && seeds >= 1) [lo, hi] = [1, seeds];
  else if (Array.isArray(seeds) && seeds.length === 2 && seeds.every((x) => Number.isInteger(x) && x >= 0) && seeds[0] <= seeds[1]) [lo, hi] = seeds;
  else throw new ConfigError('seeds', `seeds takes N (1..N) or [A, B] with 0 <= A <= B, got ${JSON.stringify(seeds)}`);
  const jobs = input.jobs ?? (await import('node:os')).availableParallelism();
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 256) throw new ConfigError('jobs', `jobs takes a whole number from 1 to 256, got ${JSON.stringify(input.jobs)}`);
  const shard = input.shard ?? [1, 1];
  if (!Array.isArray(shard) || shard.length !== 2 || !shard.every(Number.isInteger) || shard[0] < 1 || shard[0] > shard[1]) {
    throw new ConfigError('shard', `shard takes [I, N] with 1 <= I <= N, got ${JSON.stringify(input.shard)}`);
  }
  const o: CampaignOptions = {
    runFlags,
    seedLo: lo,
    seedHi: hi,
    profiles: input.profiles ?? null,
    scenarios: input.scenarios ?? null,
    backings: input.backings ?? null,
    jobs,
    shard: [shard[0], shard[1]],
    out: input.out ?? null,
  };
  const say = input.onProgress ?? ((): void => {});
  return runCampaign(o, { out: say, err: say }, { signal: input.signal, progressEveryMs: 5000 });
}

/** The defaults of every run option. */
export function defaults(): RunInput {
  const { json: _j, quiet: _q, verbose: _v, wide: _w, ...rest } = defaultOptions();
  return rest;
}
