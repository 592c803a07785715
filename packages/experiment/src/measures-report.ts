import type { CellResult } from './aggregate.ts';
import type { Arm, SweepPlan } from './cells.ts';
import { MIN_REPEATS } from './findings.ts';
import { type LayerMeasure, spearman } from './measures.ts';
import { type Summary, summarize } from './stats.ts';

/** The cheap measures' numbers, each named as the report prints it. */
export const MEASURE_METRICS = {
  ckaSourceTarget: 'CKA(baseA, baseB)',
  ckaTargetReplica: 'CKA(baseB, baseB2): ceiling',
  logmeSource: 'LogME(baseA features, B labels)',
  logmeTarget: 'LogME(baseB features, B labels)',
} as const;
export type MeasureMetric = keyof typeof MEASURE_METRICS;

/** One metric at one layer, over the repeats whose measure cell finished. */
export interface MeasurePoint extends Summary {
  metric: MeasureMetric;
  label: string;
  n: number;
  layer: string;
  seeds: number[];
}

/**
 * The estimates whose ordering over n is set against the trained grid's, and the baseline any
 * of them must beat: depth alone (−n). AnB falls with n in the paper, so any number that falls
 * with depth gets a high ρ against it; a measure tells something only where it orders the
 * layers better than −n does.
 */
const PREDICTORS = ['ckaSourceTarget', 'logmeSource', 'depth'] as const;
type Predictor = (typeof PREDICTORS)[number];
const DEPTH_LABEL = '−n (depth alone): the baseline';
const PREDICTED: readonly Arm[] = ['AnB', 'AnB+'];

/**
 * Spearman's ρ between an estimate at layer n and an arm's measured test top-1 at the same n,
 * across the sweep's n, one ρ per repeat (the repeat's measures against the repeat's cells),
 * then mean and 95% t interval over repeats.
 */
export interface MeasureCorrelation extends Summary {
  estimate: Predictor;
  label: string;
  arm: Arm;
  perRepeat: { seed: number; rho: number; layers: number[] }[];
  verdict: 'predicts the ordering' | 'reverses the ordering' | 'inconclusive';
  reason: string;
}

export interface MeasuresSummary {
  points: MeasurePoint[];
  correlations: MeasureCorrelation[];
  examples: number | null;
  features: Record<string, number>;
  ckaMethod: string | null;
}

/** Null when the sweep has no measure cells. */
export function summarizeMeasures(plan: SweepPlan, results: readonly CellResult[]): MeasuresSummary | null {
  const measureCells = plan.cells.filter((cell) => cell.kind === 'measure');
  if (measureCells.length === 0) return null;
  const byId = new Map(results.map((result) => [result.cellId, result]));
  const bySeed = new Map<number, LayerMeasure[]>();
  for (const cell of measureCells) {
    const measures = byId.get(cell.id)?.measures;
    if (measures && measures.length > 0) bySeed.set(cell.seed, measures);
  }

  const points: MeasurePoint[] = [];
  const layers = [...new Set([...bySeed.values()].flatMap((list) => list.map((m) => m.n)))].sort((a, b) => a - b);
  for (const metric of Object.keys(MEASURE_METRICS) as MeasureMetric[]) {
    for (const n of layers) {
      const values: number[] = [];
      const seeds: number[] = [];
      let layer = `n=${n}`;
      for (const [seed, list] of bySeed) {
        const measure = list.find((m) => m.n === n);
        if (!measure || !Number.isFinite(measure[metric])) continue;
        layer = measure.layer;
        values.push(measure[metric]);
        seeds.push(seed);
      }
      if (values.length > 0)
        points.push({ metric, label: MEASURE_METRICS[metric], n, layer, seeds, ...summarize(values) });
    }
  }

  const cellOf = new Map(plan.cells.map((cell) => [cell.id, cell]));
  const correlations: MeasureCorrelation[] = [];
  for (const arm of PREDICTED) {
    if (!plan.cells.some((cell) => cell.arm === arm)) continue;
    for (const estimate of PREDICTORS) {
      const perRepeat: MeasureCorrelation['perRepeat'] = [];
      for (const [seed, list] of bySeed) {
        const pairs: { n: number; estimate: number; score: number }[] = [];
        for (const result of results) {
          const cell = cellOf.get(result.cellId);
          if (!cell || cell.arm !== arm || cell.seed !== seed || cell.n === undefined) continue;
          const measure = list.find((m) => m.n === cell.n);
          // Depth is set against the same layers as the measures, so the rows compare like with like.
          if (!measure || !Number.isFinite(result.score)) continue;
          const value = estimate === 'depth' ? -cell.n : measure[estimate];
          if (!Number.isFinite(value)) continue;
          pairs.push({ n: cell.n, estimate: value, score: result.score });
        }
        pairs.sort((a, b) => a.n - b.n);
        const rho = spearman(
          pairs.map((p) => p.estimate),
          pairs.map((p) => p.score),
        );
        if (Number.isFinite(rho)) perRepeat.push({ seed, rho, layers: pairs.map((p) => p.n) });
      }
      const summary = summarize(perRepeat.map((r) => r.rho));
      correlations.push({
        estimate,
        label: estimate === 'depth' ? DEPTH_LABEL : MEASURE_METRICS[estimate],
        arm,
        perRepeat,
        ...summary,
        ...correlationVerdict(summary),
      });
    }
  }

  const first = [...bySeed.values()][0];
  return {
    points,
    correlations,
    examples: first?.[0]?.examples ?? null,
    features: Object.fromEntries((first ?? []).map((m) => [m.layer, m.features])),
    ckaMethod: first?.[0]?.ckaMethod ?? null,
  };
}

export function correlationVerdict(summary: Summary): Pick<MeasureCorrelation, 'verdict' | 'reason'> {
  if (summary.count < MIN_REPEATS)
    return {
      verdict: 'inconclusive',
      reason: `${summary.count} repeat(s) with a ρ (at least 3 layers measured and trained); ${MIN_REPEATS} are needed for an interval`,
    };
  const lo = summary.mean - (summary.ci95 ?? Infinity);
  const hi = summary.mean + (summary.ci95 ?? Infinity);
  // A t interval over 3 repeats can pass ±1; ρ cannot, so the interval is shown clipped to its
  // range. The clip never moves an end across 0, so the verdict is the same either way.
  const shown = `[${Math.max(lo, -1).toFixed(2)}, ${Math.min(hi, 1).toFixed(2)}]`;
  if (lo > 0) return { verdict: 'predicts the ordering', reason: `the 95% interval of ρ, ${shown}, lies above 0` };
  if (hi < 0) return { verdict: 'reverses the ordering', reason: `the 95% interval of ρ, ${shown}, lies below 0` };
  return { verdict: 'inconclusive', reason: `the 95% interval of ρ, ${shown}, spans 0` };
}
