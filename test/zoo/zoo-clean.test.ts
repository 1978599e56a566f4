/**
 * `s2stress zoo --clean`: each defect's configuration run without the
 * defect over the same seeds (the false-alarm side of the kill table).
 */
import { describe, expect, it } from 'vitest';
import { main } from '../../stress/cli.js';

function capture(): { io: { out: (s: string) => void; err: (s: string) => void }; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s) => out.push(s), err: (s) => err.push(s) }, out, err };
}

describe('zoo --clean', () => {
  it('runs the configuration without the defect, says how many runs were clean, and fails (exit 1) naming the seed when one is not', async () => {
    const ok = capture();
    expect(await main(['zoo', '--clean', '--bug', 'no-mark-dirty', '--bug', 'ring-reset-no-wp', '--mode', 'sim', '--seeds', '1', '--sim-ops', '3000'], ok.io), ok.err.join('\n')).toBe(0);
    expect(ok.out.join('\n')).toContain('| no-mark-dirty | fixed | 1/1 clean | - |');
    expect(ok.out.join('\n')).toContain('| ring-reset-no-wp | modern | 1/1 clean | - |');
    // A run that cannot run counts as a failure too (a worker made to crash).
    const bad = capture();
    expect(await main(['zoo', '--clean', '--bug', 'no-mark-dirty', '--mode', 'sim', '--seeds', '1', '--sim-ops', '3000', '--run-flags', '--crash-actor vcpu0'], bad.io)).toBe(1);
    expect(bad.out.join('\n')).toMatch(/\| no-mark-dirty \| fixed \| 0\/1 clean; seed 1: harness \|/);
  }, 60_000);
});
