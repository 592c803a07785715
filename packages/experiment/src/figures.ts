import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { Aggregate, ArmPoint, BaseBand, Decomposition, PairedSummary } from './aggregate.ts';
import type { Arm, Half } from './cells.ts';
import type { MeasureMetric, MeasuresSummary } from './measures-report.ts';

/** The nets have 8 learned layers, so n runs 0 (the base net itself) to 7. */
const MAX_N = 7;
const X_TITLE = 'Layer n at which network is chopped and retrained';
const PANEL_WIDTH = 360;
const PANEL_HEIGHT = 280;

type Role = 'base' | 'control' | 'selffer' | 'selffer+' | 'transfer' | 'transfer+' | 'random';

// The paper's palette: base white-ish, selffers blue, transfers red, fine-tuned lighter.
const ROLE_STYLE: Record<Role, { color: string; shape: string }> = {
  base: { color: '#555555', shape: 'circle' },
  control: { color: '#7b3294', shape: 'triangle-up' },
  selffer: { color: '#1c3f95', shape: 'circle' },
  'selffer+': { color: '#74a9e8', shape: 'circle' },
  transfer: { color: '#b2182b', shape: 'diamond' },
  'transfer+': { color: '#f4845f', shape: 'diamond' },
  random: { color: '#2e8b57', shape: 'square' },
};

function roleOf(arm: Arm): Role {
  if (arm.startsWith('base')) return 'base';
  if (arm.startsWith('control')) return 'control';
  if (arm.startsWith('R')) return 'random';
  const selffer = arm[0] === arm[2];
  const fineTuned = arm.endsWith('+');
  if (selffer) return fineTuned ? 'selffer+' : 'selffer';
  return fineTuned ? 'transfer+' : 'transfer';
}

function halfTitle(target: Half): string {
  return `Target half ${target} (trained on ${target})`;
}

function interval(summary: { mean: number; ci95: number | null; min: number; max: number }): {
  lo: number;
  hi: number;
} {
  // With one repeat there is no interval: the band collapses to the value.
  if (summary.ci95 === null) return { lo: summary.min, hi: summary.max };
  // An accuracy lies in [0, 1]: with few repeats the t interval reaches past it, which says
  // nothing and would stretch the axis until the means are unreadable.
  return { lo: Math.max(0, summary.mean - summary.ci95), hi: Math.min(1, summary.mean + summary.ci95) };
}

// ---------------------------------------------------------------------------------------
// Figure 2

interface Fig2Row {
  layer: 'band' | 'mean' | 'seed';
  arm: Arm;
  n: number;
  /** n shifted slightly per arm, as the paper does, so markers do not hide each other */
  x: number;
  y: number;
  lo?: number;
  hi?: number;
  seed?: number;
  count?: number;
}

function figure2Rows(aggregate: Aggregate, target: Half): { rows: Fig2Row[]; arms: Arm[] } {
  const bands = aggregate.bases.filter((band) => band.target === target && band.count > 0);
  const points = aggregate.points.filter((point) => point.target === target && point.count > 0);
  const arms = aggregate.arms.filter((arm) => bands.some((b) => b.arm === arm) || points.some((p) => p.arm === arm));
  const shift = (arm: Arm): number =>
    arms.length <= 1 ? 0 : ((arms.indexOf(arm) - (arms.length - 1) / 2) * 0.25) / arms.length;
  const rows: Fig2Row[] = [];
  for (const band of bands) rows.push(...baseRows(band, shift(band.arm)));
  for (const point of points) rows.push(...pointRows(point, shift(point.arm)));
  return { rows, arms };
}

function baseRows(band: BaseBand, shift: number): Fig2Row[] {
  const { lo, hi } = interval(band);
  const rows: Fig2Row[] = [];
  for (let n = 0; n <= MAX_N; n++) rows.push({ layer: 'band', arm: band.arm, n, x: n, y: band.mean, lo, hi });
  // The paper draws the base nets above n = 0.
  rows.push({ layer: 'mean', arm: band.arm, n: 0, x: shift, y: band.mean, lo, hi, count: band.count });
  band.values.forEach((value, i) =>
    rows.push({ layer: 'seed', arm: band.arm, n: 0, x: shift, y: value, seed: band.seeds[i] ?? i + 1 }),
  );
  return rows;
}

