/**
 * --sim-cpu: a sim run's actor threads share one CPU (src/sim/pin.ts), runs
 * side by side claim different CPUs (stress/cpus.ts), and the schedule is
 * the same pinned or not.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allowedCpus, canPin, formatCpuList, parseCpuList } from '../../src/sim/pin.js';
import { claimCpu } from '../../stress/cpus.js';
import { optionsFromObject, optionsFromReportConfig, parseRunArgs } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import type { Report } from '../../stress/report.js';
import { why } from '../harness/util.js';

describe('cpu lists', () => {
  it('reads and writes the kernel format', () => {
    expect(parseCpuList('0-3,8,10-11\n')).toEqual([0, 1, 2, 3, 8, 10, 11]);
    expect(parseCpuList('5')).toEqual([5]);
    expect(() => parseCpuList('0-3,x')).toThrow(/not a CPU list/);
    expect(formatCpuList([11, 0, 1, 2, 3, 8, 10])).toBe('0-3,8,10-11');
    expect(formatCpuList([4])).toBe('4');
  });
});

describe('the CPU registry', () => {
  const fresh = (): string => mkdtempSync(join(tmpdir(), 's2stress-cpus-test-'));

  it('spreads claims over the CPUs, takes a given CPU as asked, and frees a released one', () => {
    const dir = fresh();
    const a = claimCpu([0, 1, 2], 'auto', dir);
    const b = claimCpu([0, 1, 2], 'auto', dir);
    const c = claimCpu([0, 1, 2], 'auto', dir);
    expect(new Set([a.cpu, b.cpu, c.cpu])).toEqual(new Set([0, 1, 2]));
    // Each CPU has one claim: a fourth may take any; after b's release, b's CPU is the only one free.
    b.release();
    b.release(); // idempotent
    const d = claimCpu([0, 1, 2], 'auto', dir);
    expect(d.cpu).toBe(b.cpu);
    const e = claimCpu([0, 1, 2], 1, dir);
    expect(e.cpu).toBe(1);
    for (const x of [a, c, d, e]) x.release();
    expect(readdirSync(dir).filter((f) => f.startsWith('cpu'))).toEqual([]);
  });

  it('counts no claim of a process that is gone, and removes it', () => {
    const dir = fresh();
    // Two claims on CPU 0 by a process id no process has (above pid_max).
    writeFileSync(join(dir, 'cpu0.99999999.0'), '');
    writeFileSync(join(dir, 'cpu0.99999999.1'), '');
    // A live claim (this process) on CPU 1.
    writeFileSync(join(dir, `cpu1.${process.pid}.900`), '');
    const a = claimCpu([0, 1], 'auto', dir);
    expect(a.cpu).toBe(0);
    expect(existsSync(join(dir, 'cpu0.99999999.0'))).toBe(false);
    a.release();
  });
});

describe('--sim-cpu', () => {
  const base = ['--mode', 'sim', '--scenario', 'migrate', '--vcpus', '2', '--guest-mem', '8M', '--ops', '3000', '--seed', '11', '--no-lock-stats'];

  /** Threads of this process whose affinity is exactly `cpu` (the actors, once pinned). */
  const threadsOn = (cpu: number): number => {
    let n = 0;
    for (const t of readdirSync('/proc/self/task')) {
      try {
        const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync(`/proc/self/task/${t}/status`, 'utf8'));
        if (m && m[1].trim() === String(cpu)) n++;
      } catch {
        /* the thread ended */
      }
    }
    return n;
  };

  it.skipIf(!canPin() || (allowedCpus()?.length ?? 0) < 2)('pins every actor thread to the CPU, and the schedule is the one of an unpinned run', async () => {
    const allowed = allowedCpus()!;
    const cpu = allowed[allowed.length - 1];
    const reports: Report[] = [];
    const seen: number[] = [];
    for (const setting of [String(cpu), 'off']) {
      const o = parseRunArgs([...base, '--sim-cpu', setting]);
      o.quiet = true;
      const r = await runSim(o, { onStart: () => seen.push(threadsOn(cpu)) });
      expect(r.result, why(r)).toBe('pass');
      reports.push(r);
    }
    const actors = 2 + 2;
    // While the run ran: every actor thread on the CPU; none when off.
    expect(seen[0]).toBeGreaterThanOrEqual(actors);
    expect(seen[1]).toBe(0);
    expect(reports[0].pinnedCpu).toBe(cpu);
    expect(reports[1].pinnedCpu).toBeNull();
    expect(reports[0].schedule).toEqual(reports[1].schedule);
    // Where the run ran is not part of its replay line.
    expect(reports[0].replay).not.toMatch(/--sim-cpu/);
  });

  it('is taken by the library, not from a report replayed on another machine', () => {
    const o = parseRunArgs([...base]);
    expect(o.simCpu).toBe('auto');
    // A report's config naming a CPU this machine lacks still replays (auto).
    const replayed = optionsFromReportConfig({ ...o, simCpu: '99999' });
    expect(replayed.simCpu).toBe('auto');
    expect(() => optionsFromObject({ mode: 'sim', ops: 1000, simCpu: '99999' })).toThrow(/option simCpu \(--sim-cpu\).*takes auto, off or a CPU/);
    expect(optionsFromObject({ mode: 'sim', ops: 1000, simCpu: 'off' }).simCpu).toBe('off');
  });
});
