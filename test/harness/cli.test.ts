/**
 * The command line as other tools use it: exit codes, clear usage errors
 * that name the flag, Ctrl-C, and a crashing worker that must not leave the
 * process hanging.
 */
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { defaultOptions, parseRunArgs } from '../../stress/options.js';

const CLI = join(__dirname, '..', '..', 'dist', 'stress', 'cli.js');

function cli(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, CI: 'true' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('s2stress CLI', () => {
  const bad: [string[], RegExp][] = [
    [['run', '--guest-mem', '3M'], /--guest-mem must be a multiple of 2M/],
    [['run', '--guest-mem', '32G'], /--guest-mem must be from 2M to 16G/],
    [['run', '--guest-mem', 'lots'], /--guest-mem takes a size such as 512M/],
    [['run', '--vcpus', '0'], /--vcpus must be a whole number from 1 to 64, got 0/],
    [['run', '--vcpus', '65'], /--vcpus must be a whole number from 1 to 64, got 65/],
    [['run', '--profile', 'v16'], /--profile must be one of v14\|v15\|fixed, got 'v16'/],
    [['run', '--bug', 'nope'], /--bug 'nope' is not a known defect; known: no-tlbi-on-dissolve/],
    [['run', '--scenario', 'nope'], /--scenario must be one of mixed\|migrate\|cancel/],
    [['run', '--mode', 'sim', '--duration', '2s'], /--duration does not apply to --mode sim.*use --ops N/],
    [['run', '--duration', '10 parsecs'], /--duration takes a duration such as 500ms, 20s or 2m/],
    [['run', '--chaos', '2'], /--chaos takes a number from 0 to 1/],
    [['run', '--frobnicate'], /unknown flag '--frobnicate'/],
    [['run', '--seed'], /--seed needs a value/],
    [['list', 'things'], /list takes scenarios\|bugs\|profiles/],
    [['teleport'], /unknown command 'teleport'/],
  ];
  for (const [args, msg] of bad) {
    it(`bad usage exits 2 naming the flag: ${args.join(' ')}`, () => {
      const r = cli(args);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
    });
  }

  it('list bugs --json gives name, description and the invariant expected to catch each', () => {
    const r = cli(['list', 'bugs', '--json']);
    expect(r.code).toBe(0);
    const bugs = JSON.parse(r.out) as { name: string; description: string; invariant: string }[];
    expect(bugs.length).toBeGreaterThanOrEqual(12);
    for (const b of bugs) {
      expect(b.name).toMatch(/^[a-z0-9-]+$/);
      expect(b.description.length).toBeGreaterThan(10);
      expect(b.invariant).toMatch(/^[a-z-]+$/);
    }
  });

  it('npm start runs the default: mixed on fixed, 4 vCPUs, 1 GiB THP guest, about 20 seconds', () => {
    const o = parseRunArgs([], { ...defaultOptions(), seed: 1 });
    expect([o.scenario, o.profile, o.vcpus, o.guestMem, o.backing, o.durationMs, o.mode]).toEqual(['mixed', 'fixed', 4, 2 ** 30, 'thp', 20_000, 'threads']);
  });

  it('a crashing worker ends the run with exit 3 and the cause, and the process exits by itself', () => {
    const r = cli(['run', '--crash-actor', 'migrator', '--guest-mem', '16M', '--vcpus', '2', '--duration', '30s', '--seed', '1']);
    expect(r.code).toBe(3);
    expect(r.out + r.err).toMatch(/worker migrator failed: injected crash/);
  });

  it('a failing run exits 1 and writes a JSON report with the rerun command', () => {
    const file = join(require('node:os').tmpdir(), `s2stress-cli-${process.pid}.json`);
    const r = cli(['run', '--mode', 'sim', '--profile', 'v14', '--scenario', 'selftest-dirty-log', '--guest-mem', '8M', '--vcpus', '2', '--ops', '30000', '--seed', '5', '--json', file, '--quiet']);
    expect(r.code, r.out + r.err).toBe(1);
    const rep = JSON.parse(require('node:fs').readFileSync(file, 'utf8'));
    expect(rep.result).toBe('fail');
    expect(rep.violations[0].invariant).toBe('selftest-dirty-log');
    expect(rep.replay).toContain('--seed 5');
    expect(rep.schedule.hash).toMatch(/^[0-9a-f]{8}-/);
    const again = cli(['replay', file, '--quiet']);
    expect(again.out).toMatch(/replay: exact/);
    expect(again.code).toBe(1);
  });

  it('Ctrl-C stops the run cleanly and still prints the partial report', async () => {
    const child = spawn(process.execPath, [CLI, 'run', '--guest-mem', '16M', '--vcpus', '2', '--duration', '120s', '--seed', '2'], {
      env: { ...process.env, CI: 'true' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    const firstStatus = new Promise<void>((resolve) => {
      child.stderr.on('data', (d) => {
        err += d;
        if (/accesses\/s/.test(err)) resolve();
      });
    });
    await firstStatus; // a status line proves the run is under way
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(0);
    expect(err).toMatch(/interrupted, stopping the run/);
    expect(out).toMatch(/s2stress PASS \(interrupted\)/);
    expect(out).toMatch(/accesses/);
  }, 60_000);
});
