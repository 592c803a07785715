import { describe, expect, it } from 'vitest';
import { aggregate } from './aggregate.ts';
import { renderFigures } from './figures.ts';
import { expandGrid } from './grid.ts';
import { buildReport, escapeHtml } from './report.ts';
import { parseSpec } from './spec.ts';
import { DEMO_YAML, syntheticResults } from './test-fixtures.ts';

const spec = parseSpec(DEMO_YAML.replace('repeats: 1', 'repeats: 2'), 'demo.yaml');
const plan = expandGrid(spec);

describe('buildReport', async () => {
  const results = syntheticResults(plan, {
    skip: (cell) => cell.name === 'AnB n=7 seed=2',
    history: (cell) => (cell.name === 'baseB seed=1' ? [0.3, 0.4, 0.5, 0.6, 0.7, 0.8] : []),
  });
  const figures = await renderFigures(aggregate(plan, results));
  const hostile = '<script>alert(1)</script>';
  const report = buildReport(
    plan,
    results.map((result, i) => {
      if (i === 0) return { ...result, backend: hostile };
      if (result.name === 'AnB n=3 seed=1')
        return { ...result, prefixCache: { mode: 'exact' as const, layer: 'conv3', bytes: 1 << 20 } };
      if (result.name === 'AnB+ n=3 seed=1')
        return { ...result, prefixCache: { mode: 'uncached' as const, reason: 'nothing frozen' } };
      return result;
    }),
    { spec, generatedAt: '2025-01-01T00:00:00Z', figures, extra: { [hostile]: hostile, commit: 'abc123' } },
  );

  it('is one self-contained page with the warnings first and both figures inline', () => {
    const { html } = report;
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain('<h1>demo-mnist</h1>');
    expect(html.match(/<svg/g)!.length).toBeGreaterThanOrEqual(2);
    expect(html).not.toMatch(/<(script|link)\b/i);
    expect(html).not.toMatch(/\bsrc="http/);
    const warnings = html.indexOf('<h2>Warnings</h2>');
    expect(warnings).toBeGreaterThan(0);
    expect(warnings).toBeLessThan(html.indexOf('<h2>Figure 2</h2>'));
    expect(html).toContain('baseB seed=1 was still improving');
    expect(html).toContain('1 of 60 cells have no result yet: AnB n=7 seed=2');
    expect(html).toContain('fragile co-adaptation (baseB − BnB)');
    expect(html).toContain('AnB+ n=3 seed=2');
    // Which score every number is, said once at the top.
    expect(html).toContain('test top-1: the accuracy of each cell');
    // The findings come before the figures, each with a verdict; two repeats give no verdict.
    const findings = html.indexOf('<h2>Findings</h2>');
    expect(findings).toBeGreaterThan(warnings);
    expect(findings).toBeLessThan(html.indexOf('<h2>Figure 2</h2>'));
    expect(html).toContain('<span class="maybe">inconclusive</span>');
    expect(html).not.toContain('<span class="yes">replicates</span>');
    expect(html).toContain('<h2>Table 1: comparisons</h2>');
    expect(html).toContain('<b>AnB+ − baseB</b>');
  });

  it('escapes every piece of text', () => {
    expect(report.html).not.toContain(hostile);
    expect(report.html).toContain(escapeHtml(hostile));
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });

  it('shows a figure that could run script as an inert image', () => {
    const bad = buildReport(plan, results, {
      spec,
      generatedAt: 'now',
      figures: { figure2: '<svg><script>alert(1)</script></svg>', figure3: figures.figure3 },
    });
    expect(bad.html).not.toMatch(/<script/i);
    expect(bad.html).toContain('<img alt="Figure 2" src="data:image/svg+xml;base64,');
  });

  it('says per cell how its frozen layers ran, in the page, the CSV and the JSON', () => {
    expect(report.html).toContain('<span title="outputs of conv3 cached">exact cache</span>');
    expect(report.html).toContain('<span title="nothing frozen">uncached</span>');
    const cells = report.cellsCsv.trimEnd().split('\n');
    expect(cells.find((line) => line.includes(',AnB n=3,') || line.includes('AnB n=3 seed=1'))).toMatch(/,exact$/);
    const json = JSON.parse(report.json) as { cells: Array<{ name: string; result?: { prefixCache?: unknown } }> };
    expect(json.cells.find((cell) => cell.name === 'AnB n=3 seed=1')?.result?.prefixCache).toEqual({
      mode: 'exact',
      layer: 'conv3',
      bytes: 1 << 20,
    });
  });

  it('writes one CSV row per cell and per arm and n', () => {
    const cells = report.cellsCsv.trimEnd().split('\n');
    expect(cells[0]).toBe(
      'cell_id,name,arm,kind,target,source,n,mode,seed,split_id,implicit,status,score,val_score,test_top1,test_top5,epochs,stopped_by,still_improving,seconds,images_per_second,backend,prefix_cache',
    );
    expect(cells).toHaveLength(1 + plan.cells.length);
    expect(cells.find((line) => line.includes(',AnB n=7 seed=2,'))).toContain(',missing,');
    const arms = report.armsCsv.trimEnd().split('\n');
    // 2 base arms + 4 transfer arms x 7 n
    expect(arms).toHaveLength(1 + 2 + 4 * 7);
    expect(arms[1]).toMatch(/^baseA,base,A,,,,test_top1,/);
  });

  it('writes JSON with the aggregate, the spec and no NaN', () => {
    const json = JSON.parse(report.json) as Record<string, unknown>;
    expect(json).toMatchObject({ report: 'transferlab', name: 'demo-mnist', generatedAt: '2025-01-01T00:00:00Z' });
    expect((json.cells as unknown[]).length).toBe(plan.cells.length);
    expect((json.spec as { name: string }).name).toBe('demo-mnist');
    expect(report.json).not.toContain('NaN');
    expect(json.scores).toMatchObject({ primary: expect.stringMatching(/^test top-1/) as unknown });
    const findings = json.findings as { id: string; verdict: string }[];
    expect(findings.find((f) => f.id === 'specificity')).toMatchObject({ verdict: 'inconclusive' });
    expect(findings.find((f) => f.id === 'fine-tuning-recovers')).toMatchObject({ verdict: 'not measured' });
  });
});