function pointRows(point: ArmPoint, shift: number): Fig2Row[] {
  const { lo, hi } = interval(point);
  const rows: Fig2Row[] = [
    { layer: 'mean', arm: point.arm, n: point.n, x: point.n + shift, y: point.mean, lo, hi, count: point.count },
  ];
  point.values.forEach((value, i) =>
    rows.push({
      layer: 'seed',
      arm: point.arm,
      n: point.n,
      x: point.n + shift,
      y: value,
      seed: point.seeds[i] ?? i + 1,
    }),
  );
  return rows;
}

function armScales(arms: readonly Arm[]): { color: object; shape: object } {
  return {
    color: { domain: arms, range: arms.map((arm) => ROLE_STYLE[roleOf(arm)].color) },
    shape: { domain: arms, range: arms.map((arm) => ROLE_STYLE[roleOf(arm)].shape) },
  };
}

function figure2Panel(aggregate: Aggregate, target: Half): object | null {
  const { rows, arms } = figure2Rows(aggregate, target);
  if (rows.length === 0) return null;
  const scales = armScales(arms);
  const x = {
    field: 'x',
    type: 'quantitative',
    title: X_TITLE,
    scale: { domain: [-0.4, MAX_N + 0.4], nice: false },
    axis: { values: Array.from({ length: MAX_N + 1 }, (_, i) => i), format: 'd', grid: false },
  };
  const y = { field: 'y', type: 'quantitative', title: 'Test top-1 (higher is better)', scale: { zero: false } };
  // The legend would otherwise copy the faint per-run markers' opacity.
  const legend = { symbolOpacity: 1, labelLimit: 0 };
  const color = { field: 'arm', type: 'nominal', title: 'Arm', scale: scales.color, legend };
  const shape = { field: 'arm', type: 'nominal', title: 'Arm', scale: scales.shape, legend };
  const tooltip = [
    { field: 'arm', title: 'arm' },
    { field: 'n', title: 'n' },
    { field: 'y', title: 'top-1', format: '.4f' },
  ];
  return {
    title: halfTitle(target),
    width: PANEL_WIDTH,
    height: PANEL_HEIGHT,
    data: { values: rows },
    layer: [
      {
        transform: [{ filter: "datum.layer === 'band'" }],
        mark: { type: 'area', opacity: 0.15 },
        encoding: {
          x: { ...x, field: 'n' },
          y: { field: 'lo', type: 'quantitative', title: y.title },
          y2: { field: 'hi' },
          color,
        },
      },
      {
        transform: [{ filter: "datum.layer === 'band'" }],
        mark: { type: 'line', strokeDash: [4, 3], strokeWidth: 1 },
        encoding: { x: { ...x, field: 'n' }, y, color },
      },
      {
        transform: [{ filter: "datum.layer === 'seed'" }],
        mark: { type: 'point', size: 18, opacity: 0.35, filled: true },
        encoding: { x, y, color, shape, tooltip: [...tooltip, { field: 'seed', title: 'seed' }] },
      },
      {
        transform: [{ filter: "datum.layer === 'mean' && datum.n > 0" }],
        mark: { type: 'line', strokeWidth: 1.5 },
        encoding: { x, y, color, detail: { field: 'arm' } },
      },
      {
        transform: [{ filter: "datum.layer === 'mean' && datum.count > 1" }],
        mark: { type: 'rule', strokeWidth: 1.2 },
        encoding: { x, y: { field: 'lo', type: 'quantitative', title: y.title }, y2: { field: 'hi' }, color },
      },
      {
        transform: [{ filter: "datum.layer === 'mean'" }],
        mark: { type: 'point', size: 60, filled: true, stroke: '#222222', strokeWidth: 0.5 },
        encoding: { x, y, color, shape, tooltip: [...tooltip, { field: 'count', title: 'repeats' }] },
      },
    ],
  };
}

