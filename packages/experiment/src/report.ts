import { aggregate } from './aggregate.ts';
import type { Aggregate, CellResult, CellRow, PairedSummary, PrefixCacheMode, PrefixCacheUse } from './aggregate.ts';
import { MIN_REPEATS, RECOVERY_MARGIN, describe as describeComparison, findings, table1 } from './findings.ts';
import type { Comparison, Finding, FindingsOptions } from './findings.ts';
import type { Half, SweepPlan } from './cells.ts';
import type { SweepSpec } from './spec.ts';
import type { Summary } from './stats.ts';
import { type MeasuresSummary, summarizeMeasures } from './measures-report.ts';

export interface ReportOptions {
  spec: SweepSpec;
  /** ISO timestamp; passed in so the same inputs give the same report */
  generatedAt: string;
  figures: { figure2: string; figure3: string; measures?: string };
  /** free-form facts for the header (host, commit, command line) */
  extra?: Record<string, string>;
  /** what the findings compare this sweep with (the random split, for a dissimilar one) */
  findings?: FindingsOptions;
}

export interface Report {
  json: string;
  cellsCsv: string;
  armsCsv: string;
  html: string;
}

/** Bumped when the JSON report changes shape. 2: test top-1 as the score, findings, comparisons. */
const REPORT_VERSION = 2;

/** What every number in a report is, said once and printed with it. */
export function scoreDefinitions(
  agg: Pick<Aggregate, 'scoreEvaluations'>,
  spec: SweepSpec,
): { primary: string; secondary: string } {
  const test =
    spec.split.testPerClass === undefined
      ? 'every test image'
      : `up to ${spec.split.testPerClass} test images per class`;
  return {
    primary: `test top-1: the accuracy of each cell's final net on its target half's held-out test split (${test}), which no decision of the run looked at`,
    secondary: `validation score: the mean of the ${spec.training.scoreTopK} best validation top-1 values among each cell's first ${agg.scoreEvaluations} epochs (the paper's score; the validation split also drives early stopping when it is on)`,
  };
}

/** The report's findings and Table 1 comparisons, for every target half. */
export interface Verdicts {
  findings: Finding[];
  comparisons: Comparison[];
}

export function verdicts(agg: Aggregate, options: FindingsOptions = {}): Verdicts {
  return { findings: findings(agg, options), comparisons: agg.targets.flatMap((target) => table1(agg, target)) };
}

export function buildReport(plan: SweepPlan, results: readonly CellResult[], options: ReportOptions): Report {
  const agg = aggregate(plan, results);
  const judged = verdicts(agg, options.findings);
  const measures = summarizeMeasures(plan, results);
  return {
    json: reportJson(agg, judged, options, measures),
    cellsCsv: cellsCsv(agg),
    armsCsv: armsCsv(agg),
    html: reportHtml(agg, judged, options, measures),
  };
}

/** The findings as plain lines, for a terminal at the end of a run. */
export function findingsText(judged: Verdicts): string[] {
  return judged.findings
    .filter((f) => f.verdict !== 'not measured')
    .map((f) => `${f.verdict.toUpperCase()}: ${f.claim} — ${f.reason}`);
}

// ---------------------------------------------------------------------------------------
// JSON and CSV

function reportJson(
  agg: Aggregate,
  judged: Verdicts,
  options: ReportOptions,
  measures: MeasuresSummary | null,
): string {
  const body = {
    report: 'transferlab',
    version: REPORT_VERSION,
    name: options.spec.name,
    generatedAt: options.generatedAt,
    extra: options.extra ?? {},
    scores: scoreDefinitions(agg, options.spec),
    summary: agg.summary,
    warnings: agg.warnings,
    findings: judged.findings,
    comparisons: judged.comparisons,
    targets: agg.targets,
    layers: agg.layers,
    arms: agg.arms,
    bases: agg.bases,
    points: agg.points,
    decomposition: agg.decomposition,
    cells: agg.cells,
    // Present only when the spec asks for the cheap measures (an addition, not a new shape).
    ...(measures ? { measures } : {}),
    spec: options.spec,
  };
  // NaN (a mean of nothing) has no JSON form; null says "no value" honestly.
  return `${JSON.stringify(body, (_key, value: unknown) => (typeof value === 'number' && !Number.isFinite(value) ? null : value), 2)}\n`;
}

