/**
 * s2stress shrink: a sim failure shrunk to a strictly smaller run with the
 * same signature that replays exactly; the candidate check that keeps the
 * signature (a broken check is caught); --max-preemptions leaves every
 * unbounded schedule as it was and a small bound cuts the switches;
 * --host-ops restricts the host MM and names bad input; bad usage of shrink.
 * Short sim runs only (each a fraction of a second once the workers are
 * warm); the shrinks are capped by maxRuns, not by time, so that they are
 * the same on a slow machine.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, replay } from '../../stress/api.js';
import { main } from '../../stress/cli.js';
import { parseCampaignArgs, shrinkSignatures, signatureOf, type CampaignSignature } from '../../stress/campaign.js';
import { parseRunArgs, replayCommand } from '../../stress/options.js';
import { shrinkReport, ratio, readFailingReport, type ShrinkControl } from '../../stress/shrink.js';
import type { Report } from '../../stress/report.js';

const MiB = 1024 * 1024;
const tmp = (): string => mkdtempSync(join(tmpdir(), 's2shrink-'));

async function inproc(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/**
 * The check a candidate must pass: the default (same signature), or, with
 * S2_BROKEN_SHRINK set, a broken one that keeps any failure; the tests
 * below must fail with it (run them so to see it).
 */
const broken: ShrinkControl['accept'] = process.env.S2_BROKEN_SHRINK ? (r) => r.result === 'fail' : undefined;

describe('shrinking a sim failure', () => {
  it('v14 migrate (loses dirty pages on every seed): fewer vCPUs, a 2 MiB guest, same signature, exact replay', async () => {
    const original = await run({ mode: 'sim', scenario: 'migrate', profile: 'v14', vcpus: 4, guestMem: 16 * MiB, ops: 20000, seed: 1 });
    expect(original.result, 'seed 1').toBe('fail');
    // The preemption bound, unset, leaves the schedule of this seed exactly as before it existed.
    expect(original.schedule!.hash, 'schedule hash of v14 migrate seed 1 before --max-preemptions').toBe('47813938-b9b3');
    const sig = signatureOf(original).signature;
    const { result, report } = await shrinkReport(original, original.config, { passes: ['vcpus', 'guest', 'ops'], maxRuns: 4, accept: broken });
    // The rerun, --vcpus 1 and --guest-mem 2M (kept), --ops 1 (the run ends
    // before a migration: another signature, not kept), the budget.
    expect(result.runs).toBe(4);
    expect(result.budgetReached).toBe(true);
    expect(result.status).toBe('shrunk');
    expect(report).not.toBeNull();
    expect(signatureOf(report!).signature).toBe(sig);
    expect(result.shrunk.vcpus).toBeLessThan(result.original.vcpus);
    expect(result.shrunk.guestMem).toBe(2 * MiB);
    const ops = result.passes.find((p) => p.pass === 'ops')!;
    expect(ops.attempts[0]).toMatchObject({ candidate: '--ops 1', result: 'other-failure' });
    expect(ops.attempts[0].detail).toMatch(/harness: ran no work/);
    expect(result.shrunk.ops).toBe(20000);
    expect(result.shrunk.switches!).toBeLessThan(result.original.switches!);
    const again = await replay(report!);
    expect(again.exact).toBe(true);
  }, 30_000);

  it('a zoo defect (fixed --bug no-mark-dirty): fewer --ops by bisection, the shrunk report replays with s2stress replay', async () => {
    const dir = tmp();
    const original = await run({ mode: 'sim', scenario: 'migrate', profile: 'fixed', bugs: ['no-mark-dirty'], vcpus: 2, guestMem: 4 * MiB, ops: 2000, seed: 1 });
    expect(original.result, 'seed 1').toBe('fail');
    const file = join(dir, 'orig.json');
    writeFileSync(file, JSON.stringify(original));
    const { report: orig, options } = readFailingReport(file);
    const { result, report } = await shrinkReport(orig, options, { passes: ['ops'], maxRuns: 3, accept: broken });
    // --ops 1 first (the target: passes), then 1000 (fails alike: kept).
    expect(result.passes.find((p) => p.pass === 'ops')!.attempts.map((a) => a.candidate)).toEqual(['--ops 1', '--ops 1000']);
    expect(result.shrunk.ops).toBe(1000);
    expect(signatureOf(report!).signature).toBe(signatureOf(original).signature);
    const out = join(dir, 'shrunk.json');
    writeFileSync(out, JSON.stringify(report));
    const r = await inproc(['replay', out, '--quiet']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/replay: exact/);
  }, 30_000);

  it('the CLI: the table, the replay command, --out and --json; a failure that does not recur exits 1', async () => {
    const dir = tmp();
    // An already small failure: the budget ends the shrink after a candidate or two.
    const small = await run({ mode: 'sim', scenario: 'migrate', profile: 'fixed', bugs: ['no-mark-dirty'], vcpus: 1, guestMem: 2 * MiB, ops: 300, seed: 1, hostOps: [] });
    expect(small.result, 'seed 1').toBe('fail');
    const file = join(dir, 'small.json');
    writeFileSync(file, JSON.stringify(small));
    const out = join(dir, 'out.json');
    const sum = join(dir, 'sum.json');
    const r = await inproc(['shrink', file, '--budget', '1s', '--out', out, '--json', sum, '--quiet']);
    expect(r.code, r.err).toBe(0);
    const s = JSON.parse(readFileSync(sum, 'utf8'));
    expect(s).toMatchObject({ kind: 'shrink', mode: 'sim', signature: signatureOf(small).signature, out });
    expect(['shrunk', 'minimal']).toContain(s.status);
    expect(JSON.parse(readFileSync(out, 'utf8')).replay).toBe(s.replay);
    // The same run, its violation claimed by a passing configuration: it cannot be shrunk.
    const passing = { ...small, config: { ...small.config, bugs: [] } };
    const pf = join(dir, 'gone.json');
    writeFileSync(pf, JSON.stringify(passing));
    const g = await inproc(['shrink', pf, '--budget', '1s']);
    expect(g.code).toBe(1);
    expect(g.out).toMatch(/does not fail with this signature any more .*it cannot be shrunk/);
  }, 30_000);
});

