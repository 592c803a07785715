import { createHash } from 'node:crypto';
import sharp from 'sharp';
import {
  type Aggregate,
  type CellResult,
  type SweepSpec,
  aggregate,
  buildReport,
  expandGrid,
  findingsText,
  renderFigures,
  splitComparisonProblems,
  summarizeMeasures,
  verdicts,
} from '@transferlab/experiment';

/** The report's files in the order GetReport returns them, with their media types. */
export const REPORT_FILES = {
  'index.html': 'text/html; charset=utf-8',
  'report.json': 'application/json',
  'cells.csv': 'text/csv; charset=utf-8',
  'arms.csv': 'text/csv; charset=utf-8',
  'figure2.svg': 'image/svg+xml',
  'figure3.svg': 'image/svg+xml',
  'figure2.png': 'image/png',
  'figure3.png': 'image/png',
  // The cheap measures (CKA, LogME) per layer; only in a sweep with `measures`.
  'measures.svg': 'image/svg+xml',
  'measures.png': 'image/png',
  // The spec and the results, as `transferlab report DIR` reads them to redraw a report folder.
  'inputs.json': 'application/json',
} as const;

export type ReportFileName = keyof typeof REPORT_FILES;

export interface ReportFileContent {
  name: ReportFileName;
  mediaType: string;
  data: Buffer;
  sha256: string;
}

export interface RenderedReport {
  aggregate: Aggregate;
  /** each of the paper's findings with its verdict, one line each, for a terminal */
  findings: string[];
  files: ReportFileContent[];
}

/** A report's inputs: the spec and results, and optionally the random-split sweep a dissimilar one is set against. */
export interface ReportInputs {
  spec: SweepSpec;
  results: CellResult[];
  extra?: Record<string, string>;
  /** the same sweep on a random split, for the dissimilar-split finding */
  randomSplit?: { spec: SweepSpec; results: CellResult[] };
}

async function svgToPng(svg: string): Promise<Buffer> {
  // Drawn at twice the SVG's size so the PNG stays sharp on high-density screens.
  return sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
}

/**
 * A sweep's report as files in memory: aggregation, figures and HTML from packages/experiment,
 * plus PNG copies of the figures. The controller's GetReport and the CLI's report folder both
 * come from here. Only the files asked for are produced (the PNGs are the slow part).
 */
export async function renderReport(inputs: ReportInputs, wanted: ReadonlySet<ReportFileName>): Promise<RenderedReport> {
  if (inputs.randomSplit) {
    const problems = splitComparisonProblems(inputs.spec, inputs.randomSplit.spec);
    if (problems.length > 0) {
      throw new Error(
        `sweep '${inputs.spec.name}' cannot be set against '${inputs.randomSplit.spec.name}' as its random split ` +
          `(they must differ only in the split's classes):\n  ${problems.join('\n  ')}`,
      );
    }
  }
  const plan = expandGrid(inputs.spec);
  const agg = aggregate(plan, inputs.results);
  const figures = await renderFigures(agg, summarizeMeasures(plan, inputs.results));
  const findingsOptions = inputs.randomSplit
    ? { randomSplit: aggregate(expandGrid(inputs.randomSplit.spec), inputs.randomSplit.results) }
    : {};
  const report = buildReport(plan, inputs.results, {
    spec: inputs.spec,
    generatedAt: new Date().toISOString(),
    figures,
    extra: inputs.extra,
    findings: findingsOptions,
  });
  // null: a file this sweep has no content for (the measures figure of a sweep without measures).
  const produce: Record<ReportFileName, () => Promise<string | Buffer | null>> = {
    'index.html': async () => report.html,
    'report.json': async () => report.json,
    'cells.csv': async () => report.cellsCsv,
    'arms.csv': async () => report.armsCsv,
    'figure2.svg': async () => figures.figure2,
    'figure3.svg': async () => figures.figure3,
    'figure2.png': () => svgToPng(figures.figure2),
    'figure3.png': () => svgToPng(figures.figure3),
    'measures.svg': async () => figures.measures ?? null,
    'measures.png': async () => (figures.measures === undefined ? null : svgToPng(figures.measures)),
    'inputs.json': async () => JSON.stringify(inputs, null, 2),
  };
  const files: ReportFileContent[] = [];
  for (const name of Object.keys(REPORT_FILES) as ReportFileName[]) {
    if (!wanted.has(name)) continue;
    const content = await produce[name]();
    if (content === null) continue;
    const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    files.push({
      name,
      mediaType: REPORT_FILES[name],
      data,
      sha256: createHash('sha256').update(data).digest('hex'),
    });
  }
  return { aggregate: agg, findings: findingsText(verdicts(agg, findingsOptions)), files };
}

export function isReportFileName(name: string): name is ReportFileName {
  return Object.hasOwn(REPORT_FILES, name);
}
