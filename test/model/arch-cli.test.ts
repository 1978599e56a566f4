/**
 * `--arch` and the profile list as a user sees them: the flag is parsed,
 * validated, written into the replay command and the report; `list
 * profiles` names each profile's kernel, architecture and what it finds.
 */
import { describe, it, expect } from 'vitest';
import { ConfigError, PROFILES } from '../../src/config.js';
import { parseRunArgs, replayCommand, toModelConfig } from '../../stress/options.js';
import { main } from '../../stress/cli.js';
import { runSim } from '../../stress/simrun.js';
import { formatSummary } from '../../stress/report.js';

function capture(): { io: { out(s: string): void; err(s: string): void }; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s) => out.push(s), err: (s) => err.push(s) }, out, err };
}

describe('--arch', () => {
  it('is parsed into the options, the model configuration and the replay command; absent, the profile decides', () => {
    const o = parseRunArgs(['--profile', 'v14', '--arch', 'arm64', '--seed', '3']);
    expect(o.arch).toBe('arm64');
    expect(toModelConfig(o).arch).toBe('arm64');
    expect(replayCommand(o)).toMatch(/--profile v14 --arch arm64 /);
    const d = parseRunArgs(['--profile', 'v14', '--seed', '3']);
    expect(d.arch).toBeNull();
    expect(toModelConfig(d).arch).toBeUndefined();
    expect(replayCommand(d)).not.toMatch(/--arch/);
  });

  it('a value other than armv7|arm64 is a usage error naming the flag', () => {
    let err: unknown = null;
    try {
      parseRunArgs(['--arch', 'x86']);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe('--arch');
    expect((err as ConfigError).message).toBe("--arch must be one of armv7|arm64, got 'x86'");
  });

  it('the report and its summary line say which architecture ran', async () => {
    for (const [args, arch] of [
      [[], 'armv7'],
      [['--arch', 'arm64'], 'arm64'],
    ] as const) {
      const o = parseRunArgs(['--mode', 'sim', '--profile', 'v14', '--scenario', 'fault-storm', '--vcpus', '1', '--guest-mem', '4M', '--ops', '300', '--seed', '1', ...args]);
      o.quiet = true;
      const r = await runSim(o);
      expect(r.arch).toBe(arch);
      expect(formatSummary(r).split('\n')[0]).toMatch(new RegExp(`profile v14 \\(${arch}\\)`));
    }
  }, 60_000);
});

describe('list profiles', () => {
  it('--json keeps name and description and adds the kernel, the architecture and what s2stress finds', async () => {
    const c = capture();
    expect(await main(['list', 'profiles', '--json'], c.io)).toBe(0);
    const rows = JSON.parse(c.out.join('\n')) as { name: string; description: string; kernel: string; arch: string; finds: string }[];
    expect(rows.map((r) => r.name)).toEqual([...PROFILES]);
    for (const r of rows) {
      expect(r.description.length).toBeGreaterThan(10);
      expect(r.kernel.length).toBeGreaterThan(3);
      expect(['armv7', 'arm64']).toContain(r.arch);
      expect(r.finds.length).toBeGreaterThan(5);
    }
    const by = Object.fromEntries(rows.map((r) => [r.name, r]));
    expect([by.v14.arch, by['4.0'].arch, by.fixed.arch]).toEqual(['armv7', 'arm64', 'arm64']);
    expect(by.fixed.kernel).toBe('Linux 5.1');
    expect(by.v15.kernel).toBe('Linux 4.7');
    expect(by['4.0'].finds).toMatch(/break-before-make/);
  });

  it('the text list shows each profile with its kernel, architecture and findings', async () => {
    const c = capture();
    expect(await main(['list', 'profiles'], c.io)).toBe(0);
    const text = c.out.join('\n');
    expect(text).toMatch(/^v14 +v14 patch, Nov 2014, on 3\.18, armv7: /m);
    expect(text).toMatch(/^4\.0 +Linux 4\.0, arm64: /m);
    expect(text).toMatch(/^ +finds: nothing: clean/m);
  });
});
