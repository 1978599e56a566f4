/**
 * `--manual-protect` and `--eager-split-chunk`: accepted values, the error
 * (exit 2, naming the flag and the first profile that has the feature) on
 * profiles whose kernel did not have it, the rerun line and the report's
 * config (replay takes them back).
 */
import { describe, expect, it } from 'vitest';
import { main } from '../../stress/cli.js';
import { optionsFromReportConfig, parseRunArgs, replayCommand, toModelConfig } from '../../stress/options.js';

async function inproc(args: string[]): Promise<{ code: number; err: string }> {
  const err: string[] = [];
  const code = await main(args, { out: () => undefined, err: (s) => err.push(s) });
  return { code, err: err.join('\n') };
}

describe('--manual-protect and --eager-split-chunk', () => {
  const bad: [string, string[], RegExp][] = [
    ['an unknown mode', ['run', '--profile', 'modern', '--manual-protect', 'yes'], /--manual-protect must be one of off\|on\|initially-set, got 'yes'/],
    ['CLEAR_DIRTY_LOG before 5.0', ['run', '--profile', '4.19', '--manual-protect', 'on'], /--manual-protect on needs KVM_CLEAR_DIRTY_LOG \(Linux 5\.0\): profile 4\.19 does not have it; the first profile that does is 5\.1/],
    ['INITIALLY_SET on the 2014 line', ['run', '--profile', 'fixed', '--manual-protect', 'initially-set'], /--manual-protect initially-set needs KVM_DIRTY_LOG_INITIALLY_SET .*profile fixed does not have it; the first profile that does is 5\.18-rc/],
    ['eager splitting before 6.5', ['run', '--profile', '6.2', '--eager-split-chunk', '2M'], /--eager-split-chunk 2M needs eager page splitting .*profile 6\.2 does not have it; the first profile that does is 6\.5/],
    ['a chunk that is no block size', ['run', '--profile', 'modern', '--eager-split-chunk', '4M'], /--eager-split-chunk must be 0 \(off\) or a block size .* \(4K, 2M, 1G; kvm_is_block_size_supported\), got 4M/],
    ['a chunk that is not a size', ['run', '--profile', 'modern', '--eager-split-chunk', 'big'], /--eager-split-chunk takes a size/],
  ];
  for (const [what, args, msg] of bad) {
    it(`${what}: exit 2, the message names the flag`, async () => {
      const r = await inproc(args);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(msg);
    });
  }

  it('accepted: on from 5.1, initially-set from 5.18-rc, chunks 0, 4K, 2M, 1G from 6.5; off and 0 are the defaults and stay out of the rerun line', () => {
    expect(parseRunArgs(['--profile', '5.1', '--manual-protect', 'on']).manualProtect).toBe('on');
    expect(parseRunArgs(['--profile', '5.18-rc', '--manual-protect', 'initially-set']).manualProtect).toBe('initially-set');
    for (const c of ['0', '4K', '2M', '1G']) expect(() => parseRunArgs(['--profile', '6.5', '--eager-split-chunk', c])).not.toThrow();
    const d = parseRunArgs(['--profile', 'modern', '--seed', '1']);
    expect(d.manualProtect).toBe('off');
    expect(d.eagerSplitChunk).toBe(0);
    expect(replayCommand(d)).not.toMatch(/manual-protect|eager-split/);
    expect(toModelConfig(d)).not.toHaveProperty('manualProtect');
  });

  it('the rerun line and the report config carry them, and a report replays with them', () => {
    const o = parseRunArgs(['--profile', 'modern', '--manual-protect', 'initially-set', '--eager-split-chunk', '2M', '--seed', '3', '--mode', 'sim']);
    expect(replayCommand(o)).toMatch(/--manual-protect initially-set --eager-split-chunk 2M/);
    const config = JSON.parse(JSON.stringify(o));
    expect(config.manualProtect).toBe('initially-set');
    expect(config.eagerSplitChunk).toBe(2 * 1024 * 1024);
    const back = optionsFromReportConfig(config);
    expect(back.manualProtect).toBe('initially-set');
    expect(back.eagerSplitChunk).toBe(2 * 1024 * 1024);
    // A report of a profile without the feature is refused, naming the field.
    expect(() => optionsFromReportConfig({ ...config, profile: '6.2' })).toThrow(/config\.eagerSplitChunk \(--eager-split-chunk\)/);
  });
});
