#!/usr/bin/env node
/**
 * s2stress command line.
 * Exit codes: 0 pass; 1 an invariant was violated; 2 bad usage or
 * configuration (the message names the flag and what is accepted); 3 the
 * harness itself failed, or the run did no work, with the cause; 129, 130,
 * 143 interrupted by SIGHUP, SIGINT, SIGTERM (1 if a violation came first).
 *
 * Run directly, the process ends with an explicit exit once the verdict is
 * out (output flushed, the report written, every worker pool destroyed),
 * with backstops: nothing may keep it alive after its verdict.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError, PROFILES, canonicalProfile } from '../src/config.js';
import { BUGS, FIXES, KERNEL_INFO, PROFILE_FINDS, PROFILE_INFO } from '../src/profiles.js';
import { ALL_SCENARIOS } from './scenarios.js';
import { EXIT_CODES_HELP, RUN_FLAGS, RUN_FLAGS_DETAIL, RUN_FLAGS_HELP, type RunOptions, optionsFromReportConfig, parseRunArgs } from './options.js';
import { SIGNAL_NUMBERS, destroyLivePools, runThreads } from './run.js';
import { runSim } from './simrun.js';
import { formatLockTableFor, formatQuiet, formatSummary, type Report } from './report.js';
import { htmlRun } from './html.js';

const REPLAY_HELP = `s2stress replay REPORT.json [--json FILE] [--html FILE] [--quiet] [--verbose] [--wide]
    re-run the run a report describes: exact in sim mode (an interrupted sim run is
    replayed to the step it stopped at), the same seeds and configuration in threads mode`;
const LIST_HELP = 's2stress list scenarios|bugs|fixes|profiles [--json]';
import { SCHEDULE_VERSION } from '../src/sim/sched.js';

export const USAGE = `usage:
  ${RUN_FLAGS_HELP}
  ${REPLAY_HELP}
  ${LIST_HELP}
  s2stress bench [--quick] [--json FILE] [...]   micro and scaling benchmarks (bench --help)
  s2stress campaign [RUN FLAGS] [--seeds N|A..B] [--profiles L] [--scenarios L] [--backings L] [--jobs K]
                    [--shard I/N] [--out DIR] [--shrink TIME]
                                                 many seeded runs, failures deduplicated (campaign --help)
  s2stress merge DIR... --out DIR                merge the --out directories of a campaign's shards
  s2stress shrink REPORT.json [--budget TIME] [--out FILE] [--json FILE] [--quiet]
                                                 the smallest run that fails alike (shrink --help)
  s2stress zoo [--mode sim|threads|both] [--seeds N|A..B] [--bug NAME]... [--json FILE] [--sim-ops N]
               [--threads-duration TIME] [--generic] [--run-flags 'FLAGS'] [--from FILE [--compare FILE]]
                                                 run every --bug and print the kill table (zoo --help)
  s2stress help | COMMAND --help
${EXIT_CODES_HELP}`;

export const RUN_USAGE = `usage:
  ${RUN_FLAGS_HELP}

${RUN_FLAGS_DETAIL}

Sizes take units (512M, 1G, 16G), durations too (500ms, 20s, 2m, 1h).
${EXIT_CODES_HELP}`;

export class UsageError extends ConfigError {}

type Out = { out: (s: string) => void; err: (s: string) => void };
const stdio: Out = { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') };

const wantsHelp = (args: readonly string[]): boolean => args.includes('--help') || args.includes('-h');

function listCommand(args: string[], io: Out): number {
  if (wantsHelp(args)) {
    io.out(`usage: ${LIST_HELP}`);
    return 0;
  }
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  const what = rest[0];
  if (rest.length > 1) throw new UsageError('list', `list takes one of scenarios|bugs|fixes|profiles, got '${rest.join(' ')}'`);
  let rows: Record<string, string>[];
  switch (what) {
    case 'scenarios':
      rows = ALL_SCENARIOS.map((s) => ({ name: s.name, description: s.description }));
      break;
    case 'bugs':
      rows = BUGS.map((b) => ({ name: b.name, description: b.description, invariant: b.expected, origin: b.origin, profile: b.profile ?? 'fixed' }));
      break;
    case 'fixes':
      rows = FIXES.map((f) => ({ name: f.name, description: `${f.description}. Closes ${f.closes}` }));
      break;
    case 'profiles':
      rows = PROFILES.map((p) => {
        const k = canonicalProfile(p);
        return { name: p, description: PROFILE_INFO[p], kernel: PROFILE_FINDS[k].kernel, arch: KERNEL_INFO[k].arch, finds: PROFILE_FINDS[k].finds };
      });
      break;
    default:
      throw new UsageError('list', `list takes scenarios|bugs|fixes|profiles, got '${what ?? ''}'`);
  }
  if (json) io.out(JSON.stringify(rows, null, 2));
  else {
    const w = Math.max(...rows.map((r) => r.name.length));
    for (const r of rows) {
      const extra = r.invariant ? `  [${r.profile === 'modern' ? 'on modern; ' : ''}caught by ${r.invariant}]` : '';
      if (r.kernel) {
        io.out(`${r.name.padEnd(w)}  ${r.kernel}, ${r.arch}: ${r.description}`);
        io.out(`${''.padEnd(w)}  finds: ${r.finds}`);
      } else io.out(`${r.name.padEnd(w)}  ${r.description}${extra}`);
    }
  }
  return 0;
}

export { checkJsonWritable, checkWritable, writeJsonAtomic, writeTextAtomic } from './files.js';
import { checkJsonWritable, checkWritable, writeJsonAtomic, writeTextAtomic } from './files.js';

/**
 * How the live status is shown, from the stream it is written to (stderr):
 * a terminal gets one line redrawn about twice a second; a log (CI set, a
 * pipe, a file) a plain line every 5 s.
 */
