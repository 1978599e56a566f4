/**
 * `replay` validates a report's configuration with exactly the validation
 * `run` applies (each bad field: exit 2 naming it), replays seed 0 exactly,
 * and replays an interrupted sim run to the step it stopped at.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../stress/cli.js';
import { optionsFromReportConfig, parseRunArgs } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import type { Report } from '../../stress/report.js';

async function inproc(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const dir = mkdtempSync(join(tmpdir(), 's2replay-'));
const SIM = ['--mode', 'sim', '--guest-mem', '8M', '--vcpus', '2', '--ops', '3000'];

describe('replay validates the report as run validates its flags', () => {
  let good: Report;
  beforeAll(async () => {
    const file = join(dir, 'good.json');
    const r = await inproc(['run', ...SIM, '--seed', '0', '--json', file, '--quiet']);
    expect(r.code, r.out + r.err).toBe(0);
    good = JSON.parse(readFileSync(file, 'utf8')) as Report;
  });

  type Edit = (c: Record<string, unknown>) => unknown;
  const cases: [string, Edit, RegExp][] = [
    ['config not an object', () => 1, /config must be an object/],
    ['unknown scenario', (c) => ({ ...c, scenario: 'warp' }), /config\.scenario \(--scenario\): --scenario must be one of mixed\|/],
    ['unknown profile', (c) => ({ ...c, profile: '9.9' }), /config\.profile \(--profile\): --profile must be one of v14\|/],
    ['bad mode', (c) => ({ ...c, mode: 'fast' }), /config\.mode \(--mode\): --mode must be one of threads\|sim, got 'fast'/],
    ['negative ops', (c) => ({ ...c, ops: -5 }), /config\.ops \(--ops\): --ops must be a whole number from 1 to/],
    ['non-numeric ops', (c) => ({ ...c, ops: 'many' }), /config\.ops \(--ops\) must be a whole number or null, got "many"/],
    ['fractional ops', (c) => ({ ...c, ops: 2.5 }), /config\.ops \(--ops\): --ops takes a whole number/],
    ['missing seed', (c) => ({ ...c, seed: undefined }), /config\.seed is missing \(--seed\)/],
    ['seed out of range', (c) => ({ ...c, seed: -1 }), /config\.seed \(--seed\): --seed must be a whole number from 0 to 4294967295/],
    ['bugs not an array', (c) => ({ ...c, bugs: 'no-mark-dirty' }), /config\.bugs \(--bug\) must be an array of strings/],
    ['unknown bug', (c) => ({ ...c, bugs: ['nope'] }), /config\.bugs \(--bug\): --bug 'nope' is not a known defect/],
    ['negative duration (threads)', (c) => ({ ...c, mode: 'threads', ops: null, durationMs: -100 }), /config\.durationMs \(--duration\): --duration takes a duration from 1ms/],
    ['duration below 1 ms', (c) => ({ ...c, mode: 'threads', ops: null, durationMs: 0.4 }), /config\.durationMs \(--duration\): --duration must be from 1ms to 168h/],
    ['no length at all', (c) => ({ ...c, ops: null, durationMs: null }), /config\.durationMs and config\.ops are both null/],
    ['duration and ops', (c) => ({ ...c, mode: 'threads', durationMs: 1000 }), /config\.durationMs \(--duration\): --duration and --ops/],
    ['non-numeric check period', (c) => ({ ...c, mode: 'threads', ops: null, durationMs: 1000, checkEveryMs: 'often' }), /config\.checkEveryMs \(--check-every\) must be a number, got "often"/],
    ['check period in sim', (c) => ({ ...c, checkEveryMs: 5 }), /config\.checkEveryMs \(--check-every\): --check-every does not apply to --mode sim/],
    ['watchdog too short (threads)', (c) => ({ ...c, mode: 'threads', ops: null, durationMs: 1000, watchdogMs: 1 }), /config\.watchdogMs \(--watchdog\): --watchdog must be from 100ms to 1h/],
    ['chaos in sim', (c) => ({ ...c, chaos: 0.5 }), /config\.chaos \(--chaos\): --chaos does not apply to --mode sim/],
    ['vcpus fraction', (c) => ({ ...c, vcpus: 1.5 }), /config\.vcpus \(--vcpus\): --vcpus takes a whole number from 1 to 64, got '1\.5'/],
    ['guest memory as text', (c) => ({ ...c, guestMem: '1G' }), /config\.guestMem \(--guest-mem\) must be a whole number, got "1G"/],
    ['guest memory not a multiple of 2M', (c) => ({ ...c, guestMem: 3 * 1024 * 1024 }), /config\.guestMem \(--guest-mem\): --guest-mem must be a multiple of 2M/],
    ['lockStats not a boolean', (c) => ({ ...c, lockStats: 'yes' }), /config\.lockStats \(--no-lock-stats\) must be true or false/],
    ['crash actor that does not exist', (c) => ({ ...c, crashActor: 'vcpu9' }), /config\.crashActor \(--crash-actor\): --crash-actor vcpu9 names no actor/],
    ['pct depth with random', (c) => ({ ...c, pctDepth: 7 }), /config\.pctDepth \(--pct-depth\): --pct-depth applies to --sched pct only/],
  ];
  for (const [what, edit, msg] of cases) {
    it(`${what}: exit 2 naming the field`, async () => {
      const file = join(dir, `bad-${what.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify({ ...good, config: edit({ ...(good.config as unknown as Record<string, unknown>) }) }));
      const r = await inproc(['replay', file]);
      expect(r.code, r.out + r.err).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.err).not.toMatch(/\n\s+at /);
    });
  }

  it('a file that is not a report, a report without config, a bad schedule: exit 2 naming what', async () => {
    const write = (name: string, v: unknown): string => {
      const f = join(dir, name);
      writeFileSync(f, typeof v === 'string' ? v : JSON.stringify(v));
      return f;
    };
    expect((await inproc(['replay', write('notjson.json', '{nope')])).err).toMatch(/cannot read report/);
    expect((await inproc(['replay', write('array.json', [1])])).err).toMatch(/not an s2stress report \(not a JSON object\)/);
    expect((await inproc(['replay', write('noconfig.json', { result: 'pass' })])).err).toMatch(/it has no config/);
    const badStop = await inproc(['replay', write('badstop.json', { ...good, schedule: { ...good.schedule, stoppedAtStep: 'x' } })]);
    expect([badStop.code, badStop.err]).toEqual([2, expect.stringMatching(/schedule\.stoppedAtStep must be a positive whole number or null/)]);
  });

  it('the report of a run is accepted and gives back the same run configuration', () => {
    const o = optionsFromReportConfig(good.config);
    expect({ ...o, json: null, quiet: false }).toEqual({ ...good.config, json: null, quiet: false });
  });

  it('seed 0 replays exactly', async () => {
    expect(good.config.seed).toBe(0);
    const r = await inproc(['replay', join(dir, 'good.json'), '--quiet']);
    expect(r.out).toMatch(/replay: exact \(schedule hash [0-9a-f]{8}-[0-9a-f]+, no violation, as before\)/);
    expect(r.code).toBe(0);
  });

  it('an interrupted sim run replays to the step it stopped at, and says so', async () => {
    // A signal before the first step: the run stops at its first end-of-run check.
    const o = parseRunArgs([...SIM, '--seed', '4']);
    o.ops = 1_000_000;
    const r = await runSim(o, { signal: AbortSignal.abort('SIGTERM') });
    expect([r.interrupted, r.signal, r.exitCode, r.schedule!.stoppedAtStep]).toEqual([true, 'SIGTERM', 143, 1024]);
    expect(r.counters.accesses).toBeLessThan(1_000_000);
    const file = join(dir, 'interrupted.json');
    writeFileSync(file, JSON.stringify(r));
    const again = await inproc(['replay', file, '--quiet']);
    expect(again.out).toMatch(new RegExp(`replay: exact \\(stopped at step 1024, where the interrupted run stopped; schedule hash ${r.schedule!.hash}`));
    expect(again.code).toBe(0);
    // Without the stop step the replay would run on, and differ.
    const full = await runSim({ ...o, ops: 20_000 });
    expect(full.schedule!.hash).not.toBe(r.schedule!.hash);
  });
});