export function figure2Spec(aggregate: Aggregate): TopLevelSpec {
  return framed(
    {
      text: 'Figure 2: test top-1 against n',
      // Short lines: the title's width sets the canvas's, and a long line leaves it half empty.
      subtitle: [
        'Means over repeats, 95% CI bars; faint markers: single runs.',
        'Base net and equal-budget control sit above n = 0,',
        'their bands (mean ± 95% CI) drawn across every n.',
      ],
    },
    aggregate.targets.map((target) => figure2Panel(aggregate, target)).filter((panel) => panel !== null),
  );
}

// ---------------------------------------------------------------------------------------
// Figure 3

const QUANTITIES = {
  coAdaptation: 'Performance drop due to fragile co-adaptation',
  specificity: 'Performance drop due to representation specificity',
  boost: 'Transfer + fine-tuning improves generalization',
} as const;

interface Fig3Row {
  quantity: string;
  n: number;
  y: number;
  lo?: number;
  hi?: number;
  count: number;
}

function figure3Rows(rows: readonly Decomposition[]): Fig3Row[] {
  const out: Fig3Row[] = [];
  const push = (quantity: string, n: number, summary: PairedSummary | null): void => {
    if (!summary || summary.count === 0) return;
    const ci = summary.ci95 === null ? {} : { lo: summary.mean - summary.ci95, hi: summary.mean + summary.ci95 };
    out.push({ quantity, n, y: summary.mean, ...ci, count: summary.count });
  };
  for (const row of rows) {
    push(QUANTITIES.coAdaptation, row.n, row.coAdaptation);
    push(QUANTITIES.specificity, row.n, row.specificity);
    push(QUANTITIES.boost, row.n, row.boost);
  }
  return out;
}

function figure3Panel(aggregate: Aggregate, target: Half): object | null {
  const decomposition = aggregate.decomposition.filter((row) => row.target === target);
  const first = decomposition[0];
  const rows = figure3Rows(decomposition);
  if (!first || rows.length === 0) return null;
  const { base, selffer, transfer, transferFineTuned } = first.arms;
  const x = {
    field: 'n',
    type: 'ordinal',
    title: X_TITLE,
    scale: { domain: aggregate.layers },
    axis: { labelAngle: 0 },
  };
  const y = { field: 'y', type: 'quantitative', title: 'Change in top-1 accuracy' };
  const quantities = Object.values(QUANTITIES);
  const color = {
    field: 'quantity',
    type: 'nominal',
    title: null,
    scale: { domain: quantities, range: ['#1c3f95', '#b2182b', '#f4845f'] },
    legend: { orient: 'bottom', direction: 'vertical', labelLimit: 0 },
  };
  const bars = `datum.quantity !== '${QUANTITIES.boost}'`;
  const boost = `datum.quantity === '${QUANTITIES.boost}'`;
  const xOffset = {
    field: 'quantity',
    type: 'nominal',
    scale: { domain: [QUANTITIES.coAdaptation, QUANTITIES.specificity] },
  };
  return {
    title: {
      text: halfTitle(target),
      subtitle: [
        `co-adaptation = ${base} − ${selffer}, specificity = ${selffer} − ${transfer}`,
        `boost = ${transferFineTuned} − ${base}; error bars are 95% CIs over seeds`,
      ],
    },
    width: PANEL_WIDTH,
    height: PANEL_HEIGHT,
    data: { values: rows },
    layer: [
      {
        mark: { type: 'rule', color: '#888888' },
        data: { values: [{ zero: 0 }] },
        encoding: { y: { field: 'zero', type: 'quantitative' } },
      },
      { transform: [{ filter: bars }], mark: { type: 'bar' }, encoding: { x, xOffset, y, color } },
      {
        transform: [{ filter: `${bars} && isValid(datum.lo)` }],
        mark: { type: 'rule', color: '#222222' },
        encoding: { x, xOffset, y: { field: 'lo', type: 'quantitative', title: y.title }, y2: { field: 'hi' } },
      },
      { transform: [{ filter: boost }], mark: { type: 'line', point: true }, encoding: { x, y, color } },
      {
        transform: [{ filter: `${boost} && isValid(datum.lo)` }],
        mark: { type: 'rule', strokeWidth: 1.2 },
        encoding: { x, y: { field: 'lo', type: 'quantitative', title: y.title }, y2: { field: 'hi' }, color },
      },
    ],
  };
}