describe('--max-preemptions', () => {
  it('unset, schedules are unchanged (hashes from before the flag); a small bound cuts the switches', async () => {
    const base = { mode: 'sim' as const, scenario: 'mixed', vcpus: 2, guestMem: 2 * MiB, ops: 400, seed: 5 };
    const free = await run(base);
    expect(free.schedule!.hash).toBe('bb15ce89-5a0e');
    const pct = await run({ ...base, scenario: 'thp-churn', guestMem: 4 * MiB, sched: 'pct' });
    expect(pct.schedule!.hash).toBe('a255d6c5-1805');
    const bounded = await run({ ...base, maxPreemptions: 1 });
    expect(bounded.schedule!.preemptions).toBeLessThanOrEqual(1);
    expect(bounded.schedule!.switches).toBeLessThan(free.schedule!.switches / 10);
    expect(bounded.replay).toContain('--max-preemptions 1');
    expect(bounded.config.maxPreemptions).toBe(1);
  }, 20_000);

  it('bad values and threads mode are named', () => {
    expect(() => parseRunArgs(['--mode', 'sim', '--max-preemptions', '-1'])).toThrow(/--max-preemptions must be a whole number from 0/);
    expect(() => parseRunArgs(['--max-preemptions', '3'])).toThrow(/--max-preemptions does not apply to --mode threads/);
  });
});

describe('--host-ops', () => {
  it('restricts the host operations to the kinds named, and is in the config and the rerun line', async () => {
    // Pre-faulted anonymous memory: without --host-ops the host MM migrates, merges and zaps it.
    const r = await run({ mode: 'sim', scenario: 'thp-churn', backing: 'anon', memPrealloc: true, vcpus: 1, guestMem: 2 * MiB, ops: 300, seed: 2, hostOps: ['ksm'] });
    expect(r.counters.ksmMerges).toBeGreaterThan(0);
    expect(r.counters.hostMigrations).toBe(0);
    expect(r.counters.zaps).toBe(0);
    expect(r.config.hostOps).toEqual(['ksm']);
    expect(r.replay).toContain('--host-ops ksm');
    // Canonical order and spelling, so that one set has one rerun line.
    const o = parseRunArgs(['--scenario', 'thp-churn', '--host-ops', 'zap,migrate,zap']);
    expect(o.hostOps).toEqual(['migrate', 'zap']);
    expect(replayCommand(o)).toContain('--host-ops migrate,zap');
    expect(parseRunArgs(['--host-ops', 'none']).hostOps).toEqual([]);
  }, 20_000);

  it('bad input names the flag and what is accepted', () => {
    expect(() => parseRunArgs(['--host-ops', 'migrate,teleport'])).toThrow(/--host-ops takes a comma list of migrate, split, .*unknown: 'teleport'/);
    expect(() => parseRunArgs(['--host-ops', ''])).toThrow(/--host-ops/);
    // migrate's host MM never zaps; selftest-dirty-log's has no host MM at all.
    expect(() => parseRunArgs(['--host-ops', 'zap', '--scenario', 'migrate'])).toThrow(/--host-ops zap: not a host operation of scenario migrate, whose kinds are migrate,split,collapse,ksm/);
    expect(() => parseRunArgs(['--scenario', 'selftest-dirty-log', '--host-ops', 'ksm'])).toThrow(/runs no host-MM operation; only --host-ops none/);
  });
});

