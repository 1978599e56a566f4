/**
 * The HTML reports in a real browser: Debian's Chromium, headless, driven by
 * playwright-core. Each page (a failing run, a campaign, a zoo kill table)
 * loads from a file with no console error and no request outside it, its
 * plots render (SVG with drawn marks and a real size; a screenshot with ink
 * in the plot's box), and a violation message holding `<script>` shows as
 * text and runs nothing. `.ci/run` installs Chromium; without it the test
 * fails under CI and is skipped, saying so, elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { htmlBench, htmlCampaign, htmlRun, htmlZoo, esc, svgBars } from '../../stress/html.js';
import type { BenchResults } from '../../bench/run.js';
import { parseRunArgs } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import type { Report } from '../../stress/report.js';
import type { CampaignResult } from '../../stress/campaign.js';
import type { ZooRow } from '../../stress/zoo.js';

const CHROMIUM = process.env.S2STRESS_CHROMIUM ?? '/usr/bin/chromium';
const have = existsSync(CHROMIUM);
if (!have && process.env.CI) throw new Error(`Chromium is missing at ${CHROMIUM}: .ci/run installs it (apt-get install chromium)`);
if (!have) console.warn(`test/html/browser.test.ts: SKIPPED, no Chromium at ${CHROMIUM} (apt-get install chromium, or set S2STRESS_CHROMIUM)`);

const XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">';

describe.skipIf(!have)('HTML reports in headless Chromium', () => {
  let browser: Browser;
  const dir = mkdtempSync(join(tmpdir(), 's2html-'));

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  /** Open the file; returns the page, the console errors and every request that was not the file itself. */
  async function open(name: string, html: string): Promise<{ page: Page; errors: string[]; requests: string[] }> {
    const file = join(dir, name);
    writeFileSync(file, html);
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('request', (r) => {
      if (r.url() !== pathToFileURL(file).href) requests.push(r.url());
    });
    await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    return { page, errors, requests };
  }

  /** Every plot: its SVG's size and how many marks (bars, lines) it drew. */
  async function plots(page: Page): Promise<{ caption: string; w: number; h: number; marks: number }[]> {
    return page.$$eval('figure.plot', (figs) =>
      figs.map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        const marks = svg ? [...svg.querySelectorAll('rect.bar, polyline.line')].filter((e) => (e as SVGGraphicsElement).getBBox().width > 0).length : 0;
        return { caption: f.querySelector('figcaption')?.textContent ?? '', w: box?.width ?? 0, h: box?.height ?? 0, marks };
      }),
    );
  }

  /** Share of the screenshot of an element's box that is not white: the plot drew something. */
  async function ink(page: Page, selector: string): Promise<number> {
    const el = await page.$(selector);
    const png = await el!.screenshot();
    // Decode through the browser itself: draw the PNG on a canvas and count non-white pixels.
    return page.evaluate(async (b64) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext('2d')!;
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) n++;
      return n / (c.width * c.height);
    }, png.toString('base64'));
  }

  it('a failing run: no console error, nothing fetched, the throughput and lock plots drawn, a <script> in a violation shown as text', async () => {
    const o = parseRunArgs(['--mode', 'sim', '--scenario', 'migrate', '--profile', 'v14', '--vcpus', '2', '--guest-mem', '4M', '--ops', '3000', '--seed', '1', '--quiet']);
    const r: Report = await runSim(o);
    expect(r.result).toBe('fail');
    expect(r.timeline.length).toBeGreaterThan(2);
    r.violations[0] = { ...r.violations[0], message: `${XSS} ${r.violations[0].message}` };
    const { page, errors, requests } = await open('run.html', htmlRun(r));
    expect(errors).toEqual([]);
    expect(requests).toEqual([]);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.locator('td', { hasText: '<script>window.__pwned = 1</script>' }).count()).toBe(1);
    expect(await page.$$eval('script, img', (x) => x.length)).toBe(0);
    const p = await plots(page);
    expect(p.map((x) => x.caption)).toEqual(['accesses and faults per second', 'average wait (contended acquisitions) and hold, us', 'p99 wait and hold, us']);
    for (const x of p) {
      expect(x.w, x.caption).toBeGreaterThan(200);
      expect(x.h, x.caption).toBeGreaterThan(100);
      expect(x.marks, x.caption).toBeGreaterThan(0);
    }
    expect(await ink(page, 'figure.plot svg')).toBeGreaterThan(0.01);
    await page.close();
  }, 60_000);

  it('a campaign and a zoo kill table: signatures, discovery and the detection-time CDF drawn, no console error', async () => {
    const campaign = JSON.parse(readFileSync(join(process.cwd(), 'test/html/campaign-sample.json'), 'utf8')) as CampaignResult;
    campaign.signatures[0].example = XSS;
    const c = await open('campaign.html', htmlCampaign(campaign));
    expect(c.errors).toEqual([]);
    expect(c.requests).toEqual([]);
    const cp = await plots(c.page);
    expect(cp.map((x) => [x.caption, x.marks])).toEqual([
      ['failing runs per signature', campaign.signatures.length],
      ['distinct failures found over the runs (job order)', 1],
    ]);
    expect(await c.page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await c.page.textContent('body')).toContain('<script>window.__pwned = 1</script>');
    expect(await ink(c.page, 'figure.plot svg')).toBeGreaterThan(0.01);
    await c.page.close();

    const zoo = JSON.parse(readFileSync(join(process.cwd(), 'bench/kill-modern.json'), 'utf8')) as { rows: ZooRow[]; meta: string };
    const z = await open('zoo.html', htmlZoo(zoo.rows, zoo.meta));
    expect(z.errors).toEqual([]);
    const zp = await plots(z.page);
    expect(zp[0].caption).toMatch(/CDF/);
    expect(zp[0].marks).toBe(2); // sim and threads
    expect(zp[1].marks).toBe(zoo.rows.length * 2);
    expect(await ink(z.page, 'figure.plot svg')).toBeGreaterThan(0.01);
    await z.page.close();
  }, 60_000);

  it('bench results: scaling by vCPUs (accesses, faults, contention) per lock kind, sim throughput, no console error', async () => {
    const bench = JSON.parse(readFileSync(join(process.cwd(), 'bench/results.json'), 'utf8')) as BenchResults;
    bench.scaling!.note = XSS;
    const locks = new Set(bench.scaling!.points.map((p) => p.lock));
    expect(locks.size).toBeGreaterThan(1);
    const b = await open('bench.html', htmlBench(bench));
    expect(b.errors).toEqual([]);
    expect(b.requests).toEqual([]);
    expect(await b.page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await b.page.textContent('body')).toContain('<script>window.__pwned = 1</script>');
    const bp = await plots(b.page);
    // one line per lock kind in each scaling plot; one bar per sim-speed mode
    expect(bp.map((x) => [x.caption, x.marks])).toEqual([
      ['guest accesses per second by vCPUs', locks.size],
      ['stage-2 faults per second by vCPUs', locks.size],
      ['mmu_lock: share of acquisitions that waited, by vCPUs', locks.size],
      ['guest accesses per second (median)', bench.sim!.rows.length],
    ]);
    for (const x of bp) expect(x.w * x.h, x.caption).toBeGreaterThan(200 * 100);
    expect(await ink(b.page, 'figure.plot svg')).toBeGreaterThan(0.01);
    await b.page.close();
  }, 60_000);

  it('the checks fail on a broken page: unescaped text runs the script, an empty plot has no marks', async () => {
    const broken = `<!doctype html><html><body><p>${XSS}</p>${svgBars('x', ['a'], [])}</body></html>`;
    const { page } = await open('broken.html', broken);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeGreaterThan(0);
    expect((await plots(page)).every((x) => x.marks === 0)).toBe(true);
    await page.close();
    expect(esc('<a href="x">&\'')).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
  }, 60_000);
});
