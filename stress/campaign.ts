/**
 * `s2stress campaign`: many seeded runs (a seed range, over a matrix of
 * profiles, scenarios and backings), K at a time on this machine, each a
 * child process of its own (`s2stress run ... --json`); failures grouped by
 * signature, each signature with its count, first seed and one reproducer.
 * `--shard i/N` runs a deterministic share of the jobs; `s2stress merge`
 * puts shard outputs back together into the very campaign an unsharded run
 * writes. What syzkaller's manager does with crashes (dedupe by title, keep
 * a reproducer) and vitest's --shard / --merge-reports do with test files.
 *
 * --out DIR holds:
 *   campaign.json          the result (CampaignResult below)
 *   failures/JOB.json      the report of every failing run (JOB = job id)
 * Everything but the `host` field (jobs, shard, times, load) is a function
 * of the campaign's definition and its runs' results, so a merge of shards
 * equals the unsharded campaign field for field.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BACKINGS, ConfigError, PROFILES, type Backing, type ProfileName } from '../src/config.js';
import { ALL_SCENARIOS } from './scenarios.js';
import { parseRunArgs, runArgsOf, type RunOptions } from './options.js';
import { VERSION, type Report } from './report.js';
import { htmlCampaign } from './html.js';
import { checkWritable, writeTextAtomic } from './files.js';
import { parseDuration } from './units.js';

type Out = { out: (s: string) => void; err: (s: string) => void };

export const CAMPAIGN_USAGE = `s2stress campaign [RUN FLAGS] [--seeds N|A..B] [--profiles LIST] [--scenarios LIST] [--backings LIST]
                  [--jobs K] [--shard I/N] [--out DIR] [--html FILE] [--shrink TIME]
  run every seed (1..N, or A..B) of every cell of the matrix (each LIST a comma
  list; default the run flags' own --profile, --scenario, --backing), K runs at
  a time (default: the cores), each one \`s2stress run RUN FLAGS --seed S\` in a
  process of its own. Failures are grouped by signature (profile, invariant,
  the actor's role, the violation with its numbers taken out), each with its
  count, first seed and the replay command of one reproducer.
  --shard I/N    run only share I of N (1 <= I <= N): job j when j mod N = I - 1;
                 s2stress merge puts the shards' --out directories back together
  --out DIR      campaign.json and failures/JOB.json (the report of each failing
                 run); DIR is created, and must be empty if it exists
  --html FILE    the HTML report: failures by signature, their discovery over the runs
  --shrink TIME  shrink each signature's reproducer within TIME (s2stress shrink); campaign.json
                 records it per signature (shrunk: file failures/JOB.shrunk.json and replay)
  Exit 0 if every run passed, 1 if any run failed (each distinct failure listed
  with its replay command), 3 if a run could not run (harness failure) and none
  failed, 2 on bad usage, 130/143/129 when interrupted (1 if a failure came
  first). RUN FLAGS may not hold --seed, --json or --stop-step.
s2stress merge DIR... --out DIR [--html FILE]
  merge the --out directories of the shards of one campaign into one, laid out
  exactly as the unsharded campaign's --out (exit code as campaign's)`;

/** One run of the campaign: a matrix cell and a seed. */
export interface CampaignJob {
  /** Position in the campaign's job order (seed-major, then cell). */
  index: number;
  /** A file-name-safe id: `<profile>-<scenario>-<backing>-s<seed>`. */
  id: string;
  profile: ProfileName;
  scenario: string;
  backing: Backing;
  seed: number;
}

/** A run's outcome, as kept in campaign.json. */
export interface CampaignRun {
  id: string;
  index: number;
  result: 'pass' | 'fail' | 'error' | 'interrupted';
  exitCode: number;
  /** The failure's signature (fail and error only). */
  signature: string | null;
}

