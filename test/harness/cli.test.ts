/**
 * The command line as other tools use it: exit codes, clear usage errors
 * that name the flag and what is accepted (one case per class of bad
 * input), help, the rerun line, the live status and the lock table, the
 * JSON report, a crashing worker, a run that did no work.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT_CODES_HELP, RUN_FLAGS, RUN_FLAGS_DETAIL, RUN_FLAGS_HELP, defaultOptions, parseRunArgs, replayCommand, runArgsOf, type RunOptions } from '../../stress/options.js';
import { RUN_USAGE, USAGE, main, redrawnStatus, statusStyle } from '../../stress/cli.js';
import { formatLockTableFor, formatSummary, type Report } from '../../stress/report.js';
import { missingWork, statusLine } from '../../stress/run.js';
import { createVm } from '../../src/vm.js';
import { toModelConfig } from '../../stress/options.js';
import type { LockReport, TimeStats } from '../../src/sync/lockstat.js';

const ROOT = join(__dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'stress', 'cli.js');

function cli(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, CI: 'true' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The CLI in this process (no run starts for bad input: fast). */
export async function inproc(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const tmp = (): string => mkdtempSync(join(tmpdir(), 's2cli-'));

describe('bad input: exit 2, the message names the flag and what it accepts', () => {
  const bad: [string, string[], RegExp][] = [
    ['size not a multiple', ['run', '--guest-mem', '3M'], /--guest-mem must be a multiple of 2M/],
    ['size out of range', ['run', '--guest-mem', '32G'], /--guest-mem must be from 2M to 16G/],
    ['size not a size', ['run', '--guest-mem', 'lots'], /--guest-mem takes a size such as 512M/],
    ['whole number out of range', ['run', '--vcpus', '0'], /--vcpus must be a whole number from 1 to 64, got 0/],
    ['fraction for a whole number: the real range', ['run', '--vcpus', '1.5'], /--vcpus takes a whole number from 1 to 64, got '1.5'/],
    ['hex for a whole number', ['run', '--vcpus', '0x10'], /--vcpus takes a whole number from 1 to 64, got '0x10'/],
    ['exponent for a whole number', ['run', '--ops', '1e3'], /--ops takes a whole number from 1 to 1000000000000, got '1e3'/],
    ['seed too large', ['run', '--seed', '4294967296'], /--seed must be a whole number from 0 to 4294967295/],
    ['exponent for a number', ['run', '--chaos', '1e-1'], /--chaos takes a number from 0 to 1, got '1e-1'/],
    ['number out of range', ['run', '--write-pct', '101'], /--write-pct takes a number from 0 to 100/],
    ['not one of', ['run', '--profile', 'v16'], /--profile must be one of v14\|4\.0\|.*\|5\.1\|5\.18-rc\|.*\|6\.10\|v15\|fixed\|modern, got 'v16'/],
    ['unknown bug', ['run', '--bug', 'nope'], /--bug 'nope' is not a known defect; known: no-tlbi-on-dissolve/],
    ['unknown scenario', ['run', '--scenario', 'nope'], /--scenario must be one of mixed\|migrate\|cancel/],
    ['a flag is not a value', ['run', '--json', '--quiet'], /--json needs a value, got the flag '--quiet'/],
    ['missing value', ['run', '--seed'], /--seed needs a value/],
    ['a switch with a value', ['run', '--quiet=1'], /--quiet is a switch and takes no value/],
    ['repeated flag', ['run', '--seed', '1', '--seed', '2'], /--seed is given more than once \(only --bug may be repeated\)/],
    ['--duration with --ops', ['run', '--duration', '2s', '--ops', '100'], /--duration and --ops .* give one of them/],
    ['--duration in sim', ['run', '--mode', 'sim', '--duration', '2s'], /--duration does not apply to --mode sim.*use --ops N/],
    ['--chaos in sim', ['run', '--chaos', '0.1', '--mode', 'sim'], /--chaos does not apply to --mode sim \(it is a threads-mode flag\)/],
    ['--check-every in sim', ['run', '--mode', 'sim', '--check-every', '1s'], /--check-every does not apply to --mode sim/],
    ['--watchdog in sim', ['run', '--mode', 'sim', '--watchdog', '5s'], /--watchdog does not apply to --mode sim/],
    ['--sched in threads', ['run', '--sched', 'pct'], /--sched does not apply to --mode threads \(it is a sim-mode flag\)/],
    ['--pct-depth in threads', ['run', '--pct-depth', '4'], /--pct-depth does not apply to --mode threads/],
    ['--check-steps in threads', ['run', '--check-steps', '500'], /--check-steps does not apply to --mode threads/],
    ['--stop-step in threads', ['run', '--stop-step', '1024'], /--stop-step does not apply to --mode threads/],
    ['--sim-cpu in threads', ['run', '--sim-cpu', '0'], /--sim-cpu does not apply to --mode threads \(it is a sim-mode flag\)/],
    ['--sim-cpu not a CPU here', ['run', '--mode', 'sim', '--sim-cpu', '99999'], /--sim-cpu takes auto, off or a CPU this process may run on .*got '99999'/],
    ['--sim-cpu a word', ['run', '--mode', 'sim', '--sim-cpu', 'fastest'], /--sim-cpu takes auto, off or a CPU this process may run on.*got 'fastest'/],
    ['--pct-depth without pct', ['run', '--mode', 'sim', '--pct-depth', '4'], /--pct-depth applies to --sched pct only/],
    ['--lock-hold-sample without statistics', ['run', '--no-lock-stats', '--lock-hold-sample', '4'], /--lock-hold-sample does not apply with --no-lock-stats/],
    ['--crash-actor names no actor', ['run', '--vcpus', '2', '--crash-actor', 'vcpu2'], /--crash-actor vcpu2 names no actor of this run: the vCPUs are vcpu0 to vcpu1/],
    ['--crash-actor not an actor', ['run', '--crash-actor', 'kernel'], /--crash-actor takes vcpuN \(N below --vcpus\), hostmm or migrator/],
    ['--watchdog too short', ['run', '--watchdog', '1ms'], /--watchdog must be from 100ms to 1h, got '1ms'/],
    ['--watchdog too long', ['run', '--watchdog', '600h'], /--watchdog must be from 100ms to 1h, got '600h'/],
    ['--duration below 1 ms', ['run', '--duration', '0.4ms'], /--duration must be from 1ms to 168h, got '0.4ms'/],
    ['--duration not a duration', ['run', '--duration', '10 parsecs'], /--duration takes a duration from 1ms to 168h such as 500ms/],
    ['--check-every too long', ['run', '--check-every', '2h'], /--check-every must be from 1ms to 1h/],
    ['unknown flag', ['run', '--frobnicate'], /unknown flag '--frobnicate' for run; accepted:/],
    ['stray argument', ['run', 'fast'], /unknown argument 'fast' for run/],
    ['--json into a missing directory', ['run', '--json', '/nonexistent-dir/r.json'], /--json '\/nonexistent-dir\/r.json' cannot be written: the directory '\/nonexistent-dir' does not exist/],
    ['--json onto a directory', ['run', '--json', tmpdir()], /--json '.*' cannot be written: it is a directory/],
    ['list of what', ['list', 'things'], /list takes scenarios\|bugs\|fixes\|profiles/],
    ['unknown command', ['teleport'], /unknown command 'teleport'/],
    ['replay with a run flag', ['replay', 'r.json', '--seed', '3'], /replay takes only --json, --html, --quiet, --verbose, --wide and --sim-cpu.*--seed would change the run/],
    ['replay without a file', ['replay'], /replay needs a report file/],
    ['zoo flag without value', ['zoo', '--seeds', '--mode'], /--seeds needs a value/],
    ['--dirty-log not one of', ['run', '--dirty-log', 'log'], /--dirty-log must be one of bitmap\|ring, got 'log'/],
    ['--dirty-log ring before 6.2', ['run', '--profile', '5.18', '--dirty-log', 'ring'], /--dirty-log ring needs a kernel with the dirty ring on arm64: profile 6\.2 or later \(6\.2, 6\.5, 6\.7, 6\.10, modern\), got --profile 5\.18/],
    ['--dirty-log ring on the default profile', ['run', '--dirty-log', 'ring'], /--dirty-log ring needs .* profile 6\.2 or later .* got --profile fixed/],
    ['--dirty-ring-size without the ring', ['run', '--profile', 'modern', '--dirty-ring-size', '512'], /--dirty-ring-size applies to --dirty-log ring only, got --dirty-log bitmap/],
    ['--manual-protect with the ring', ['run', '--profile', 'modern', '--dirty-log', 'ring', '--manual-protect', 'on'], /--manual-protect on applies to the bitmap.*use --manual-protect off/],
    ['--dirty-ring-size not a power of two', ['run', '--profile', 'modern', '--dirty-log', 'ring', '--dirty-ring-size', '300'], /--dirty-ring-size must be a power of two from 256 .* to 65536 .* got 300/],
    ['--dirty-ring-size below a page', ['run', '--profile', 'modern', '--dirty-log', 'ring', '--dirty-ring-size', '128'], /--dirty-ring-size must be a power of two from 256/],
    ['--dirty-ring-size above the kernel limit', ['run', '--profile', 'modern', '--dirty-log', 'ring', '--dirty-ring-size', '131072'], /--dirty-ring-size must be a power of two from 256 .* to 65536/],
    ['--dirty-log ring in a scenario without it', ['run', '--profile', 'modern', '--dirty-log', 'ring', '--scenario', 'teardown'], /--dirty-log ring is not modelled in --scenario teardown; it runs in mixed, migrate/],
  ];
  for (const [what, args, msg] of bad) {
    it(`${what}: ${args.join(' ')}`, async () => {
      const r = await inproc(args);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
    });
  }

  it('the real process exits 2 with the message, no stack trace, and leaves no file behind', () => {
    const dir = tmp();
    for (const args of [['run', '--vcpus', '1.5'], ['run', '--json', '--quiet'], ['run', '--mode', 'sim', '--chaos', '0.5']]) {
      const r = cli(args);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(/^s2stress: --(vcpus|json|chaos) /);
      expect(r.err).not.toMatch(/\n\s+at /);
    }
    expect(existsSync(join(process.cwd(), '--quiet'))).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--bug may be repeated; every other flag may be given once, in any order', () => {
    const o = parseRunArgs(['--bug', 'no-mark-dirty', '--seed', '4', '--bug', 'harvest-no-wp', '--mode', 'sim', '--sched', 'pct', '--pct-depth', '5']);
    expect(o.bugs).toEqual(['no-mark-dirty', 'harvest-no-wp']);
    expect([o.mode, o.sched, o.pctDepth, o.seed]).toEqual(['sim', 'pct', 5, 4]);
    expect(parseRunArgs(['--pct-depth', '5', '--sched', 'pct', '--mode', 'sim', '--seed', '1']).pctDepth).toBe(5);
  });
});

describe('help and usage', () => {
  for (const args of [['help'], ['--help'], ['-h'], ['run', '--help'], ['help', 'run'], ['zoo', '--help'], ['replay', '--help'], ['list', '--help'], ['bench', '--help'], ['shrink', '--help']]) {
    it(`${args.join(' ')} prints usage and exits 0`, async () => {
      const r = await inproc(args);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/usage|s2stress bench/);
    });
  }

  it('the usage fits 120 columns', async () => {
    for (const args of [['help'], ['run', '--help'], ['zoo', '--help'], ['shrink', '--help']]) {
      const r = await inproc(args);
      for (const l of r.out.split('\n')) expect(l.length, l).toBeLessThanOrEqual(120);
    }
  });

  it('no command prints usage on stderr and exits 2', async () => {
    const r = await inproc([]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^usage:/);
  });

  it('the usage lists every flag the README lists, and the README every run flag', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = /## Using it\s+```\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const readmeFlags = new Set(block.match(/--[a-z][a-z-]*/g) ?? []);
    expect(readmeFlags.size).toBeGreaterThan(20);
    const usage = `${USAGE}\n${RUN_USAGE}`;
    for (const f of readmeFlags) expect(usage, f).toContain(f);
    for (const f of Object.keys(RUN_FLAGS)) {
      expect(readmeFlags.has(f), `README lacks ${f}`).toBe(true);
      expect(RUN_FLAGS_HELP, f).toContain(f);
      expect(RUN_FLAGS_DETAIL, f).toContain(f);
    }
  });

  it('the exit codes are documented in the usage and the README', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const code of ['0', '1', '2', '3', '129', '130', '143']) {
      expect(EXIT_CODES_HELP).toMatch(new RegExp(`\\b${code}\\b`));
      expect(readme).toMatch(new RegExp(`\`${code}\``));
    }
    expect(USAGE).toContain(EXIT_CODES_HELP);
  });
});