describe('shrink usage', () => {
  it('bad usage exits 2 and names the flag', async () => {
    const dir = tmp();
    const cases: [string[], RegExp][] = [
      [['shrink'], /shrink needs a report file first/],
      [['shrink', '--budget', '5s'], /shrink needs a report file first/],
      [['shrink', join(dir, 'none.json')], /cannot read report/],
      [['shrink', 'x.json', '--budget', 'soon'], /--budget takes a duration from 1s/],
      [['shrink', 'x.json', '--budget', '10ms'], /--budget must be from 1s/],
      [['shrink', 'x.json', '--ops', '5'], /unknown flag '--ops' for shrink; accepted: --budget TIME, --out FILE, --json FILE, --quiet/],
      [['shrink', 'x.json', '--out'], /--out needs a value/],
    ];
    for (const [args, re] of cases) {
      const r = await inproc(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(re);
    }
    const passed = join(dir, 'pass.json');
    writeFileSync(passed, JSON.stringify({ tool: 's2stress', result: 'pass', config: { ...parseRunArgs(['--mode', 'sim']) }, violations: [], error: null } as Partial<Report>));
    const r = await inproc(['shrink', passed]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/a run that passed: there is no failure to shrink/);
    expect((await inproc(['shrink', '--help'])).out).toMatch(/^usage: s2stress shrink REPORT.json \[--budget TIME\]/);
  });

  it('ratios read as the output says them', () => {
    expect(ratio(47539, 4624)).toBe('10x fewer');
    expect(ratio(4, 1)).toBe('4x fewer');
    expect(ratio(199, 10)).toBe('20x fewer');
    expect(ratio(2, 3)).toBe('1.5x more');
    expect(ratio(100, 180)).toBe('1.8x more');
    expect(ratio(5, 5)).toBe('same');
  });
});

describe('campaign --shrink', () => {
  it('records the shrunk reproducer of each signature (file and replay), the other fields unchanged', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'failures'));
    const rep = await run({ mode: 'sim', scenario: 'migrate', profile: 'fixed', bugs: ['no-mark-dirty'], vcpus: 2, guestMem: 2 * MiB, ops: 300, seed: 1 });
    expect(rep.result, 'seed 1').toBe('fail');
    const sig = signatureOf(rep);
    const entry: CampaignSignature = { signature: sig.signature, profile: 'fixed', invariant: sig.invariant, role: sig.role, count: 1, firstSeed: 1, reproducer: 'job1', file: 'failures/job1.json', replay: rep.replay, example: sig.example };
    const before = { ...entry };
    const o = { ...parseCampaignArgs(['--mode', 'sim', '--shrink', '1s', '--out', dir]) };
    expect(o.shrinkMs).toBe(1000);
    await shrinkSignatures([entry], new Map([['job1', rep]]), o, { out: () => {}, err: () => {} });
    const { shrunk, ...rest } = entry;
    expect(rest).toEqual(before);
    expect(shrunk).toMatchObject({ file: 'failures/job1.shrunk.json' });
    expect(['shrunk', 'minimal']).toContain(shrunk!.status);
    const kept = JSON.parse(readFileSync(join(dir, shrunk!.file!), 'utf8')) as Report;
    expect(kept.replay).toBe(shrunk!.replay);
    expect(signatureOf(kept).signature).toBe(sig.signature);
    expect(() => parseCampaignArgs(['--shrink', 'soon'])).toThrow(/--shrink takes a duration from 1s/);
  }, 20_000);
});