export interface CampaignSignature {
  signature: string;
  profile: string;
  /** The first violation's invariant, or `harness` for a run that could not run. */
  invariant: string;
  /** The violating actor's role (vcpu, hostmm, migrator, orchestrator...). */
  role: string;
  count: number;
  firstSeed: number;
  /** The job id of the reproducer kept (the lowest job index with this signature). */
  reproducer: string;
  /** failures/<reproducer>.json, relative to the campaign directory. */
  file: string;
  replay: string;
  /** The first violation's message, as the reproducer printed it. */
  example: string;
  /**
   * With --shrink TIME: the reproducer shrunk (s2stress shrink) within TIME.
   * file: failures/<reproducer>.shrunk.json (null without --out, or when
   * the failure did not recur); replay: its rerun line. Depends on the
   * budget and the machine, as `host` does.
   */
  shrunk?: { file: string | null; replay: string; status: 'shrunk' | 'minimal' | 'not-reproduced'; runs: number; elapsedMs: number; budgetReached: boolean };
}

export interface CampaignResult {
  tool: 's2stress';
  kind: 'campaign';
  version: string;
  definition: {
    runFlags: string[];
    seeds: [number, number];
    profiles: ProfileName[];
    scenarios: string[];
    backings: Backing[];
    /** Runs of the whole campaign (seeds x cells), every shard's together. */
    runs: number;
    /** The matrix flags as given (null: the run flags' single value). */
    matrix: { profiles: ProfileName[] | null; scenarios: string[] | null; backings: Backing[] | null };
  };
  /** Runs done, by job order (a sharded campaign holds its share only). */
  runs: CampaignRun[];
  totals: { runs: number; passed: number; failed: number; errors: number; interrupted: number; missing: number };
  signatures: CampaignSignature[];
  /** Which shards the result holds: [1, 1] for an unsharded campaign (or a complete merge). */
  shards: { of: number; held: number[] };
  /** Everything that depends on the machine or the moment (not compared by merge). */
  host: { jobs: number; elapsedMs: number; startedAt: string; loadavgStart: number[]; loadavgEnd: number[]; interrupted: boolean; signal: string | null };
}

export interface CampaignOptions {
  runFlags: string[];
  seedLo: number;
  seedHi: number;
  profiles: ProfileName[] | null;
  scenarios: string[] | null;
  backings: Backing[] | null;
  jobs: number;
  shard: [number, number];
  out: string | null;
  /** --html FILE: the campaign's HTML report. */
  html?: string | null;
  /** --shrink TIME: shrink each signature's reproducer within this many ms (null: no shrinking). */
  shrinkMs?: number | null;
}

const MAX_SEEDS = 1_000_000;

function parseIntIn(flag: string, v: string, lo: number, hi: number): number {
  if (!/^\d+$/.test(v)) throw new ConfigError(flag, `${flag} takes a whole number from ${lo} to ${hi}, got '${v}'`);
  const n = Number(v);
  if (n < lo || n > hi) throw new ConfigError(flag, `${flag} takes a whole number from ${lo} to ${hi}, got '${v}'`);
  return n;
}

