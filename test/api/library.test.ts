/**
 * The library, imported by the package's name as a user's own test would:
 * run(), replay() and campaign() return the objects the CLI writes as JSON.
 * Needs `npm run build` (the package's entry is the compiled dist/).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, campaign, defaults, replay, run, shrink, type Report } from 's2stress';

const SMALL = { mode: 'sim' as const, vcpus: 2, guestMem: 4 * 1024 * 1024, ops: 1500 };

describe("the library, imported as 's2stress'", () => {
  it('shrink() names bad input: not a report, a missing file, a report of a run that passed', async () => {
    await expect(shrink({} as Report)).rejects.toThrow(ConfigError);
    await expect(shrink(join(tmpdir(), 's2-no-such-report.json'))).rejects.toThrow(/cannot read report/);
    const passed = { tool: 's2stress', result: 'pass', violations: [], error: null, config: { ...defaults(), mode: 'sim', seed: 1, ops: 100 } } as unknown as Report;
    await expect(shrink(passed)).rejects.toThrow(/config|passed/);
  });

  it('run() of a clean sim case passes; the report has the JSON fields; the same options give the same run', async () => {
    const r: Report = await run({ ...SMALL, scenario: 'migrate', profile: 'fixed', seed: 5 });
    expect(r.tool).toBe('s2stress');
    expect(r.result).toBe('pass');
    expect(r.exitCode).toBe(0);
    expect(r.config.seed).toBe(5);
    expect(r.counters.accesses).toBeGreaterThanOrEqual(1500);
    const again = await run({ ...SMALL, scenario: 'migrate', profile: 'fixed', seed: 5 });
    expect(again.schedule?.hash).toBe(r.schedule?.hash);
    expect(JSON.parse(JSON.stringify(r)).replay).toBe(r.replay);
  });

  it('run() of a failing case returns the violations (it does not throw); replay() repeats it exactly', async () => {
    const r = await run({ ...SMALL, scenario: 'migrate', profile: 'v14', seed: 1 });
    expect(r.result).toBe('fail');
    expect(r.exitCode).toBe(1);
    expect(r.violations[0].invariant).toBe('migration-equal');
    const rr = await replay(JSON.parse(JSON.stringify(r)) as Report);
    expect(rr.exact).toBe(true);
    expect(rr.report.violations[0].message).toBe(r.violations[0].message);
  });

  it('campaign() returns campaign.json\'s content', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 's2api-')), 'c');
    const c = await campaign({ run: { ...SMALL, scenario: 'migrate' }, profiles: ['v14', 'fixed'], seeds: 2, jobs: 2, out });
    expect(c.totals).toEqual({ runs: 4, passed: 2, failed: 2, errors: 0, interrupted: 0, missing: 0 });
    expect(c.signatures.every((s) => s.profile === 'v14')).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'campaign.json'), 'utf8'))).toEqual(JSON.parse(JSON.stringify(c)));
  }, 60_000);

  it('bad options throw a ConfigError naming the option and what is accepted', async () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ vcpu: 2 }, /run\(\) has no option 'vcpu'; known: .*vcpus/],
      [{ vcpus: 'two' }, /option vcpus \(--vcpus\) must be/],
      [{ profile: '9.9' }, /option profile \(--profile\)/],
      [{ mode: 'fast' }, /option mode \(--mode\)/],
    ];
    for (const [o, re] of bad) {
      const e = await run(o as never).then(() => null, (x: unknown) => x);
      expect(e, JSON.stringify(o)).toBeInstanceOf(ConfigError);
      expect((e as Error).message, JSON.stringify(o)).toMatch(re);
    }
    await expect(campaign({ seeds: 0 })).rejects.toThrow(/seeds takes N/);
    expect(Object.keys(defaults())).toContain('vcpus');
  });
});