export function statusStyle(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): { redraw: boolean; everyMs: number } {
  const redraw = stream.isTTY === true && !env.CI;
  return { redraw, everyMs: redraw ? 500 : 5000 };
}

/** The status line redrawn in place, cut to the terminal's width (one column spare: no wrap). */
export function redrawnStatus(line: string, columns: number | undefined): string {
  const cols = columns && columns > 1 ? columns - 1 : 79;
  return `\r${line.slice(0, cols)}\x1b[K`;
}

/** The signals that end a run cleanly with a partial report. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * What a second signal does: end the process at once. Set by the entry
 * point (an explicit exit with backstops); in-process callers (tests) get an
 * error instead.
 */
let quitNow: (code: number) => void = (code) => {
  throw new Error(`second signal: exit ${code}`);
};

/**
 * Run, print the verdict and write the report, with the stop signals
 * handled throughout: the first stops the run cleanly (the partial report is
 * printed and written, interrupted: true), a second quits at once.
 */
async function runReportAndEmit(o: RunOptions, io: Out, after?: (r: Report) => number | null): Promise<number> {
  const ac = new AbortController();
  const handlers = new Map<string, () => void>();
  for (const sig of STOP_SIGNALS) {
    const h = (): void => {
      if (!ac.signal.aborted) {
        io.err(`\ns2stress: ${sig} received, stopping the run; the partial report follows (${sig === 'SIGINT' ? 'Ctrl-C' : sig} again quits at once)`);
        ac.abort(sig);
      } else {
        quitNow(128 + SIGNAL_NUMBERS[sig]);
      }
    };
    handlers.set(sig, h);
    process.on(sig, h);
  }
  try {
    const stream = process.stderr;
    const style = statusStyle(stream, process.env);
    let statusShown = false;
    const runner = o.mode === 'sim' ? runSim : runThreads;
    const report = await runner(o, {
      signal: ac.signal,
      statusEveryMs: style.everyMs,
      onStart: o.quiet ? undefined : (line) => io.err(line),
      onStatus: o.quiet
        ? undefined
        : (line) => {
            if (style.redraw) {
              stream.write(redrawnStatus(line, stream.columns));
              statusShown = true;
            } else io.err(line);
          },
    });
    if (statusShown) stream.write('\n');
    let code = emit(report, o, io);
    const replayed = after?.(report);
    if (replayed != null) code = replayed;
    return code;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}

/** Print the verdict and write the JSON report; returns the exit code. */
function emit(report: Report, o: RunOptions, io: Out): number {
  if (o.quiet) io.out(formatQuiet(report));
  else {
    io.out(formatSummary(report, { verbose: o.verbose }));
    if (report.lock.sites.length || !report.lock.enabled) io.out(formatLockTableFor(report.lock, o.mode, o.wide));
  }
  let code = report.exitCode;
  if (o.html) {
    try {
      writeTextAtomic(o.html, htmlRun(report));
    } catch (e) {
      io.err(`s2stress: cannot write the HTML report to --html '${o.html}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      if (code === 0) code = 3;
    }
  }
  if (o.json) {
    try {
      writeJsonAtomic(o.json, report);
    } catch (e) {
      io.err(`s2stress: cannot write the report to --json '${o.json}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      // The run's own verdict stands (1, 3, 130...); a passing run whose
      // report is lost is a harness failure.
      if (code === 0) code = 3;
    }
  }
  return code;
}

async function replayCommandMain(args: string[], io: Out): Promise<number> {
  if (wantsHelp(args)) {
    io.out(`usage: ${REPLAY_HELP}`);
    return 0;
  }
  const file = args[0];
  if (!file || file.startsWith('-')) throw new UsageError('replay', `replay needs a report file first: ${REPLAY_HELP}`);
  const extra = args.slice(1);
  for (const a of extra) {
    const name = a.split('=')[0];
    if (!RUN_FLAGS[name]) continue; // values (the FILE of --json)
    if (!RUN_FLAGS[name].display) {
      throw new UsageError(name, `replay takes only --json, --html, --quiet, --verbose, --wide and --sim-cpu besides the report: ${name} would change the run (use the report's rerun line with s2stress run to change it)`);
    }
  }
  let prior: Report;
  try {
    prior = JSON.parse(readFileSync(file, 'utf8')) as Report;
  } catch (e) {
    throw new UsageError('replay', `cannot read report '${file}': ${(e as Error).message}`);
  }
  if (!prior || typeof prior !== 'object' || Array.isArray(prior)) throw new UsageError('replay', `'${file}' is not an s2stress report (not a JSON object)`);
  if (prior.tool !== undefined && prior.tool !== 's2stress') throw new UsageError('tool', `'${file}' is not an s2stress report (tool '${String(prior.tool)}')`);
  if (!('config' in prior)) throw new UsageError('config', `'${file}' is not an s2stress report: it has no config`);
  const sched = prior.schedule as unknown;
  if (sched !== undefined && sched !== null && (typeof sched !== 'object' || Array.isArray(sched))) {
    throw new UsageError('schedule', `report field schedule must be an object or null, got ${JSON.stringify(sched)}`);
  }
  const s = sched as Partial<Report['schedule'] & object> | null | undefined;
  if (s && s.hash !== undefined && typeof s.hash !== 'string') throw new UsageError('schedule.hash', `report field schedule.hash must be a string, got ${JSON.stringify(s.hash)}`);
  const stopAt = s?.stoppedAtStep;
  if (stopAt !== undefined && stopAt !== null && !(typeof stopAt === 'number' && Number.isInteger(stopAt) && stopAt > 0)) {
    throw new UsageError('schedule.stoppedAtStep', `report field schedule.stoppedAtStep must be a positive whole number or null, got ${JSON.stringify(stopAt)}`);
  }
  const cfg = prior.config as { mode?: unknown } | null;
  if (cfg && typeof cfg === 'object' && cfg.mode === 'sim') {
    // The same seed means another run once the strategies or the seeded workloads change.
    const version = s?.version ?? 1;
    if (version !== SCHEDULE_VERSION) {
      throw new UsageError(
        'schedule.version',
        `'${file}' is a sim-mode report of schedule version ${String(version)}, and this s2stress runs schedule version ${SCHEDULE_VERSION}: the same seed now gives a different run, so it cannot be replayed exactly. Rerun with the s2stress that wrote it, or search afresh with: ${typeof prior.replay === 'string' ? prior.replay : 's2stress run ...'}`,
      );
    }
  }
  const o = optionsFromReportConfig(prior.config, extra, typeof stopAt === 'number' ? { stopStep: stopAt } : {});
  if (o.json) checkJsonWritable(o.json);
  if (o.html) checkWritable('--html', o.html);
  if (o.mode === 'threads') {
    io.err('s2stress replay: threads mode reruns the same seeds and configuration; thread interleavings are not reproducible, so the failure may not recur (sim mode replays exactly)');
  }
  return runReportAndEmit(o, io, (report) => {
    if (o.mode !== 'sim') return null;
    if (!s?.hash) {
      io.out('replay: the report has no schedule hash to compare with');
      return null;
    }
    const same = report.schedule?.hash === s.hash;
    const sameFirst = report.violations[0]?.message === prior.violations?.[0]?.message;
    const where = typeof stopAt === 'number' ? `stopped at step ${stopAt}, where the interrupted run stopped; ` : '';
    io.out(
      same && sameFirst
        ? `replay: exact (${where}schedule hash ${report.schedule?.hash}, ${report.violations.length ? 'same first violation' : 'no violation, as before'})`
        : `replay: DIVERGED (${where}schedule hash ${s.hash} -> ${report.schedule?.hash}${sameFirst ? '' : ', different violations'})`,
    );
    return same && sameFirst ? null : 3;
  });
}

type SubcommandModule = { main(args: string[], io: Out): Promise<number> };

async function optionalModule(href: string): Promise<SubcommandModule | null> {
  const path = fileURLToPath(href);
  const ts = path.replace(/\.js$/, '.ts');
  if (!existsSync(path) && !existsSync(ts)) return null;
  return (await import(existsSync(path) ? href : pathToFileURL(ts).href)) as SubcommandModule;
}

export async function main(argv: string[], io: Out = stdio): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run': {
        if (wantsHelp(rest)) {
          io.out(RUN_USAGE);
          return 0;
        }
        const o = parseRunArgs(rest);
        if (o.json) checkJsonWritable(o.json);
        if (o.html) checkWritable('--html', o.html);
        return await runReportAndEmit(o, io);
      }
      case 'replay':
        return await replayCommandMain(rest, io);
      case 'list':
        return listCommand(rest, io);
      case 'bench': {
        const mod = await optionalModule(new URL('../bench/run.js', import.meta.url).href);
        if (!mod) throw new UsageError('bench', 'bench is not available in this build');
        return await mod.main(rest, io);
      }
      case 'campaign': {
        const mod = await import('./campaign.js');
        return await mod.main(rest, io);
      }
      case 'merge': {
        const mod = await import('./campaign.js');
        return await mod.mergeMain(rest, io);
      }
      case 'shrink': {
        const mod = await import('./shrink.js');
        return await mod.main(rest, io);
      }
      case 'zoo': {
        const mod = await optionalModule(new URL('./zoo.js', import.meta.url).href);
        if (!mod) throw new UsageError('zoo', 'zoo is not available in this build');
        return await mod.main(rest, io);
      }
      case 'help':
      case '--help':
      case '-h':
        if (rest[0] && rest[0] !== 'help') return await main([rest[0], '--help'], io);
        io.out(USAGE);
        return 0;
      case undefined:
        io.err(USAGE);
        return 2;
      default:
        throw new UsageError(cmd, `unknown command '${cmd}'\n${USAGE}`);
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      io.err(`s2stress: ${e.message}`);
      return 2;
    }
    const err = e as Error;
    io.err(`s2stress: harness failure: ${err?.message ?? String(e)}`);
    return 3;
  }
}

