import { describe, expect, it } from 'vitest';
import { aggregate, type CellResult } from './aggregate.ts';
import type { Cell } from './cells.ts';
import { renderFigures } from './figures.ts';
import { expandGrid } from './grid.ts';
import { correlationVerdict, summarizeMeasures } from './measures-report.ts';
import type { LayerMeasure } from './measures.ts';
import { buildReport } from './report.ts';
import { validateSpec } from './spec.ts';
import { summarize } from './stats.ts';
import { syntheticResults } from './test-fixtures.ts';

function sweep(repeats: number) {
  const spec = validateSpec({
    name: 'measured',
    dataset: { kind: 'mnist' },
    arms: ['baseA', 'baseB', 'AnB', 'AnB+'],
    layers: [1, 2, 3, 4, 5],
    repeats,
    measures: {},
  });
  const plan = expandGrid(spec);
  // AnB falls with n; AnB+ is flat, so it has no ordering to predict.
  const score = (cell: Cell): number => (cell.arm === 'AnB' ? 0.6 - 0.01 * cell.n! : 0.6);
  const measures = (seed: number): LayerMeasure[] =>
    [1, 2, 3, 4, 5, 6, 7].map((n) => ({
      n,
      layer: `layer${n}`,
      // CKA falls with n as AnB does; LogME rises, the wrong way round.
      ckaSourceTarget: 0.9 - 0.1 * n + 0.001 * seed,
      ckaTargetReplica: 0.95 - 0.05 * n,
      logmeSource: -1 + 0.1 * n,
      logmeTarget: -0.5,
      features: 64,
      examples: 100,
      ckaMethod: 'full',
    }));
  const results: CellResult[] = syntheticResults(plan, { score }).map((result) =>
    result.kind === 'measure' ? { ...result, score: Number.NaN, measures: measures(result.seed) } : result,
  );
  return { spec, plan, results };
}

describe('summarizeMeasures', () => {
  it('gives per-layer means and, per repeat, Spearman ρ against the trained arms', () => {
    const { plan, results } = sweep(3);
    const summary = summarizeMeasures(plan, results)!;
    const cka3 = summary.points.find((p) => p.metric === 'ckaSourceTarget' && p.n === 3)!;
    expect(cka3.mean).toBeCloseTo(0.6 + 0.002, 12);
    expect(cka3.seeds).toEqual([1, 2, 3]);
    const of = (estimate: string, arm: string) =>
      summary.correlations.find((c) => c.estimate === estimate && c.arm === arm)!;
    expect(of('ckaSourceTarget', 'AnB').perRepeat.map((r) => r.rho)).toEqual([1, 1, 1]);
    expect(of('ckaSourceTarget', 'AnB').perRepeat[0]!.layers).toEqual([1, 2, 3, 4, 5]);
    expect(of('ckaSourceTarget', 'AnB').verdict).toBe('predicts the ordering');
    expect(of('logmeSource', 'AnB').verdict).toBe('reverses the ordering');
    // Depth alone is the baseline row: AnB falls with n, so −n orders it perfectly too.
    expect(of('depth', 'AnB')).toMatchObject({ label: '−n (depth alone): the baseline', mean: 1 });
    expect(of('depth', 'AnB').perRepeat[0]!.layers).toEqual([1, 2, 3, 4, 5]);
    // A flat arm has no ranks to correlate with: no ρ, so no verdict either way.
    expect(of('ckaSourceTarget', 'AnB+')).toMatchObject({ count: 0, verdict: 'inconclusive' });
  });

  it('shows the interval of ρ within ρ’s range, with the verdict of the unclipped one', () => {
    // The CIFAR-10 run's CKA against AnB: a t interval of [0.43, 1.17] over 3 repeats.
    const high = correlationVerdict(summarize([0.964, 0.75, 0.679]));
    expect(high).toEqual({
      verdict: 'predicts the ordering',
      reason: 'the 95% interval of ρ, [0.43, 1.00], lies above 0',
    });
    const wide = correlationVerdict(summarize([0.07, -0.75, -0.71]));
    expect(wide.verdict).toBe('inconclusive');
    expect(wide.reason).toBe('the 95% interval of ρ, [-1.00, 0.69], spans 0');
  });

  it('is inconclusive with fewer than 3 repeats, and absent without measure cells', () => {
    const { plan, results } = sweep(2);
    const summary = summarizeMeasures(plan, results)!;
    const cka = summary.correlations.find((c) => c.estimate === 'ckaSourceTarget' && c.arm === 'AnB')!;
    expect(cka.mean).toBe(1);
    expect(cka.verdict).toBe('inconclusive');
    expect(cka.reason).toMatch(/2 repeat\(s\)/);
    const plain = expandGrid(validateSpec({ name: 'plain', dataset: { kind: 'mnist' } }));
    expect(summarizeMeasures(plain, [])).toBeNull();
  });

  it('puts the figure beside Figure 2 and the numbers in the JSON; the aggregate ignores measure cells', async () => {
    const { spec, plan, results } = sweep(3);
    const agg = aggregate(plan, results);
    expect(agg.cells.some((row) => row.arm === 'measureB')).toBe(false);
    expect(agg.warnings.join(' ')).not.toMatch(/belong to no cell/);
    const figures = await renderFigures(agg, summarizeMeasures(plan, results));
    expect(figures.measures).toMatch(/^<svg/);
    const report = buildReport(plan, results, { spec, generatedAt: '2025-01-01T00:00:00Z', figures });
    const figure2 = report.html.indexOf('<h2>Figure 2</h2>');
    const cheap = report.html.indexOf('<h2>The cheap measures</h2>');
    expect(cheap).toBeGreaterThan(figure2);
    expect(cheap).toBeLessThan(report.html.indexOf('<h2>Figure 3</h2>'));
    expect(report.html).toContain('predicts the ordering');
    const json = JSON.parse(report.json) as { measures: { correlations: { verdict: string }[] } };
    expect(json.measures.correlations.map((c) => c.verdict)).toContain('reverses the ordering');
  });
});