describe('the rerun line', () => {
  const runFields = (o: RunOptions): Partial<RunOptions> => ({ ...o, json: null, quiet: false, verbose: false, wide: false });

  it('carries every flag that changes a threads run, and parses back to the same run', () => {
    const o = parseRunArgs(['--watchdog', '2s', '--check-every', '250ms', '--lock-hold-sample', '1', '--crash-actor', 'hostmm', '--chaos', '0.25', '--ops', '5000', '--seed', '0', '--json', 'x.json', '--quiet']);
    const line = replayCommand(o);
    for (const f of ['--watchdog 2s', '--check-every 250ms', '--lock-hold-sample 1', '--crash-actor hostmm', '--chaos 0.25', '--ops 5000', '--seed 0']) expect(line).toContain(f);
    for (const f of ['--sched', '--pct-depth', '--check-steps', '--stop-step', '--duration', '--json', '--quiet']) expect(line).not.toContain(f);
    expect(runFields(parseRunArgs(line.split(' ').slice(2)))).toEqual(runFields(o));
    const off = replayCommand(parseRunArgs(['--no-lock-stats', '--seed', '1']));
    expect(off).toContain('--no-lock-stats');
    expect(off).not.toContain('--lock-hold-sample');
  });

  it('carries every flag that changes a sim run and none that does not apply', () => {
    const o = parseRunArgs(['--mode', 'sim', '--sched', 'pct', '--pct-depth', '4', '--check-steps', '700', '--ops', '3000', '--seed', '9']);
    const line = replayCommand(o);
    for (const f of ['--sched pct', '--pct-depth 4', '--check-steps 700', '--ops 3000', '--seed 9']) expect(line).toContain(f);
    for (const f of ['--watchdog', '--check-every', '--chaos', '--duration']) expect(line).not.toContain(f);
    expect(runFields(parseRunArgs(line.split(' ').slice(2)))).toEqual(runFields(o));
    expect(replayCommand(parseRunArgs(['--mode', 'sim', '--seed', '1']))).not.toContain('--pct-depth');
  });

  it('carries --dirty-log ring and --dirty-ring-size, and leaves both out in bitmap mode', () => {
    const o = parseRunArgs(['--profile', '6.2', '--dirty-log', 'ring', '--dirty-ring-size', '1024', '--mode', 'sim', '--seed', '2']);
    const line = replayCommand(o);
    expect(line).toContain('--dirty-log ring --dirty-ring-size 1024');
    expect(runFields(parseRunArgs(line.split(' ').slice(2)))).toEqual(runFields(o));
    expect(toModelConfig(o)).toMatchObject({ dirtyLog: 'ring', dirtyRingSize: 1024 });
    const plain = parseRunArgs(['--profile', '6.2', '--seed', '2']);
    expect(replayCommand(plain)).not.toContain('--dirty-');
    expect(toModelConfig(plain).dirtyLog).toBeUndefined();
    expect(createVm(toModelConfig({ ...plain, guestMem: 2 * 1024 * 1024 })).layout.dirtyRingSize).toBe(0);
  });

  it('writes exact values for replay (bytes, ms) and readable ones in the rerun line', () => {
    const o = parseRunArgs(['--guest-mem', '16M', '--duration', '1500ms', '--seed', '3']);
    expect(runArgsOf(o, false).join(' ')).toContain('--guest-mem 16777216 --backing thp');
    expect(runArgsOf(o, false).join(' ')).toContain('--duration 1500ms');
    expect(replayCommand(o)).toContain('--guest-mem 16M');
  });
});