function csvField(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : '';
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csv(header: readonly string[], rows: readonly unknown[][]): string {
  return [header, ...rows].map((row) => row.map(csvField).join(',')).join('\n') + '\n';
}

function cellsCsv(agg: Aggregate): string {
  const header = [
    'cell_id',
    'name',
    'arm',
    'kind',
    'target',
    'source',
    'n',
    'mode',
    'seed',
    'split_id',
    'implicit',
    'status',
    'score',
    'val_score',
    'test_top1',
    'test_top5',
    'epochs',
    'stopped_by',
    'still_improving',
    'seconds',
    'images_per_second',
    'backend',
    'prefix_cache',
  ];
  const rows = agg.cells.map((row) => [
    row.id,
    row.name,
    row.arm,
    row.kind,
    row.target,
    row.source,
    row.n,
    row.mode,
    row.seed,
    row.splitId,
    row.implicit,
    row.status,
    row.score,
    row.valScore,
    row.result?.testTop1,
    row.result?.testTop5,
    row.result?.epochs,
    row.result?.stoppedBy,
    row.result?.stillImproving,
    row.result?.seconds,
    row.result?.imagesPerSecond,
    row.result?.backend,
    row.result?.prefixCache?.mode,
  ]);
  return csv(header, rows);
}

function armsCsv(agg: Aggregate): string {
  const header = [
    'arm',
    'kind',
    'target',
    'source',
    'mode',
    'n',
    'score',
    'mean',
    'ci95',
    'sd',
    'min',
    'max',
    'count',
    'seeds',
    'values',
  ];
  const rows: unknown[][] = [
    ...agg.bases.map((b) => [
      b.arm,
      b.kind,
      b.target,
      '',
      '',
      '',
      'test_top1',
      b.mean,
      b.ci95,
      b.sd,
      b.min,
      b.max,
      b.count,
      b.seeds.join(' '),
      b.values.join(' '),
    ]),
    ...agg.points.map((p) => [
      p.arm,
      p.kind,
      p.target,
      p.source,
      p.mode,
      p.n,
      'test_top1',
      p.mean,
      p.ci95,
      p.sd,
      p.min,
      p.max,
      p.count,
      p.seeds.join(' '),
      p.values.join(' '),
    ]),
  ];
  return csv(header, rows);
}

// ---------------------------------------------------------------------------------------
// HTML

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const esc = escapeHtml;

function fmt(value: number | null | undefined, digits = 4): string {
  return value === null || value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits);
}

