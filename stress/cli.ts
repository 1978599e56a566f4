#!/usr/bin/env node
/**
 * s2stress command line (DESIGN.md section 5).
 * Exit codes: 0 pass; 1 an invariant was violated; 2 bad usage or
 * configuration (the message names the flag and what is accepted); 3 the
 * harness itself failed, with the cause.
 */
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError, PROFILES } from '../src/config.js';
import { BUGS, PROFILE_INFO } from '../src/profiles.js';
import { formatLockTable } from '../src/sync/lockstat.js';
import { SCENARIOS } from './scenarios.js';
import { RUN_FLAGS_HELP, type RunOptions, parseRunArgs } from './options.js';
import { runThreads } from './run.js';
import { runSim } from './simrun.js';
import { formatSummary, type Report } from './report.js';
import { SCHEDULE_VERSION } from '../src/sim/sched.js';

export const USAGE = `usage:
  ${RUN_FLAGS_HELP}
  s2stress replay REPORT.json     re-run the run a report describes (exact in sim mode)
  s2stress list scenarios|bugs|profiles [--json]
  s2stress bench [...]            micro and scaling benchmarks
  s2stress zoo [...]              run every --bug and print the kill table`;

export class UsageError extends ConfigError {}

type Out = { out: (s: string) => void; err: (s: string) => void };
const stdio: Out = { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') };

function listCommand(args: string[], io: Out): number {
  const json = args.includes('--json');
  const what = args.filter((a) => a !== '--json')[0];
  let rows: Record<string, string>[];
  switch (what) {
    case 'scenarios':
      rows = SCENARIOS.map((s) => ({ name: s.name, description: s.description }));
      break;
    case 'bugs':
      rows = BUGS.map((b) => ({ name: b.name, description: b.description, invariant: b.expected, origin: b.origin }));
      break;
    case 'profiles':
      rows = PROFILES.map((p) => ({ name: p, description: PROFILE_INFO[p] }));
      break;
    default:
      throw new UsageError('list', `list takes scenarios|bugs|profiles, got '${what ?? ''}'`);
  }
  if (json) io.out(JSON.stringify(rows, null, 2));
  else {
    const w = Math.max(...rows.map((r) => r.name.length));
    for (const r of rows) {
      const extra = r.invariant ? `  [caught by ${r.invariant}]` : '';
      io.out(`${r.name.padEnd(w)}  ${r.description}${extra}`);
    }
  }
  return 0;
}

async function runAndReport(o: RunOptions, io: Out): Promise<Report> {
  const ac = new AbortController();
  let sigints = 0;
  const onSigint = (): void => {
    sigints++;
    if (sigints === 1) {
      io.err('\ns2stress: interrupted, stopping the run (Ctrl-C again to quit at once)');
      ac.abort();
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSigint);
  const tty = process.stderr.isTTY && !process.env.CI;
  let statusShown = false;
  try {
    const runner = o.mode === 'sim' ? runSim : runThreads;
    const report = await runner(o, {
      signal: ac.signal,
      onStatus: o.quiet
        ? undefined
        : (line) => {
            if (tty) {
              process.stderr.write(`\r${line.padEnd(110).slice(0, 140)}`);
              statusShown = true;
            } else io.err(line);
          },
    });
    if (statusShown) process.stderr.write('\n');
    return report;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

function emit(report: Report, o: RunOptions, io: Out): void {
  if (o.quiet) {
    const first = report.violations[0];
    io.out(
      `s2stress ${report.result}${first ? `: [${first.invariant}] ${first.message}` : ''}${report.error ? `: ${report.error}` : ''}${report.result === 'fail' ? `\n  rerun: ${report.replay}` : ''}`,
    );
  } else {
    io.out(formatSummary(report));
    if (report.lock.sites.length) io.out(formatLockTable(report.lock));
  }
  if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2));
}

async function replayCommandMain(args: string[], io: Out): Promise<number> {
  const file = args[0];
  if (!file) throw new UsageError('replay', 'replay needs a report file: s2stress replay REPORT.json');
  let prior: Report;
  try {
    prior = JSON.parse(readFileSync(file, 'utf8')) as Report;
  } catch (e) {
    throw new UsageError('replay', `cannot read report '${file}': ${(e as Error).message}`);
  }
  if (!prior || typeof prior !== 'object' || !prior.config) throw new UsageError('replay', `'${file}' is not an s2stress report (no config)`);
  if (prior.config.mode === 'sim') {
    // The same seed means another run once the strategies or the seeded workloads change.
    const version = prior.schedule?.version ?? 1;
    if (version !== SCHEDULE_VERSION) {
      throw new UsageError(
        'replay',
        `'${file}' is a sim-mode report of schedule version ${version}, and this s2stress runs schedule version ${SCHEDULE_VERSION}: the same seed now gives a different run, so it cannot be replayed exactly. Rerun with the s2stress that wrote it, or search afresh with: ${prior.replay ?? 's2stress run ...'}`,
      );
    }
  }
  const extra = args.slice(1);
  const o = parseRunArgs([...extra], { ...prior.config, json: null, seed: prior.config.seed });
  if (o.mode === 'threads') {
    io.err('s2stress replay: threads mode reruns the same seeds and configuration; thread interleavings are not reproducible, so the failure may not recur (sim mode replays exactly)');
  }
  const report = await runAndReport(o, io);
  emit(report, o, io);
  if (o.mode === 'sim' && prior.schedule) {
    const same = report.schedule?.hash === prior.schedule.hash;
    const sameFirst = report.violations[0]?.message === prior.violations[0]?.message;
    io.out(
      same && sameFirst
        ? `replay: exact (schedule hash ${report.schedule?.hash}, ${report.violations.length ? 'same first violation' : 'no violation, as before'})`
        : `replay: DIVERGED (schedule hash ${prior.schedule.hash} -> ${report.schedule?.hash}${sameFirst ? '' : ', different violations'})`,
    );
    if (!same || !sameFirst) return 3;
  }
  return report.exitCode;
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
        const o = parseRunArgs(rest);
        const report = await runAndReport(o, io);
        emit(report, o, io);
        return report.exitCode;
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
      case 'zoo': {
        const mod = await optionalModule(new URL('./zoo.js', import.meta.url).href);
        if (!mod) throw new UsageError('zoo', 'zoo is not available in this build');
        return await mod.main(rest, io);
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out(USAGE);
        return cmd === undefined ? 2 : 0;
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

if (invokedDirectly()) {
  // `s2stress ... | head` closes the pipe early: that is not a failure.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`s2stress: harness failure: ${(e as Error).message}\n`);
      process.exitCode = 3;
    },
  );
}
