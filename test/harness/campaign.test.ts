/**
 * `s2stress campaign` and `s2stress merge`: seeded runs in child processes,
 * failures grouped by signature with a reproducer that replays, shards that
 * merge into the very result of the unsharded campaign, and clear errors.
 * Needs `npm run build` (the runs are the compiled CLI).
 */
import { describe, expect, it, beforeAll } from 'vitest';
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../stress/cli.js';
import { campaignJobs, normalizeMessage, parseCampaignArgs, shardJobs, signatureOf, type CampaignResult } from '../../stress/campaign.js';
import type { Report } from '../../stress/report.js';

const CLI = join(process.cwd(), 'dist/stress/cli.js');
// v14 loses dirty pages (every seed of migrate fails); fixed passes.
const FLAGS = ['--mode', 'sim', '--scenario', 'migrate', '--vcpus', '2', '--guest-mem', '4M', '--ops', '1500', '--profiles', 'v14,fixed', '--seeds', '1..3'];

function capture(): { io: { out: (s: string) => void; err: (s: string) => void }; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s) => out.push(s), err: (s) => err.push(s) }, out, err };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 's2camp-'));
}

function read(dir: string): CampaignResult {
  return JSON.parse(readFileSync(join(dir, 'campaign.json'), 'utf8')) as CampaignResult;
}

/** A result without what depends on the machine or the moment. */
function comparable(r: CampaignResult): Omit<CampaignResult, 'host'> {
  const { host: _host, ...rest } = r;
  return rest;
}

/** A report without its timings. */
function reportShape(file: string): unknown {
  const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
  // Where and how long it ran differs between the two campaigns: not compared.
  return { ...r, elapsedMs: 0, startupMs: 0, pinnedCpu: null, lock: null, timeline: null, schedule: r.schedule ? { ...r.schedule, wallMs: 0 } : null };
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: 'true' } });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (code) => res({ code, stdout, stderr }));
  });
}