function listOf<T extends string>(flag: string, v: string, known: readonly string[]): T[] {
  const parts = v.split(',').map((x) => x.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw new ConfigError(flag, `${flag} takes a comma list of ${known.join(', ')}, got '${v}'`);
  for (const p of parts) if (!known.includes(p)) throw new ConfigError(flag, `${flag}: '${p}' is not one of ${known.join(', ')}`);
  return [...new Set(parts)] as T[];
}

/** Parse the campaign's own flags; the rest are run flags, checked by parseRunArgs for every cell. */
export function parseCampaignArgs(argv: readonly string[]): CampaignOptions {
  const o: CampaignOptions = { runFlags: [], seedLo: 1, seedHi: 100, profiles: null, scenarios: null, backings: null, jobs: availableParallelism(), shard: [1, 1], out: null };
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i];
    const eq = raw.startsWith('--') ? raw.indexOf('=') : -1;
    const flag = eq > 0 ? raw.slice(0, eq) : raw;
    const value = (): string => {
      if (eq > 0) return raw.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new ConfigError(flag, `${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--seeds': {
        const v = value();
        const range = /^(\d+)\.\.(\d+)$/.exec(v.trim());
        if (range) {
          const lo = parseIntIn(flag, range[1], 0, 0xffffffff);
          const hi = parseIntIn(flag, range[2], 0, 0xffffffff);
          if (hi < lo || hi - lo >= MAX_SEEDS) throw new ConfigError(flag, `--seeds A..B needs A <= B and at most ${MAX_SEEDS} seeds, got '${v}'`);
          o.seedLo = lo;
          o.seedHi = hi;
        } else {
          o.seedLo = 1;
          o.seedHi = parseIntIn(flag, v, 1, MAX_SEEDS);
        }
        break;
      }
      case '--profiles':
        o.profiles = listOf<ProfileName>(flag, value(), PROFILES);
        break;
      case '--scenarios':
        o.scenarios = listOf(flag, value(), ALL_SCENARIOS.map((s) => s.name));
        break;
      case '--backings':
        o.backings = listOf<Backing>(flag, value(), BACKINGS);
        break;
      case '--jobs':
        o.jobs = parseIntIn(flag, value(), 1, 256);
        break;
      case '--shard': {
        const v = value();
        const m = /^(\d+)\/(\d+)$/.exec(v.trim());
        if (!m) throw new ConfigError(flag, `--shard takes I/N with 1 <= I <= N (e.g. 2/4), got '${v}'`);
        const n = parseIntIn(flag, m[2], 1, 10_000);
        const k = Number(m[1]);
        if (k < 1 || k > n) throw new ConfigError(flag, `--shard takes I/N with 1 <= I <= N (e.g. 2/4), got '${v}'`);
        o.shard = [k, n];
        break;
      }
      case '--out':
        o.out = value();
        break;
      case '--html':
        o.html = value();
        break;
      case '--shrink':
        o.shrinkMs = parseDuration(flag, value(), 1000);
        break;
      case '--seed':
      case '--json':
      case '--stop-step':
        throw new ConfigError(flag, `campaign sets ${flag} for each run itself: give the seeds with --seeds N|A..B and the output directory with --out DIR`);
      default:
        o.runFlags.push(raw);
    }
  }
  return o;
}

/** The matrix cells' run options (seed 0): every cell is checked here, before any run starts. */
function cellOptions(o: CampaignOptions): RunOptions[] {
  const base = parseRunArgs(o.runFlags);
  const profiles = o.profiles ?? [base.profile];
  const scenarios = o.scenarios ?? [base.scenario];
  const backings = o.backings ?? [base.backing];
  const given = (flag: string): boolean => o.runFlags.some((a) => a === flag || a.startsWith(`${flag}=`));
  for (const [one, many, list] of [['--profile', '--profiles', o.profiles], ['--scenario', '--scenarios', o.scenarios], ['--backing', '--backings', o.backings]] as const) {
    if (list && given(one)) throw new ConfigError(many, `give either ${one} or ${many}, not both`);
  }
  const cells: RunOptions[] = [];
  for (const profile of profiles) {
    for (const scenario of scenarios) {
      for (const backing of backings) {
        const extra: string[] = [];
        if (o.profiles) extra.push('--profile', profile);
        if (o.scenarios) extra.push('--scenario', scenario);
        if (o.backings) extra.push('--backing', backing);
        cells.push(parseRunArgs([...o.runFlags, ...extra, '--quiet']));
      }
    }
  }
  return cells;
}

/** Every job of the campaign, in order: seed-major, then the cells in matrix order. */
export function campaignJobs(o: CampaignOptions): { cells: RunOptions[]; jobs: CampaignJob[] } {
  const cells = cellOptions(o);
  const jobs: CampaignJob[] = [];
  let index = 0;
  for (let seed = o.seedLo; seed <= o.seedHi; seed++) {
    for (const c of cells) {
      jobs.push({ index, id: `${c.profile}-${c.scenario}-${c.backing}-s${seed}`, profile: c.profile, scenario: c.scenario, backing: c.backing, seed });
      index++;
    }
  }
  return { cells, jobs };
}

/** The jobs of shard k of n: job j when j mod n = k - 1 (deterministic, balanced across seeds and cells). */
export function shardJobs<T extends { index: number }>(jobs: readonly T[], shard: [number, number]): T[] {
  const [k, n] = shard;
  return jobs.filter((j) => j.index % n === k - 1);
}

/**
 * A violation's message with its particulars taken out: numbers (decimal or
 * hex) become N, and the "(vcpu1 write #360)" notes on values go (a value
 * with a writer and the initial 0 are the same kind of finding).
 */
export function normalizeMessage(msg: string): string {
  return msg
    .split('\n')[0]
    .replace(/\s*\([^()]*write #\d+\)/g, '')
    .replace(/0x[0-9a-f]+/gi, 'N')
    .replace(/\b(vcpu|cpu)\d+/gi, '$1N')
    .replace(/#\d+/g, '#N')
    .replace(/\d+(\.\d+)?/g, 'N')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The actor's role: its name without its number. */
export function actorRole(actor: string): string {
  return actor.replace(/\d+$/, '') || actor;
}

/**
 * A failure's signature: what it is, not which run it was. For a violation,
 * the profile, the first violation's invariant, the role of the actor that
 * reported it and its message with every number taken out (the kernel step
 * and the object kind stay: "stage-2 maps gfn N to frame N, which is free");
 * for a run that could not run, the harness error's first line likewise.
 */
export function signatureOf(r: Pick<Report, 'violations' | 'error' | 'config'>): { signature: string; invariant: string; role: string; example: string } {
  const profile = r.config.profile;
  const v = r.violations[0];
  if (v) {
    const role = actorRole(v.actor);
    return { signature: `${profile} ${v.invariant} @${role}: ${normalizeMessage(v.message)}`, invariant: v.invariant, role, example: v.message };
  }
  const err = r.error ?? 'no report';
  return { signature: `${profile} harness: ${normalizeMessage(err)}`, invariant: 'harness', role: 'harness', example: err.split('\n')[0] };
}

function cliPath(): string {
  const here = fileURLToPath(new URL('./cli.js', import.meta.url));
  if (existsSync(here)) return here;
  // Run from the sources (vitest): the compiled CLI.
  const dist = fileURLToPath(new URL('../dist/stress/cli.js', import.meta.url));
  if (existsSync(dist)) return dist;
  throw new ConfigError('campaign', `the compiled CLI is missing (${here}): run npm run build first`);
}

interface Outcome {
  run: CampaignRun;
  report: Report | null;
}

/** One run in a child process; its report is read from --json. */
function runJob(cli: string, cell: RunOptions, job: CampaignJob, tmp: string, live: Set<ChildProcess>): Promise<Outcome> {
  const o: RunOptions = { ...cell, seed: job.seed };
  const file = join(tmp, `${job.id}.json`);
  // Where the actors run is not part of a run's flags (runArgsOf): passed on as given.
  const pin = o.mode === 'sim' && o.simCpu !== undefined && o.simCpu !== 'auto' ? ['--sim-cpu', o.simCpu] : [];
  const args = [cli, 'run', ...runArgsOf(o, false), ...pin, '--quiet', '--json', file];
  return new Promise((res) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 4000) stderr += d.toString();
    });
    child.on('close', (code, signal) => {
      live.delete(child);
      let report: Report | null = null;
      try {
        report = JSON.parse(readFileSync(file, 'utf8')) as Report;
      } catch {
        report = null;
      }
      const exitCode = code ?? (signal ? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 9) : 3);
      let result: CampaignRun['result'];
      if (report?.interrupted && report.result !== 'fail') result = 'interrupted';
      else if (report?.result === 'fail' || exitCode === 1) result = 'fail';
      else if (exitCode === 0 && report) result = 'pass';
      else if (signal || exitCode >= 128) result = 'interrupted';
      else result = 'error';
      let signature: string | null = null;
      if (result === 'fail' || result === 'error') {
        const r = report ?? ({ violations: [], error: `exit ${exitCode}: ${stderr.trim().split('\n').pop() ?? ''}`, config: o } as unknown as Report);
        signature = signatureOf(r).signature;
      }
      res({ run: { id: job.id, index: job.index, result, exitCode, signature }, report });
    });
  });
}

/** Signatures from the runs and the failing reports (the reproducer: the lowest job index). */
export function summarize(runs: CampaignRun[], reports: Map<string, Report>, jobs: Map<string, CampaignJob>): { totals: CampaignResult['totals']; signatures: CampaignSignature[] } {
  const sorted = [...runs].sort((a, b) => a.index - b.index);
  const totals = { runs: sorted.length, passed: 0, failed: 0, errors: 0, interrupted: 0, missing: jobs.size - sorted.length };
  const by = new Map<string, CampaignSignature>();
  for (const r of sorted) {
    if (r.result === 'pass') totals.passed++;
    else if (r.result === 'fail') totals.failed++;
    else if (r.result === 'error') totals.errors++;
    else totals.interrupted++;
    if (!r.signature) continue;
    const job = jobs.get(r.id)!;
    const s = by.get(r.signature);
    if (s) {
      s.count++;
      s.firstSeed = Math.min(s.firstSeed, job.seed);
      continue;
    }
    const rep = reports.get(r.id);
    const sig = rep ? signatureOf(rep) : { invariant: 'harness', role: 'harness', example: `exit ${r.exitCode}` };
    by.set(r.signature, {
      signature: r.signature,
      profile: job.profile,
      invariant: sig.invariant,
      role: sig.role,
      count: 1,
      firstSeed: job.seed,
      reproducer: r.id,
      file: `failures/${r.id}.json`,
      replay: rep?.replay ?? '',
      example: sig.example,
    });
  }
  // Most frequent first, then by first appearance.
  const signatures = [...by.values()].sort((a, b) => b.count - a.count || jobs.get(a.reproducer)!.index - jobs.get(b.reproducer)!.index);
  return { totals, signatures };
}

function prepareOut(dir: string): void {
  const full = resolve(dir);
  if (existsSync(full)) {
    if (!statSync(full).isDirectory()) throw new ConfigError('--out', `--out '${dir}' exists and is not a directory`);
    if (readdirSync(full).length > 0) throw new ConfigError('--out', `--out '${dir}' is not empty: give a new or empty directory`);
  }
  try {
    mkdirSync(join(full, 'failures'), { recursive: true });
  } catch (e) {
    throw new ConfigError('--out', `--out '${dir}' cannot be created: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function fmtEta(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** The progress line: a bar, runs done of all, failures and signatures so far, the rate and the ETA. */
export function progressLine(done: number, total: number, failed: number, signatures: number, elapsedMs: number, width = 24): string {
  const frac = total === 0 ? 1 : done / total;
  const filled = Math.round(frac * width);
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  const eta = done > 0 && done < total ? ` ETA ${fmtEta((elapsedMs / done) * (total - done))}` : '';
  const rate = elapsedMs > 0 ? ((done * 60000) / elapsedMs).toFixed(1) : '0';
  return `[${bar}] ${done}/${total} runs, ${failed} failed (${signatures} signature${signatures === 1 ? '' : 's'}), ${rate} runs/min${eta}`;
}

export function formatCampaign(r: CampaignResult): string[] {
  const t = r.totals;
  const lines = [
    `s2stress campaign ${t.failed > 0 ? 'FAIL' : t.errors > 0 ? 'ERROR' : t.interrupted > 0 || t.missing > 0 ? 'INCOMPLETE' : 'PASS'}: ${t.runs} runs (seeds ${r.definition.seeds[0]}..${r.definition.seeds[1]} x ${r.definition.runs / (r.definition.seeds[1] - r.definition.seeds[0] + 1)} cell(s)${r.shards.of > 1 ? `, shards ${r.shards.held.join(',')} of ${r.shards.of}` : ''}), ${t.passed} passed, ${t.failed} failed, ${t.errors} could not run${t.interrupted ? `, ${t.interrupted} interrupted` : ''}${t.missing ? `, ${t.missing} not run` : ''}; ${r.signatures.length} distinct failure(s)`,
  ];
  for (const s of r.signatures) {
    lines.push(`  ${String(s.count).padStart(5)} x  ${s.signature}`);
    lines.push(`           first seed ${s.firstSeed}; reproducer ${s.file}`);
    if (s.replay) lines.push(`           replay: ${s.replay}`);
    if (s.shrunk) {
      lines.push(
        s.shrunk.status === 'not-reproduced'
          ? '           shrunk: the failure did not recur on rerun'
          : `           shrunk (${s.shrunk.status}, ${s.shrunk.runs} runs${s.shrunk.budgetReached ? ', budget spent' : ''}): ${s.shrunk.file ? `s2stress replay ${s.shrunk.file}; ` : ''}${s.shrunk.replay}`,
      );
    }
  }
  return lines;
}

function exitCodeOf(r: CampaignResult): number {
  if (r.totals.failed > 0) return 1;
  if (r.host.interrupted && r.host.signal) return 128 + (r.host.signal === 'SIGINT' ? 2 : r.host.signal === 'SIGTERM' ? 15 : 1);
  if (r.totals.errors > 0) return 3;
  return 0;
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Run a campaign; returns its result (written to --out if given). */
export async function runCampaign(o: CampaignOptions, io: Out, opts: { signal?: AbortSignal; progressEveryMs?: number; redraw?: boolean } = {}): Promise<CampaignResult> {
  const { cells, jobs } = campaignJobs(o);
  if (o.out) prepareOut(o.out);
  const cli = cliPath();
  const mine = shardJobs(jobs, o.shard);
  const tmp = mkdtempSync(join(tmpdir(), 's2campaign-'));
  const live = new Set<ChildProcess>();
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const loadStart = loadavg();
  const runs: CampaignRun[] = [];
  const reports = new Map<string, Report>();
  const sigs = new Set<string>();
  let failed = 0;
  let next = 0;
  let stopped: string | null = null;
  const cellOf = new Map(cells.map((c) => [`${c.profile}-${c.scenario}-${c.backing}`, c]));
  const onAbort = (): void => {
    stopped = String(opts.signal?.reason ?? 'SIGINT');
    for (const c of live) c.kill('SIGINT');
  };
  opts.signal?.addEventListener('abort', onAbort);
  let lastProgress = 0;
  const progress = (force: boolean): void => {
    const now = Date.now();
    if (!force && now - lastProgress < (opts.progressEveryMs ?? 5000)) return;
    lastProgress = now;
    const line = progressLine(runs.length, mine.length, failed, sigs.size, now - started);
    if (opts.redraw) process.stderr.write(`\r${line}\x1b[K`);
    else io.err(line);
  };
  const ticker = setInterval(() => progress(false), Math.min(opts.progressEveryMs ?? 5000, 1000));
  ticker.unref();
  try {
    const worker = async (): Promise<void> => {
      while (!stopped && next < mine.length) {
        const job = mine[next++];
        const cell = cellOf.get(`${job.profile}-${job.scenario}-${job.backing}`)!;
        const res = await runJob(cli, cell, job, tmp, live);
        if (stopped && res.run.result === 'interrupted') continue; // not run to its end: not recorded
        runs.push(res.run);
        if (res.run.result === 'fail') failed++;
        if (res.run.signature) sigs.add(res.run.signature);
        if ((res.run.result === 'fail' || res.run.result === 'error') && res.report) {
          reports.set(job.id, res.report);
          // The run wrote its report to a temporary file: the kept copy names none.
          if (o.out) writeFileSync(join(resolve(o.out), 'failures', `${job.id}.json`), JSON.stringify({ ...res.report, config: { ...res.report.config, json: null } }, null, 2) + '\n');
        }
        progress(false);
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.jobs, Math.max(1, mine.length)) }, worker));
  } finally {
    clearInterval(ticker);
    opts.signal?.removeEventListener('abort', onAbort);
    for (const c of live) c.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  }
  progress(true);
  if (opts.redraw) process.stderr.write('\n');
  const jobMap = new Map(mine.map((j) => [j.id, j]));
  const { totals, signatures } = summarize(runs, reports, jobMap);
  if (o.shrinkMs && !stopped) await shrinkSignatures(signatures, reports, o, io, opts.signal);
  const result: CampaignResult = {
    tool: 's2stress',
    kind: 'campaign',
    version: VERSION,
    definition: { runFlags: o.runFlags, seeds: [o.seedLo, o.seedHi], profiles: cells.map((c) => c.profile).filter((p, i, a) => a.indexOf(p) === i), scenarios: cells.map((c) => c.scenario).filter((p, i, a) => a.indexOf(p) === i), backings: cells.map((c) => c.backing).filter((p, i, a) => a.indexOf(p) === i), runs: jobs.length, matrix: { profiles: o.profiles, scenarios: o.scenarios, backings: o.backings } },
    runs: runs.sort((a, b) => a.index - b.index),
    totals,
    signatures,
    shards: { of: o.shard[1], held: [o.shard[0]] },
    host: { jobs: o.jobs, elapsedMs: Date.now() - started, startedAt, loadavgStart: loadStart, loadavgEnd: loadavg(), interrupted: stopped !== null, signal: stopped },
  };
  if (o.out) writeCampaign(o.out, result);
  return result;
}

/**
 * --shrink: each signature's reproducer shrunk in this process within the
 * budget, one after the other (a harness failure is not shrunk: it has no
 * violation to keep).
 */
export async function shrinkSignatures(signatures: CampaignSignature[], reports: Map<string, Report>, o: CampaignOptions, io: Out, signal?: AbortSignal): Promise<void> {
  const { shrinkReport } = await import('./shrink.js');
  const { optionsFromReportConfig } = await import('./options.js');
  for (const s of signatures) {
    const rep = reports.get(s.reproducer);
    if (!rep || s.invariant === 'harness' || signal?.aborted) continue;
    const stopAt = rep.schedule?.stoppedAtStep;
    const options = optionsFromReportConfig(rep.config, [], typeof stopAt === 'number' ? { stopStep: stopAt } : {});
    io.err(`s2stress campaign: shrinking ${s.reproducer} (${s.signature}) within ${o.shrinkMs} ms`);
    const { result, report } = await shrinkReport(rep, options, { budgetMs: o.shrinkMs!, signal });
    let file: string | null = null;
    if (report && o.out) {
      file = `failures/${s.reproducer}.shrunk.json`;
      writeFileSync(join(resolve(o.out), file), JSON.stringify(report, null, 2) + '\n');
    }
    s.shrunk = { file, replay: result.status === 'not-reproduced' ? '' : result.replay, status: result.status, runs: result.runs, elapsedMs: result.elapsedMs, budgetReached: result.budgetReached };
  }
}

function writeCampaign(dir: string, r: CampaignResult): void {
  const file = join(resolve(dir), 'campaign.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(r, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}

/** s2stress campaign */
export async function main(args: string[], io: Out): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(`usage: ${CAMPAIGN_USAGE}`);
    return 0;
  }
  const o = parseCampaignArgs(args);
  const ac = new AbortController();
  const handlers = new Map<string, () => void>();
  for (const sig of STOP_SIGNALS) {
    const h = (): void => {
      if (!ac.signal.aborted) {
        io.err(`\ns2stress campaign: ${sig} received, stopping the runs; the partial result follows`);
        ac.abort(sig);
      }
    };
    handlers.set(sig, h);
    process.on(sig, h);
  }
  try {
    const redraw = process.stderr.isTTY === true && !process.env.CI;
    if (o.html) checkWritable('--html', o.html);
    const r = await runCampaign(o, io, { signal: ac.signal, redraw, progressEveryMs: redraw ? 500 : 5000 });
    for (const l of formatCampaign(r)) io.out(l);
    if (o.out) io.out(`campaign written to ${join(o.out, 'campaign.json')}`);
    if (o.html) {
      writeTextAtomic(o.html, htmlCampaign(r));
      io.out(`HTML report written to ${o.html}`);
    }
    return exitCodeOf(r);
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}

/** The fields of a campaign that define it (merge refuses shards of different campaigns). */
function definitionKey(r: CampaignResult): string {
  return JSON.stringify(r.definition);
}

/** Merge shard results (their --out directories) into one. */
export function mergeCampaigns(dirs: string[], out: string): CampaignResult {
  if (dirs.length === 0) throw new ConfigError('merge', 'merge needs at least one campaign directory');
  const parts: { dir: string; r: CampaignResult }[] = [];
  for (const d of dirs) {
    const f = join(resolve(d), 'campaign.json');
    let r: CampaignResult;
    try {
      r = JSON.parse(readFileSync(f, 'utf8')) as CampaignResult;
    } catch (e) {
      throw new ConfigError('merge', `merge: cannot read '${f}': ${(e as Error).message}`);
    }
    if (r?.tool !== 's2stress' || r.kind !== 'campaign') throw new ConfigError('merge', `merge: '${f}' is not an s2stress campaign result`);
    parts.push({ dir: d, r });
  }
  const key = definitionKey(parts[0].r);
  const of = parts[0].r.shards.of;
  for (const p of parts) {
    if (definitionKey(p.r) !== key) throw new ConfigError('merge', `merge: '${p.dir}' is another campaign (its definition differs from '${parts[0].dir}'): merge takes the shards of one campaign`);
    if (p.r.shards.of !== of) throw new ConfigError('merge', `merge: '${p.dir}' was split in ${p.r.shards.of} shards, '${parts[0].dir}' in ${of}`);
  }
  const held = new Set<number>();
  for (const p of parts) {
    for (const s of p.r.shards.held) {
      if (held.has(s)) throw new ConfigError('merge', `merge: shard ${s}/${of} is given twice ('${p.dir}')`);
      held.add(s);
    }
  }
  prepareOut(out);
  const runs: CampaignRun[] = [];
  const reports = new Map<string, Report>();
  for (const p of parts) {
    for (const run of p.r.runs) {
      runs.push(run);
      if (run.result === 'fail' || run.result === 'error') {
        const src = join(resolve(p.dir), 'failures', `${run.id}.json`);
        if (existsSync(src)) {
          reports.set(run.id, JSON.parse(readFileSync(src, 'utf8')) as Report);
          copyFileSync(src, join(resolve(out), 'failures', `${run.id}.json`));
        }
      }
    }
  }
  // The jobs of the shards held, rebuilt from the definition.
  const def = parts[0].r.definition;
  const o: CampaignOptions = { runFlags: def.runFlags, seedLo: def.seeds[0], seedHi: def.seeds[1], ...def.matrix, jobs: 1, shard: [1, 1], out: null };
  const { jobs } = campaignJobs(o);
  const mine = jobs.filter((j) => held.has((j.index % of) + 1));
  const complete = held.size === of;
  const { totals, signatures } = summarize(runs, reports, new Map(mine.map((j) => [j.id, j])));
  // A shrunk reproducer goes with its reproducer, from the shard that ran it.
  for (const sig of signatures) {
    for (const p of parts) {
      const had = p.r.signatures.find((x) => x.signature === sig.signature && x.reproducer === sig.reproducer && x.shrunk);
      if (!had?.shrunk) continue;
      sig.shrunk = had.shrunk;
      if (had.shrunk.file && existsSync(join(resolve(p.dir), had.shrunk.file))) copyFileSync(join(resolve(p.dir), had.shrunk.file), join(resolve(out), had.shrunk.file));
      break;
    }
  }
  const hosts = parts.map((p) => p.r.host);
  const result: CampaignResult = {
    tool: 's2stress',
    kind: 'campaign',
    version: VERSION,
    definition: def,
    runs: runs.sort((a, b) => a.index - b.index),
    totals,
    signatures,
    shards: complete ? { of: 1, held: [1] } : { of, held: [...held].sort((a, b) => a - b) },
    host: {
      jobs: hosts.reduce((a, h) => a + h.jobs, 0),
      elapsedMs: Math.max(...hosts.map((h) => h.elapsedMs)),
      startedAt: hosts.map((h) => h.startedAt).sort()[0],
      loadavgStart: hosts[0].loadavgStart,
      loadavgEnd: hosts[hosts.length - 1].loadavgEnd,
      interrupted: hosts.some((h) => h.interrupted),
      signal: hosts.find((h) => h.signal)?.signal ?? null,
    },
  };
  writeCampaign(out, result);
  return result;
}

/** s2stress merge DIR... --out DIR */
export async function mergeMain(args: string[], io: Out): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(`usage: ${CAMPAIGN_USAGE.slice(CAMPAIGN_USAGE.indexOf('s2stress merge'))}`);
    return 0;
  }
  const dirs: string[] = [];
  let out: string | null = null;
  let html: string | null = null;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--html') {
      html = args[++i] ?? null;
      if (!html) throw new ConfigError('--html', '--html needs a file');
    } else if (args[i] === '--out') {
      out = args[++i] ?? null;
      if (!out) throw new ConfigError('--out', '--out needs a directory');
    } else if (args[i].startsWith('--out=')) out = args[i].slice(6);
    else if (args[i].startsWith('-')) throw new ConfigError(args[i], `merge takes campaign directories and --out DIR, got '${args[i]}'`);
    else dirs.push(args[i]);
  }
  if (!out) throw new ConfigError('--out', 'merge needs --out DIR for the merged campaign');
  if (html) checkWritable('--html', html);
  const r = mergeCampaigns(dirs, out);
  for (const l of formatCampaign(r)) io.out(l);
  io.out(`campaign written to ${join(out, 'campaign.json')}`);
  if (html) {
    writeTextAtomic(html, htmlCampaign(r));
    io.out(`HTML report written to ${html}`);
  }
  return exitCodeOf(r);
}