export function figure3Spec(aggregate: Aggregate): TopLevelSpec {
  const panels = aggregate.targets.map((target) => figure3Panel(aggregate, target)).filter((panel) => panel !== null);
  return framed(
    {
      text: 'Figure 3: where the performance goes',
      subtitle: [
        'The drop split into fragile co-adaptation and specificity,',
        'and the boost of transfer + fine-tuning (test top-1),',
        'differences paired by seed, then averaged.',
      ],
    },
    panels,
  );
}

// ---------------------------------------------------------------------------------------

function framed(title: { text: string; subtitle: string | string[] }, panels: object[]): TopLevelSpec {
  const frame = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { ...title, anchor: 'start' },
    background: 'white',
  };
  if (panels.length === 0) {
    return {
      ...frame,
      width: PANEL_WIDTH,
      height: 60,
      data: { values: [{ text: 'No results to plot yet.' }] },
      mark: { type: 'text', fontSize: 14 },
      encoding: { text: { field: 'text' } },
    } as TopLevelSpec;
  }
  // Each half gets its own colour legend: the arms differ (BnB vs AnA), their roles do not.
  return {
    ...frame,
    hconcat: panels,
    spacing: 40,
    resolve: {
      scale: { color: 'independent', shape: 'independent', xOffset: 'independent' },
      legend: { color: 'independent', shape: 'independent' },
    },
  } as TopLevelSpec;
}

/** Compile a vega-lite spec and render it headless to SVG (no canvas needed). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec, { logger: vega.logger(vega.None) }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.None });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export async function renderFigures(
  aggregate: Aggregate,
  measures: MeasuresSummary | null = null,
): Promise<{ figure2: string; figure3: string; measures?: string }> {
  const [figure2, figure3] = await Promise.all([renderSvg(figure2Spec(aggregate)), renderSvg(figure3Spec(aggregate))]);
  if (!measures) return { figure2, figure3 };
  return { figure2, figure3, measures: await renderSvg(measuresSpec(measures)) };
}

// ---------------------------------------------------------------------------------------
// The cheap measures, beside Figure 2

const MEASURE_PANELS: { title: string; y: string; metrics: MeasureMetric[] }[] = [
  { title: 'Linear CKA on B test images', y: 'linear CKA', metrics: ['ckaSourceTarget', 'ckaTargetReplica'] },
  { title: "LogME on B's labels", y: 'LogME (nats per image)', metrics: ['logmeSource', 'logmeTarget'] },
];

export function measuresSpec(summary: MeasuresSummary): TopLevelSpec {
  const panels = MEASURE_PANELS.map((panel) => {
    const rows = summary.points
      .filter((point) => panel.metrics.includes(point.metric))
      .map((point) => ({
        label: point.label,
        n: point.n,
        mean: point.mean,
        // No interval from one repeat: the rule collapses to the value.
        lo: point.ci95 === null ? point.min : point.mean - point.ci95,
        hi: point.ci95 === null ? point.max : point.mean + point.ci95,
      }));
    if (rows.length === 0) return null;
    const x = {
      field: 'n',
      type: 'quantitative',
      title: 'Layer n (1 = conv1 … 7 = fc7)',
      scale: { domain: [0.5, MAX_N + 0.5] },
      axis: { values: Array.from({ length: MAX_N }, (_, i) => i + 1), format: 'd' },
    };
    const color = {
      field: 'label',
      type: 'nominal',
      title: null,
      legend: { orient: 'bottom', direction: 'vertical', labelLimit: 0 },
    };
    return {
      title: panel.title,
      width: PANEL_WIDTH,
      height: PANEL_HEIGHT,
      data: { values: rows },
      layer: [
        {
          mark: { type: 'rule', strokeWidth: 1.2 },
          encoding: { x, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' }, color },
        },
        {
          mark: { type: 'line', point: true },
          encoding: { x, y: { field: 'mean', type: 'quantitative', title: panel.y, scale: { zero: false } }, color },
        },
      ],
    };
  }).filter((panel) => panel !== null);
  return framed(
    {
      text: 'The cheap measures per layer (no transfer cell trained)',
      subtitle: [
        'Mean over repeats with its 95% t interval.',
        'Set against Figure 2: where does layer n stop being general?',
      ],
    },
    panels,
  );
}