function meanCi(summary: Pick<Summary, 'mean' | 'ci95' | 'count'> | null | undefined, signed = false): string {
  if (!summary || summary.count === 0) return '–';
  const mean = signed && summary.mean > 0 ? `+${fmt(summary.mean)}` : fmt(summary.mean);
  const ci = summary.ci95 === null ? '' : ` ± ${fmt(summary.ci95)}`;
  return `${mean}${ci} <span class="count">(${summary.count})</span>`;
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '–';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

/**
 * Figures are inlined so the page stays one file and its text stays searchable; anything
 * that could run script is shown as an image instead, where browsers never execute it.
 */
function figureHtml(svg: string, alt: string): string {
  const trimmed = svg.trim();
  const inert = trimmed.startsWith('<svg') && !/<script|<foreignObject|\son[a-z]+\s*=|javascript:/i.test(trimmed);
  if (inert) return trimmed;
  return `<img alt="${esc(alt)}" src="data:image/svg+xml;base64,${Buffer.from(trimmed, 'utf8').toString('base64')}">`;
}

function table(header: readonly string[], rows: readonly string[][], options: { className?: string } = {}): string {
  const head = `<tr>${header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>`;
  const body = rows.map((row) => `<tr>${row.map((cell) => `<td>${cell}</td>`).join('')}</tr>`).join('\n');
  return `<table${options.className ? ` class="${options.className}"` : ''}><thead>${head}</thead><tbody>\n${body}\n</tbody></table>`;
}

function armTable(agg: Aggregate, target: Half): string {
  const arms = agg.arms.filter(
    (arm) =>
      agg.bases.some((b) => b.arm === arm && b.target === target) ||
      agg.points.some((p) => p.arm === arm && p.target === target),
  );
  const header = ['arm', 'n = 0 (base)', ...agg.layers.map((n) => `n = ${n}`)];
  const rows = arms.map((arm) => {
    const band = agg.bases.find((b) => b.arm === arm);
    return [
      `<b>${esc(arm)}</b>`,
      band ? meanCi(band) : '',
      ...agg.layers.map((n) => {
        const point = agg.points.find((p) => p.arm === arm && p.n === n);
        return point ? meanCi(point) : '';
      }),
    ];
  });
  return `<h3>Target half ${esc(target)}</h3>\n${table(header, rows, { className: 'num' })}`;
}

function decompositionTable(agg: Aggregate, target: Half): string {
  const rows = agg.decomposition.filter((row) => row.target === target);
  const first = rows[0];
  if (!first) return '';
  const { base, selffer, transfer, transferFineTuned } = first.arms;
  const header = [
    'n',
    `fragile co-adaptation (${base} − ${selffer})`,
    `representation specificity (${selffer} − ${transfer})`,
    `total drop (${base} − ${transfer})`,
    `transfer + fine-tuning boost (${transferFineTuned} − ${base})`,
  ];
  const total = (a: PairedSummary | null, b: PairedSummary | null): string => {
    if (!a || !b) return '–';
    return fmt(a.mean + b.mean);
  };
  return `<h3>Target half ${esc(target)}</h3>\n${table(
    header,
    rows.map((row) => [
      String(row.n),
      meanCi(row.coAdaptation, true),
      meanCi(row.specificity, true),
      total(row.coAdaptation, row.specificity),
      meanCi(row.boost, true),
    ]),
    { className: 'num' },
  )}`;
}

const VERDICT_CLASS: Record<Finding['verdict'], string> = {
  replicates: 'yes',
  'does not replicate': 'no',
  inconclusive: 'maybe',
  'not measured': 'count',
};

function findingsTable(judged: Verdicts): string {
  const rows = judged.findings.map((f) => [
    esc(f.target),
    esc(f.claim),
    f.estimates.length === 0 ? '–' : f.estimates.map((c) => esc(describeComparison(c))).join('<br>'),
    `<span class="${VERDICT_CLASS[f.verdict]}">${esc(f.verdict)}</span>`,
    esc(f.reason.split('. ')[0] ?? ''),
  ]);
  return table(['target', "the paper's finding", 'estimate (test top-1, points)', 'verdict', 'why'], rows);
}

function comparisonsTable(judged: Verdicts): string {
  if (judged.comparisons.length === 0) return '<p>The sweep lacks the arms for these comparisons.</p>';
  const rows = judged.comparisons.map((c) => {
    const s = c.summary;
    return [
      esc(c.target),
      `<b>${esc(c.label)}</b>`,
      c.layers.length === 0 ? '–' : esc(c.layers.join(', ')),
      s ? meanCi({ mean: s.mean * 100, ci95: s.ci95 === null ? null : s.ci95 * 100, count: s.count }, true) : '–',
    ];
  });
  return table(['target', 'difference', 'averaged over n', 'mean ± 95% CI (points of test top-1)'], rows, {
    className: 'num',
  });
}

const PREFIX_CACHE_LABELS: Record<PrefixCacheMode, string> = {
  uncached: 'uncached',
  exact: 'exact cache',
  views: 'cached views',
};

/** The mode, with the cached layer or the reason for not caching as a tooltip. */
function prefixCacheCell(use: PrefixCacheUse | undefined): string {
  if (!use) return '–';
  const note = use.mode === 'uncached' ? use.reason : use.layer && `outputs of ${use.layer} cached`;
  const label = esc(PREFIX_CACHE_LABELS[use.mode] ?? use.mode);
  return note ? `<span title="${esc(note)}">${label}</span>` : label;
}

function cellTable(rows: readonly CellRow[]): string {
  const header = [
    'cell',
    'status',
    'test top-1',
    'val score',
    'test top-5',
    'epochs',
    'stopped by',
    'still improving',
    'time',
    'img/s',
    'backend',
    'prefix cache',
    'id',
  ];
  return table(
    header,
    rows.map((row) => {
      const r = row.result;
      return [
        `${esc(row.name)}${row.implicit ? ' <span class="count">(implicit)</span>' : ''}`,
        row.status === 'done' ? 'done' : '<span class="missing">missing</span>',
        fmt(row.score),
        fmt(row.valScore),
        fmt(r?.testTop5),
        r ? esc(String(r.epochs)) : '–',
        r ? esc(r.stoppedBy) : '–',
        r ? (r.stillImproving ? '<span class="warn">yes</span>' : 'no') : '–',
        r ? duration(r.seconds) : '–',
        fmt(r?.imagesPerSecond, 1),
        r?.backend !== undefined ? esc(r.backend) : '–',
        prefixCacheCell(r?.prefixCache),
        `<code>${esc(row.id)}</code>`,
      ];
    }),
    { className: 'cells' },
  );
}

const STYLE = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; }
.warnings { background: #fff6e0; border: 1px solid #e6b84c; padding: 0.6rem 1rem; border-radius: 4px; }
.warnings li { margin: 0.3rem 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.num td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.cells td { font-variant-numeric: tabular-nums; white-space: nowrap; }
.count { color: #888; font-size: 0.85em; } .missing { color: #b2182b; } .warn { color: #b26b00; font-weight: 600; }
.yes { color: #1a7f37; font-weight: 600; } .no { color: #b2182b; font-weight: 600; } .maybe { color: #b26b00; font-weight: 600; }
figure { margin: 1rem 0; overflow-x: auto; } svg, figure img { max-width: none; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; }
`;

function measuresHtml(measures: MeasuresSummary | null, figure: string | undefined): string {
  if (!measures) return '';
  const correlations = measures.correlations.map((c) => [
    esc(c.label),
    esc(c.arm),
    c.perRepeat.length === 0 ? '–' : c.perRepeat.map((r) => `${fmt(r.rho, 2)} (seed ${r.seed})`).join('<br>'),
    c.count === 0 ? '–' : `${fmt(c.mean, 2)}${c.ci95 === null ? '' : ` ± ${fmt(c.ci95, 2)}`} (${c.count})`,
    `<span class="${c.verdict === 'predicts the ordering' ? 'yes' : c.verdict === 'inconclusive' ? 'maybe' : 'no'}">${esc(c.verdict)}</span>`,
    esc(c.reason),
  ]);
  const layers = [...new Set(measures.points.map((p) => p.n))].sort((a, b) => a - b);
  const metrics = [...new Set(measures.points.map((p) => p.label))];
  const values = layers.map((n) => [
    esc(measures.points.find((p) => p.n === n)?.layer ?? String(n)),
    ...metrics.map((label) =>
      meanCi(
        measures.points.find((p) => p.n === n && p.label === label),
        false,
      ),
    ),
  ]);
  const how = [
    measures.examples === null ? '' : `${measures.examples} of B's test images`,
    measures.ckaMethod === null ? '' : `${measures.ckaMethod} linear CKA`,
    Object.keys(measures.features).length === 0
      ? ''
      : `features per image after pooling: ${Object.entries(measures.features)
          .map(([layer, count]) => `${layer} ${count}`)
          .join(', ')}`,
  ].filter((part) => part !== '');
  return `
<h2>The cheap measures</h2>
<p class="meta">Computed from the base nets alone, with no transfer cell trained: linear CKA between baseA's and baseB's layer n on B's
test images (with CKA between baseB and baseB2, a second net of B with another init, as the ceiling), and LogME of each base net's
layer-n features on B's labels. ${esc(how.join('; '))}.</p>
${figure ? `<figure>${figureHtml(figure, 'The cheap measures per layer')}</figure>` : ''}
${values.length > 0 ? table(['layer', ...metrics], values, { className: 'num' }) : '<p>No measure cell has finished.</p>'}
<p class="meta">Spearman's ρ between an estimate and the measured test top-1 of an arm across n, per repeat; then mean ± 95% t interval
over repeats. Positive ρ: the estimate orders the layers as the trained grid does. Fewer than ${MIN_REPEATS} repeats: inconclusive.
The row −n is depth alone, the baseline: where AnB falls with n, anything that falls with depth orders its layers too, so an
estimate tells something beyond depth only where its ρ is above the baseline's.</p>
${
  correlations.length > 0
    ? table(['estimate', 'arm', 'ρ per repeat', 'mean ± CI (repeats)', 'verdict', 'why'], correlations)
    : '<p>No AnB or AnB+ cells to set the estimates against (a measures-only run).</p>'
}
`;
}

function reportHtml(
  agg: Aggregate,
  judged: Verdicts,
  options: ReportOptions,
  measures: MeasuresSummary | null,
): string {
  const scores = scoreDefinitions(agg, options.spec);
  const { summary } = agg;
  const backendRows = summary.backends.map((b) => [
    esc(b.backend),
    String(b.cells),
    duration(b.seconds),
    fmt(b.imagesPerSecond, 1),
  ]);
  const extra = Object.entries(options.extra ?? {}).map(([key, value]) => [`<b>${esc(key)}</b>`, esc(value)]);
  const warnings =
    agg.warnings.length === 0
      ? '<p>No warnings.</p>'
      : `<ul class="warnings">\n${agg.warnings.map((w) => `<li>${esc(w)}</li>`).join('\n')}\n</ul>`;
  const decomposition = agg.targets.map((target) => decompositionTable(agg, target)).filter((html) => html !== '');
  const title = `transferlab report: ${options.spec.name}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${esc(options.spec.name)}</h1>
<p class="meta">transferlab report, generated ${esc(options.generatedAt)}.
${summary.finished} of ${summary.cells} cells finished; seeds ${esc(summary.seeds.join(', ') || '–')};
${esc(String(options.spec.dataset.kind))} dataset, ${esc(options.spec.net.kind)} net (width ${esc(String(options.spec.net.width))});
compute time ${duration(summary.seconds)}.</p>
<p class="meta">Every accuracy below is the primary score, ${esc(scores.primary)}, unless it says otherwise.
The secondary score (cells table only) is the ${esc(scores.secondary)}.</p>
${backendRows.length > 0 ? table(['backend', 'cells', 'compute time', 'mean images/s'], backendRows, { className: 'num' }) : ''}
${extra.length > 0 ? table(['', ''], extra) : ''}

<h2>Warnings</h2>
${warnings}

<h2>Findings</h2>
<p class="meta">Each of the paper's findings, estimated from differences paired by repeat (mean and 95% Student t interval over repeats).
Verdicts: <b>replicates</b> when every interval lies on the paper's side; <b>does not replicate</b> when one lies on the other side;
<b>inconclusive</b> when an interval spans the line between them, or with fewer than ${MIN_REPEATS} repeats. "Fine-tuning recovers"
allows ${RECOVERY_MARGIN * 100} point below the control.</p>
${findingsTable(judged)}

<h2>Table 1: comparisons</h2>
<p class="meta">As the paper's Table 1: each difference averaged over the layers n of the sweep, per repeat, then mean ± 95% CI over repeats. The
control is the base net trained on for a second budget, as long as a fine-tuned (+) cell's whole training.</p>
${comparisonsTable(judged)}

<h2>Figure 2</h2>
<figure>${figureHtml(options.figures.figure2, 'Figure 2')}</figure>
${measuresHtml(measures, options.figures.measures)}
<h2>Figure 3</h2>
<figure>${figureHtml(options.figures.figure3, 'Figure 3')}</figure>

<h2>Test top-1 per arm and n</h2>
<p class="meta">Mean ± half-width of the 95% confidence interval over repeats (Student t); the number of repeats in brackets.</p>
${agg.targets.map((target) => armTable(agg, target)).join('\n')}

<h2>Where the performance goes</h2>
${
  decomposition.length > 0
    ? `<p class="meta">Differences paired by seed, then mean ± 95% CI. Positive co-adaptation and specificity are drops; a positive boost is a gain.</p>\n${decomposition.join('\n')}`
    : '<p>The sweep lacks the arms for the decomposition (base, selffer and transfer for one target half).</p>'
}

<h2>Cells</h2>
${cellTable(agg.cells)}

<h2>Sweep spec</h2>
<details><summary>as parsed, with defaults</summary>
<pre>${esc(JSON.stringify(options.spec, null, 2))}</pre>
</details>
</body>
</html>
`;
}