describe('output', () => {
  it('the status line cadence follows the stream: a terminal is redrawn ~2/s, a log gets a line every 5 s', () => {
    expect(statusStyle({ isTTY: true }, {})).toEqual({ redraw: true, everyMs: 500 });
    expect(statusStyle({ isTTY: true }, { CI: 'true' })).toEqual({ redraw: false, everyMs: 5000 });
    expect(statusStyle({ isTTY: false }, {})).toEqual({ redraw: false, everyMs: 5000 });
    expect(statusStyle({}, {})).toEqual({ redraw: false, everyMs: 5000 });
  });

  it('a redrawn status line fits the terminal width', () => {
    const line = 'x'.repeat(300);
    for (const cols of [40, 80, 132]) {
      const s = redrawnStatus(line, cols);
      expect(s.startsWith('\r')).toBe(true);
      expect(s.endsWith('\x1b[K')).toBe(true);
      expect(s.length - 1 - 3).toBe(cols - 1);
    }
    expect(redrawnStatus('short', 80)).toBe('\rshort\x1b[K');
  });

  it('status counters read one way: migrations done and cancelled apart', () => {
    const kvm = createVm(toModelConfig({ ...defaultOptions(), vcpus: 1, guestMem: 2 * 1024 * 1024 }));
    const line = statusLine(kvm, 1500, 1234.4, 56, 0);
    expect(line).toMatch(/^\[1\.5s\] 1234 accesses\/s, 56 faults\/s, migrations 0 done, 0 cancelled, 0 rounds, violations 0$/);
  });

  const ts = (x: number): TimeStats => ({ min: x, max: x * 1000, total: x * 1e6, avg: x * 10, p50: x, p99: x * 100 });
  const big: LockReport = {
    kind: 'ticket',
    enabled: true,
    holdSampleEvery: 256,
    acquisitions: 987654321,
    contentions: 123456789,
    bounces: 5,
    conBounces: 7,
    waitNs: ts(9e8),
    holdNs: ts(9e8),
    sites: ['fault', 'notifier-start', 'change-pte'].map((site) => ({ site, acquisitions: 987654321, contentions: 123456789, bounces: 5, conBounces: 7, waitNs: ts(9e8), holdNs: ts(9e8) })),
  } as unknown as LockReport;

  it('the lock table fits 120 columns by default; --wide keeps every column', () => {
    for (const mode of ['threads', 'sim']) {
      const t = formatLockTableFor(big, mode);
      for (const l of t.split('\n')) expect(l.length, l).toBeLessThanOrEqual(120);
      expect(t).toMatch(/notifier-start/);
    }
    const wide = formatLockTableFor(big, 'threads', true);
    for (const col of ['con-bounces', 'waittime-total', 'acq-bounces', 'holdtime-total']) expect(wide).toContain(col);
    expect(Math.max(...wide.split('\n').map((l) => l.length))).toBeGreaterThan(120);
  });

  it('in sim mode the lock times say they are serialized time', () => {
    expect(formatLockTableFor(big, 'sim')).toMatch(/serialized/);
    expect(formatLockTableFor(big, 'sim', true)).toMatch(/serialized/);
    expect(formatLockTableFor(big, 'threads')).not.toMatch(/serialized/);
  });
});