function invokedDirectly(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

/** How long the process may take to flush and exit after its verdict before the backstops end it. */
export const EXIT_BACKSTOP_MS = 5000;

/**
 * Out-of-process backstop for the exit itself. Node's exit can deadlock in
 * native code (NodePlatform::DrainTasks or the platform's shutdown joining
 * a V8 compile task that waits for a main-thread GC): no timer of this
 * process can fire then. A detached shell watches us; if we are still its
 * parent after `ms`, it says so on stderr and kills us (exit status
 * 137: the verdict above it stands). It exits as soon as we are gone.
 */
export function armExitGuard(code: number, ms: number): void {
  if (process.platform !== 'linux' || !existsSync('/proc/self/stat')) return;
  const pid = process.pid;
  const ticks = Math.ceil(ms / 100);
  const msg = `s2stress: the process did not exit within ${ms / 1000} s of its verdict (a Node.js exit deadlock); killed; its exit code was ${code}`;
  const script = [
    'i=0',
    `while [ "$i" -lt ${ticks} ]; do`,
    '  read -r _ _ _ pp _ < /proc/$$/stat 2>/dev/null || exit 0',
    `  [ "$pp" = "${pid}" ] || exit 0`,
    '  sleep 0.1',
    '  i=$((i+1))',
    'done',
    `echo '${msg}' >&2`,
    `kill -9 ${pid}`,
  ].join('\n');
  try {
    // It shares our stderr, for the message: a reader waiting for the end of
    // it waits at most one more tick (0.1 s) after we are gone.
    spawn('/bin/sh', ['-c', script], { detached: true, stdio: ['ignore', 'ignore', 'inherit'] }).unref();
  } catch {
    // no shell: the in-process backstop is all there is
  }
}

/** Exit now with `code`, the out-of-process guard armed. */
function hardExit(code: number): never {
  armExitGuard(code, EXIT_BACKSTOP_MS);
  process.exit(code);
}

function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((res) => {
    if (stream.destroyed || stream.writableEnded) return res();
    try {
      stream.write('', () => res());
    } catch {
      res();
    }
  });
}

/**
 * The end of the process: the verdict is printed and the report written by
 * now. Destroy any pool left, flush stdout and stderr, exit explicitly. An
 * unref'd timer ends the process if flushing stalls (a reader that does not
 * read); the guard above covers a deadlock inside the exit.
 */
async function finish(code: number): Promise<void> {
  process.exitCode = code;
  setTimeout(() => hardExit(code), EXIT_BACKSTOP_MS).unref();
  await destroyLivePools();
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  hardExit(code);
}

if (invokedDirectly()) {
  quitNow = (code) => hardExit(code);
  // `s2stress ... | head` closes the pipe early: that is not a failure.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') hardExit(typeof process.exitCode === 'number' ? process.exitCode : 0);
      process.stderr.write(`s2stress: harness failure: ${e.message}\n`);
      hardExit(3);
    });
  }
  main(process.argv.slice(2)).then(
    (code) => finish(code),
    (e) => {
      process.stderr.write(`s2stress: harness failure: ${(e as Error)?.message ?? String(e)}\n`);
      return finish(3);
    },
  );
}
