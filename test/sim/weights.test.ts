/**
 * Sim mode under the window-weighted strategies: still bit for bit the same
 * run for the same seed and configuration, the search pressure is really
 * applied (host operations aimed at hot pages, edge accesses, migrations
 * retried on pinned pages), and a report of another schedule version is
 * refused by `replay` rather than replayed into a different run.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run, why } from '../harness/util.js';
import { main } from '../../stress/cli.js';
import { SCHEDULE_VERSION } from '../../src/sim/sched.js';
import type { Report } from '../../stress/report.js';

const SMALL = ['--mode', 'sim', '--guest-mem', '8M', '--vcpus', '2', '--ops', '15000'];

describe('window-weighted sim mode', () => {
  for (const seed of [21, 22]) {
    for (const sched of ['random', 'pct']) {
      it(`same hash twice: notifier-storm, mixed backing, ${sched}, seed ${seed}`, async () => {
        const args = [...SMALL, '--scenario', 'notifier-storm', '--backing', 'mixed', '--sched', sched, '--seed', String(seed)];
        const a = await run(args);
        const b = await run(args);
        expect(a.result, why(a)).toBe('pass');
        expect(a.schedule!.version).toBe(SCHEDULE_VERSION);
        expect(b.schedule, `seed ${seed}`).toEqual(a.schedule);
        expect(b.counters, `seed ${seed}`).toEqual(a.counters);
        // The pressure is there: hot pages targeted, edges visited.
        expect(a.counters.hostOpsHinted, `seed ${seed}`).toBeGreaterThan(0);
        expect(a.counters.edgeAccesses, `seed ${seed}`).toBeGreaterThan(0);
      });
    }
  }

  it('replay refuses a sim report of another schedule version, naming both versions (exit 2); a current report replays exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 's2stress-version-'));
    const file = join(dir, 'r.json');
    const lines: string[] = [];
    const io = { out: (s: string) => lines.push(s), err: (s: string) => lines.push(s) };
    expect(await main(['run', ...SMALL.filter((a, i, all) => a !== '--ops' && all[i - 1] !== '--ops'), '--ops', '3000', '--scenario', 'migrate', '--seed', '31', '--quiet', '--json', file], io)).toBe(0);
    expect(await main(['replay', file, '--quiet'], io)).toBe(0);
    expect(lines.join('\n')).toContain('replay: exact');

    const old = JSON.parse(readFileSync(file, 'utf8')) as Report;
    delete old.schedule!.version; // as reports written before the version existed
    writeFileSync(file, JSON.stringify(old));
    lines.length = 0;
    expect(await main(['replay', file], io)).toBe(2);
    const msg = lines.join('\n');
    expect(msg).toContain(`schedule version 1`);
    expect(msg).toContain(`schedule version ${SCHEDULE_VERSION}`);
    expect(msg).not.toMatch(/replay: (exact|DIVERGED)/);
  });
});