describe('runs', () => {
  it('a crashing worker ends the run with exit 3 and the cause; its stack is in the report and printed with --verbose', () => {
    const dir = tmp();
    const file = join(dir, 'crash.json');
    const args = ['run', '--crash-actor', 'migrator', '--guest-mem', '16M', '--vcpus', '2', '--duration', '30s', '--seed', '1'];
    const r = cli([...args, '--json', file]);
    expect(r.code, r.out + r.err).toBe(3);
    expect(r.out).toMatch(/HARNESS FAILURE: worker migrator failed: injected crash/);
    expect(r.out).toMatch(/--verbose prints it/);
    expect(r.out).not.toMatch(/\n\s+at /);
    const rep = JSON.parse(readFileSync(file, 'utf8')) as Report;
    expect(rep.error).toMatch(/^worker migrator failed: injected crash.*\n\s+at /);
    expect(formatSummary(rep, { verbose: true })).toMatch(/HARNESS FAILURE: worker migrator failed[^\n]*\n\s+at /);
    const v = cli(['run', '--crash-actor', 'migrator', '--guest-mem', '8M', '--vcpus', '2', '--mode', 'sim', '--ops', '100000', '--seed', '1', '--verbose']);
    expect(v.code, v.out + v.err).toBe(3);
    expect(v.out).toMatch(/worker migrator failed: injected crash[^\n]*\n\s+at /);
  });

  it('a failing run exits 1 and writes its JSON report atomically, with the rerun command; replay is exact', () => {
    const dir = tmp();
    const file = join(dir, 'fail.json');
    const r = cli(['run', '--mode', 'sim', '--profile', 'v14', '--scenario', 'selftest-dirty-log', '--guest-mem', '8M', '--vcpus', '2', '--ops', '30000', '--seed', '5', '--json', file, '--quiet']);
    expect(r.code, r.out + r.err).toBe(1);
    expect(readdirSync(dir)).toEqual(['fail.json']); // no temporary file left
    const rep = JSON.parse(readFileSync(file, 'utf8'));
    expect(rep.result).toBe('fail');
    // v14's findings: the lost dirty pages, and the block over a PTE table.
    expect(['selftest-dirty-log', 'migration-equal', 'break-before-make', 'table-conservation']).toContain(rep.violations[0].invariant);
    expect(rep.replay).toContain('--seed 5');
    expect(rep.schedule.hash).toMatch(/^[0-9a-f]{8}-/);
    const again = cli(['replay', file, '--quiet']);
    expect(again.out).toMatch(/replay: exact/);
    expect(again.code).toBe(1);
  });

  it('a run that did no work is no pass: exit 3, "ran no work", in the report too', async () => {
    const dir = tmp();
    const file = join(dir, 'nowork.json');
    const r = await inproc(['run', '--mode', 'sim', '--scenario', 'migrate', '--guest-mem', '8M', '--vcpus', '1', '--ops', '1', '--seed', '1', '--json', file, '--quiet']);
    expect(r.code, r.out + r.err).toBe(3);
    expect(r.out).toMatch(/ran no work: no migration completed or cancelled \(scenario migrate; 1 guest accesses\) in --ops 1; give the run more --ops/);
    const rep = JSON.parse(readFileSync(file, 'utf8')) as Report;
    expect([rep.result, rep.exitCode]).toEqual(['fail', 3]);
    expect(rep.error).toMatch(/^ran no work: /);
    // no guest access at all (a VM nobody ran)
    const kvm = createVm(toModelConfig({ ...defaultOptions(), vcpus: 1, guestMem: 2 * 1024 * 1024 }));
    expect(missingWork(kvm, { ...defaultOptions(), scenario: 'mixed' })).toBe('no guest access');
  });

  it('the exit backstop ends a process whose main thread is stuck after its verdict, and says so', () => {
    // The main thread blocks for good (as in Node's exit deadlock): no timer of its own can fire.
    const script = `import(${JSON.stringify(CLI)}).then((m) => { m.armExitGuard(7, 1000); console.error('armed'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); })`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toMatch(/armed/);
    expect(r.signal, r.stderr).toBe('SIGKILL');
    expect(r.stderr).toMatch(/s2stress: the process did not exit within 1 s of its verdict \(a Node\.js exit deadlock\); killed; its exit code was 7/);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it('.gitignore ignores no tracked file', () => {
    if (!existsSync(join(ROOT, '.git'))) return;
    const out = execFileSync('git', ['ls-files', '-ci', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' });
    expect(out.trim()).toBe('');
  });
});