describe('campaign', () => {
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('run npm run build first');
  });

  it('signatures: the same finding with other numbers is one signature; another invariant, message kind, role or profile is another', () => {
    const a = 'gfn 443: after stop-and-copy the destination holds 0xb401 (vcpu1 write #360) but the source holds 0xc181 (vcpu1 write #387): a write was never reported dirty';
    const b = 'gfn 12: after stop-and-copy the destination holds 0 but the source holds 0x181 (vcpu0 write #3): a write was never reported dirty';
    expect(normalizeMessage(a)).toBe(normalizeMessage(b));
    expect(normalizeMessage(a)).toBe('gfn N: after stop-and-copy the destination holds N but the source holds N: a write was never reported dirty');
    expect(normalizeMessage('stage-2 maps gfn 365 to frame 1806, which is free')).not.toBe(normalizeMessage('the host maps gfn 365 to frame 1806, which is free'));
    const rep = (profile: string, invariant: string, actor: string, message: string): Report => ({ config: { profile }, violations: [{ invariant, actor, message }], error: null }) as unknown as Report;
    const s = signatureOf(rep('v14', 'migration-equal', 'migrator', a)).signature;
    expect(signatureOf(rep('v14', 'migration-equal', 'migrator', b)).signature).toBe(s);
    expect(signatureOf(rep('4.0', 'migration-equal', 'migrator', b)).signature).not.toBe(s);
    expect(signatureOf(rep('v14', 'shadow-equal', 'migrator', b)).signature).not.toBe(s);
    expect(signatureOf(rep('v14', 'migration-equal', 'vcpu1', b)).signature).not.toBe(s);
    expect(signatureOf(rep('v14', 'migration-equal', 'vcpu1', b)).signature).toBe(signatureOf(rep('v14', 'migration-equal', 'vcpu0', b)).signature);
    expect(signatureOf({ config: { profile: 'fixed' }, violations: [], error: 'worker vcpu0 threw: boom 42\n  at x' } as unknown as Report).signature).toBe('fixed harness: worker vcpuN threw: boom N');
  });

  it('--shrink: each signature gets a shrunk reproducer that replays exactly; merging shards carries it with its file', async () => {
    const dir = tmp();
    const SMALL = ['--mode', 'sim', '--scenario', 'migrate', '--profile', 'fixed', '--bug', 'no-mark-dirty', '--vcpus', '1', '--guest-mem', '2M', '--ops', '300', '--host-ops', 'none', '--seeds', '1..2'];
    const c = capture();
    const code = await main(['campaign', ...SMALL, '--jobs', '2', '--shrink', '2s', '--out', join(dir, 'out')], c.io);
    expect(code, c.err.join('\n')).toBe(1);
    const r = read(join(dir, 'out'));
    expect(r.totals.failed).toBe(2);
    for (const s of r.signatures) {
      expect(s.shrunk, s.signature).toBeDefined();
      expect(['shrunk', 'minimal']).toContain(s.shrunk!.status);
      expect(s.shrunk!.file).toBe(`failures/${s.reproducer}.shrunk.json`);
      expect(c.out.join('\n')).toContain(`s2stress replay ${s.shrunk!.file}`);
      const rep = spawnSync(process.execPath, [CLI, 'replay', join(dir, 'out', s.shrunk!.file!), '--quiet'], { encoding: 'utf8' });
      expect(rep.status, rep.stdout + rep.stderr).toBe(1);
      expect(rep.stdout).toMatch(/replay: exact/);
    }
    // Two shards, each shrinking its own reproducers; the merge keeps each signature's shrunk reproducer.
    const parts = await Promise.all([1, 2].map((k) => runCli(['campaign', ...SMALL, '--jobs', '1', '--shard', `${k}/2`, '--shrink', '1s', '--out', join(dir, `shard${k}`)])));
    for (const p of parts) expect(p.code, p.stderr).toBe(1);
    const m = capture();
    expect(await main(['merge', join(dir, 'shard1'), join(dir, 'shard2'), '--out', join(dir, 'merged')], m.io), m.err.join('\n')).toBe(1);
    const merged = read(join(dir, 'merged'));
    expect(merged.signatures.map((s) => s.signature)).toEqual(r.signatures.map((s) => s.signature));
    for (const s of merged.signatures) {
      expect(s.shrunk?.file, s.signature).toBe(`failures/${s.reproducer}.shrunk.json`);
      expect(existsSync(join(dir, 'merged', s.shrunk!.file!)), s.shrunk!.file!).toBe(true);
    }
  }, 90_000);

  it('--sim-cpu reaches every job: each kept report was run with it (not part of the replay line)', async () => {
    const dir = tmp();
    const c = capture();
    const args = ['--mode', 'sim', '--scenario', 'migrate', '--profile', 'fixed', '--bug', 'no-mark-dirty', '--vcpus', '1', '--guest-mem', '2M', '--ops', '300', '--host-ops', 'none', '--seeds', '1..2'];
    const code = await main(['campaign', ...args, '--sim-cpu', 'off', '--jobs', '2', '--out', join(dir, 'out')], c.io);
    expect(code, c.err.join('\n')).toBe(1);
    const files = readdirSync(join(dir, 'out', 'failures'));
    expect(files.length).toBe(2);
    for (const f of files) {
      const r = JSON.parse(readFileSync(join(dir, 'out', 'failures', f), 'utf8')) as Report;
      expect(r.config.simCpu, f).toBe('off');
      expect(r.pinnedCpu, f).toBeNull();
      expect(r.replay).not.toMatch(/--sim-cpu/);
    }
  }, 60_000);

  it('shards split the jobs deterministically: every job in exactly one shard, balanced', () => {
    const { jobs } = campaignJobs(parseCampaignArgs([...FLAGS.slice(0, -2), '--seeds', '1..10']));
    expect(jobs).toHaveLength(20);
    const seen = new Map<number, number>();
    for (let k = 1; k <= 3; k++) {
      const mine = shardJobs(jobs, [k, 3]);
      expect(mine.length).toBeGreaterThanOrEqual(6);
      expect(mine.length).toBeLessThanOrEqual(7);
      for (const j of mine) seen.set(j.index, (seen.get(j.index) ?? 0) + 1);
    }
    expect([...seen.keys()].sort((a, b) => a - b)).toEqual(jobs.map((j) => j.index));
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(shardJobs(jobs, [2, 3]).map((j) => j.id)).toEqual(shardJobs(jobs, [2, 3]).map((j) => j.id));
  });

  it('runs every seed of every cell, exits 1, groups the failures, keeps a reproducer per signature that replays exactly; 3 shards in separate processes merge into the same result', async () => {
    const whole = tmp();
    const c = capture();
    const code = await main(['campaign', ...FLAGS, '--jobs', '2', '--out', join(whole, 'out')], c.io);
    expect(code, c.err.join('\n')).toBe(1);
    const r = read(join(whole, 'out'));
    expect(r.totals).toEqual({ runs: 6, passed: 3, failed: 3, errors: 0, interrupted: 0, missing: 0 });
    expect(r.runs.filter((x) => x.result === 'fail').map((x) => x.id)).toEqual(['v14-migrate-thp-s1', 'v14-migrate-thp-s2', 'v14-migrate-thp-s3']);
    expect(r.signatures.length).toBeGreaterThanOrEqual(1);
    expect(r.signatures.reduce((a, s) => a + s.count, 0)).toBe(3);
    for (const s of r.signatures) {
      expect(s.profile).toBe('v14');
      expect(s.signature.startsWith('v14 ')).toBe(true);
      expect(c.out.join('\n')).toContain(s.replay);
      // the reproducer replays exactly (sim mode)
      const rep = spawnSync(process.execPath, [CLI, 'replay', join(whole, 'out', s.file), '--quiet'], { encoding: 'utf8' });
      expect(rep.status, rep.stdout + rep.stderr).toBe(1);
      expect(rep.stdout).toMatch(/replay: exact/);
    }
    expect(readdirSync(join(whole, 'out', 'failures')).sort()).toEqual(['v14-migrate-thp-s1.json', 'v14-migrate-thp-s2.json', 'v14-migrate-thp-s3.json']);

    const parts = await Promise.all([1, 2, 3].map((k) => runCli(['campaign', ...FLAGS, '--jobs', '1', '--shard', `${k}/3`, '--out', join(whole, `shard${k}`)])));
    for (const p of parts) expect([0, 1], p.stderr).toContain(p.code);
    const partial = read(join(whole, 'shard2'));
    expect(partial.shards).toEqual({ of: 3, held: [2] });
    expect(partial.totals.missing).toBe(0);
    expect(partial.runs.length).toBe(2);

    const m = capture();
    const mcode = await main(['merge', join(whole, 'shard1'), join(whole, 'shard2'), join(whole, 'shard3'), '--out', join(whole, 'merged')], m.io);
    expect(mcode, m.err.join('\n')).toBe(1);
    const merged = read(join(whole, 'merged'));
    expect(comparable(merged)).toEqual(comparable(r));
    const files = readdirSync(join(whole, 'out', 'failures')).sort();
    expect(readdirSync(join(whole, 'merged', 'failures')).sort()).toEqual(files);
    for (const f of files) expect(reportShape(join(whole, 'merged', 'failures', f))).toEqual(reportShape(join(whole, 'out', 'failures', f)));

    // two shards only: the merge says what is missing
    const half = capture();
    expect(await main(['merge', join(whole, 'shard1'), join(whole, 'shard3'), '--out', join(whole, 'half')], half.io)).toBe(1);
    const h = read(join(whole, 'half'));
    expect(h.shards).toEqual({ of: 3, held: [1, 3] });
    expect(h.totals.runs).toBe(4);
  }, 120_000);

  it('SIGINT stops the campaign: its runs are stopped (no process left), the partial result is written, exit 130', async () => {
    const dir = tmp();
    const own = mkdtempSync(join(tmpdir(), 's2camp-own-'));
    const c = spawn(process.execPath, [CLI, 'campaign', '--mode', 'sim', '--scenario', 'mixed', '--ops', '100000000', '--seeds', '1..6', '--jobs', '2', '--out', join(dir, 'out')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // the runs' temporary files, hence their command lines, name this directory
      env: { ...process.env, CI: 'true', TMPDIR: own },
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    const running = new Promise<void>((res) => {
      c.stderr.on('data', (d) => {
        stderr += d;
        // both runs started: their processes exist
        if (spawnSync('pgrep', ['-f', own]).stdout.toString().trim().split('\n').filter(Boolean).length >= 2) res();
      });
      const t = setInterval(() => {
        if (spawnSync('pgrep', ['-f', own]).stdout.toString().trim().split('\n').filter(Boolean).length >= 2) {
          clearInterval(t);
          res();
        }
      }, 50);
    });
    await running;
    c.kill('SIGINT');
    const code = await new Promise<number | null>((res) => c.on('close', (x) => res(x)));
    expect(code, stderr).toBe(130);
    expect(spawnSync('pgrep', ['-f', own]).stdout.toString().trim()).toBe('');
    const r = read(join(dir, 'out'));
    expect(r.host.interrupted).toBe(true);
    expect(r.host.signal).toBe('SIGINT');
    expect(r.totals.missing).toBe(6);
    expect(stdout).toMatch(/INCOMPLETE: 0 runs/);
  }, 60_000);

  it('the examples (GitHub Actions workflow, Kubernetes Indexed Job) hold valid campaign and merge commands whose shards cover every job once', () => {
    const gh = readFileSync(join(process.cwd(), 'examples/github-actions-campaign.yml'), 'utf8');
    const shards = /shard: \[([\d, ]+)\]/.exec(gh)![1].split(',').map((x) => Number(x.trim()));
    const ghCmd = /node dist\/stress\/cli\.js campaign (.*) \|\|/.exec(gh)![1];
    const k8s = readFileSync(join(process.cwd(), 'examples/kubernetes-indexed-job.yaml'), 'utf8');
    const completions = Number(/completions: (\d+)/.exec(k8s)![1]);
    const k8sCmd = /node dist\/stress\/cli\.js campaign ([\s\S]*?)\n\s+resources:/.exec(k8s)![1].replace(/\s+/g, ' ').trim();
    const cases: Array<{ n: number; args: (k: number) => string[] }> = [
      { n: shards.length, args: (k) => ghCmd.replace('${{ matrix.shard }}', String(k)).replace('${{ matrix.shard }}', String(k)).split(' ') },
      { n: completions, args: (k) => k8sCmd.replaceAll('$((JOB_COMPLETION_INDEX + 1))', String(k)).split(' ') },
    ];
    expect(shards).toEqual(Array.from({ length: shards.length }, (_, i) => i + 1));
    for (const c of cases) {
      const first = parseCampaignArgs(c.args(1));
      const { jobs } = campaignJobs(first);
      const count = new Uint8Array(jobs.length);
      const outs = new Set<string>();
      for (let k = 1; k <= c.n; k++) {
        const o = parseCampaignArgs(c.args(k));
        expect({ ...o, shard: null, out: null }).toEqual({ ...first, shard: null, out: null });
        expect(o.shard).toEqual([k, c.n]);
        outs.add(o.out!);
        for (const j of shardJobs(jobs, o.shard)) count[j.index]++;
      }
      expect(outs.size).toBe(c.n);
      expect(count.every((x) => x === 1)).toBe(true);
    }
    // the merge job names every shard's directory
    const merge = /cli\.js merge (.*) --out/.exec(gh)![1].split(' ');
    expect(merge).toEqual(shards.map((k) => `shards/campaign-${k}`));
  });

  it('bad input: a clear error naming the flag, exit 2, nothing run', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--seed', '3'], /--seed.*--seeds N\|A\.\.B/],
      [['--json', 'x.json'], /--json/],
      [['--seeds', '5..2'], /--seeds A\.\.B needs A <= B/],
      [['--shard', '4/3'], /--shard takes I\/N/],
      [['--shard', 'x'], /--shard takes I\/N/],
      [['--jobs', '0'], /--jobs takes a whole number from 1/],
      [['--profiles', 'fixed,9.9'], /--profiles: '9\.9' is not one of/],
      [['--profile', 'v14', '--profiles', 'fixed'], /give either --profile or --profiles/],
      [['--vcpus', 'many'], /--vcpus/],
    ];
    for (const [args, re] of cases) {
      const c = capture();
      expect(await main(['campaign', ...args], c.io), args.join(' ')).toBe(2);
      expect(c.err.join('\n'), args.join(' ')).toMatch(re);
    }
    const dir = tmp();
    writeFileSync(join(dir, 'x'), '');
    const c = capture();
    expect(await main(['campaign', '--mode', 'sim', '--seeds', '1', '--out', dir], c.io)).toBe(2);
    expect(c.err.join('\n')).toMatch(/--out '.*' is not empty/);
    const m = capture();
    expect(await main(['merge', dir, '--out', join(dir, 'm')], m.io)).toBe(2);
    expect(m.err.join('\n')).toMatch(/merge: cannot read/);
    expect(await main(['merge', dir], capture().io)).toBe(2);
  });
});
