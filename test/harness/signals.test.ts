/**
 * Signals end a run cleanly, in a real child process: every worker
 * stopped, the partial report printed and written with interrupted: true,
 * exit 128 + the signal's number, or 1 when a violation was found first.
 * The test signals only once the child says every actor is running (the
 * `s2stress: running:` line on stderr): a barrier on its output, no sleep.
 */
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Report } from '../../stress/report.js';

const CLI = join(__dirname, '..', '..', 'dist', 'stress', 'cli.js');

interface Child {
  /** Resolves once stderr matches. */
  waitFor(re: RegExp): Promise<void>;
  kill(sig: NodeJS.Signals): void;
  exit: Promise<number | null>;
  out(): string;
  err(): string;
}

function start(args: string[]): Child {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CI: 'true' } });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => {
    err += d;
    for (const w of waiters.splice(0)) {
      if (w.re.test(err)) w.resolve();
      else waiters.push(w);
    }
  });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return {
    waitFor: (re) =>
      new Promise<void>((resolve, reject) => {
        if (re.test(err)) return resolve();
        waiters.push({ re, resolve });
        exit.then(() => reject(new Error(`exited before ${re}: ${out}\n${err}`)));
      }),
    kill: (sig) => child.kill(sig),
    exit,
    out: () => out,
    err: () => err,
  };
}

const RUNNING = /s2stress: running: /;
const tmp = (): string => mkdtempSync(join(tmpdir(), 's2sig-'));

describe('signals', () => {
  it('SIGTERM (threads): clean stop, partial report printed and written with interrupted: true, exit 143', async () => {
    const file = join(tmp(), 'term.json');
    const c = start(['run', '--guest-mem', '16M', '--vcpus', '2', '--duration', '120s', '--seed', '2', '--json', file]);
    await c.waitFor(RUNNING);
    c.kill('SIGTERM');
    expect(await c.exit, c.out() + c.err()).toBe(143);
    expect(c.err()).toMatch(/SIGTERM received, stopping the run; the partial report follows/);
    expect(c.out()).toMatch(/s2stress INTERRUPTED by SIGTERM \(no violation before it\)/);
    expect(c.out()).toMatch(/rerun: s2stress run .*--duration 2m --seed 2/);
    const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
    expect([r.interrupted, r.signal, r.exitCode, r.result, r.error]).toEqual([true, 'SIGTERM', 143, 'pass', null]);
    expect(r.elapsedMs).toBeLessThan(120_000);
  }, 120_000);

  it('SIGINT (threads): exit 130, the report written', async () => {
    const file = join(tmp(), 'int.json');
    const c = start(['run', '--guest-mem', '16M', '--vcpus', '2', '--duration', '120s', '--seed', '3', '--json', file]);
    await c.waitFor(RUNNING);
    c.kill('SIGINT');
    expect(await c.exit, c.out() + c.err()).toBe(130);
    const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
    expect([r.interrupted, r.signal, r.exitCode]).toEqual([true, 'SIGINT', 130]);
  }, 120_000);

  it('SIGHUP (sim): exit 129; the report records the step the run stopped at, and replay stops there, exactly', async () => {
    const dir = tmp();
    const file = join(dir, 'hup.json');
    const c = start(['run', '--mode', 'sim', '--guest-mem', '8M', '--vcpus', '2', '--ops', '100000000', '--seed', '7', '--json', file]);
    await c.waitFor(RUNNING);
    c.kill('SIGHUP');
    expect(await c.exit, c.out() + c.err()).toBe(129);
    const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
    expect([r.interrupted, r.signal, r.exitCode]).toEqual([true, 'SIGHUP', 129]);
    const at = r.schedule!.stoppedAtStep!;
    expect(at % 1024, `stopped at ${at}`).toBe(0);
    expect(r.replay).toContain(`--stop-step ${at}`);
    const again = spawnSync(process.execPath, [CLI, 'replay', file, '--quiet', '--json', join(dir, 'again.json')], { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
    expect(again.stdout, again.stderr).toMatch(new RegExp(`replay: exact \\(stopped at step ${at}, where the interrupted run stopped; schedule hash ${r.schedule!.hash}`));
    expect(again.status).toBe(0);
    const rr = JSON.parse(readFileSync(join(dir, 'again.json'), 'utf8')) as Report;
    expect(rr.schedule).toEqual(r.schedule);
    expect(rr.counters).toEqual(r.counters);
  }, 120_000);

  // Seed 3 of this configuration leaks a table before step 1024 (the first
  // step a signal can take effect at); with no periodic check, the check of
  // the stopped world finds it whenever the signal comes.
  const LEAKS = ['run', '--mode', 'sim', '--profile', 'fixed', '--bug', 'leak-on-dissolve', '--scenario', 'log-toggle', '--guest-mem', '2M', '--vcpus', '1', '--ops', '1000000000', '--check-steps', '1000000000000', '--seed', '3'];

  it('a violation found before the signal: exit 1, interrupted: true', async () => {
    const file = join(tmp(), 'viol.json');
    const c = start([...LEAKS, '--json', file]);
    await c.waitFor(RUNNING);
    c.kill('SIGTERM');
    expect(await c.exit, c.out() + c.err()).toBe(1);
    expect(c.out()).toMatch(/s2stress FAIL \(interrupted by SIGTERM\)/);
    const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
    expect([r.interrupted, r.signal, r.exitCode, r.result]).toEqual([true, 'SIGTERM', 1, 'fail']);
    expect(r.violations[0].invariant).toBe('table-conservation');
  }, 120_000);

  it('--json that cannot be written at the end of a failing run: exit 1 stands, the message names --json and the path', async () => {
    const dir = tmp();
    const file = join(dir, 'gone', 'r.json');
    mkdirSync(join(dir, 'gone'));
    const c = start([...LEAKS, '--json', file]);
    await c.waitFor(RUNNING);
    rmSync(join(dir, 'gone'), { recursive: true });
    c.kill('SIGTERM');
    expect(await c.exit, c.out() + c.err()).toBe(1);
    expect(c.err()).toContain(`s2stress: cannot write the report to --json '${file}': ENOENT`);
    expect(existsSync(file)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  }, 120_000);

  it('--json that cannot be written at the end of a passing run: exit 3, naming --json and the path', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'gone'));
    const file = join(dir, 'gone', 'r.json');
    const c = start(['run', '--guest-mem', '16M', '--vcpus', '2', '--duration', '2s', '--seed', '4', '--json', file]);
    await c.waitFor(RUNNING); // the run lasts 2 s from here
    rmSync(join(dir, 'gone'), { recursive: true });
    expect(await c.exit, c.out() + c.err()).toBe(3);
    expect(c.out()).toMatch(/s2stress PASS/);
    expect(c.err()).toContain(`s2stress: cannot write the report to --json '${file}': ENOENT`);
  }, 120_000);
});
