import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  type CellResult,
  type SweepSpec,
  aggregate,
  buildReport,
  expandGrid,
  renderFigures,
  validateSpec,
} from '@transferlab/experiment';

/** What a report folder keeps so that `transferlab report DIR` can redraw it with no store. */
interface ReportInputs {
  spec: SweepSpec;
  results: CellResult[];
  extra?: Record<string, string>;
}

const INPUTS = 'inputs.json';

async function svgToPng(svg: string): Promise<Buffer> {
  // Drawn at twice the SVG's size so the PNG stays sharp on high-density screens.
  return sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
}

/**
 * Writes the report (HTML, figures as SVG and PNG, CSV, JSON) into `dir`. Files are written
 * into a sibling folder first and swapped in whole, so a failure never leaves half a report.
 */
export async function writeReport(dir: string, inputs: ReportInputs): Promise<{ files: string[]; warnings: string[] }> {
  const plan = expandGrid(inputs.spec);
  const agg = aggregate(plan, inputs.results);
  const figures = await renderFigures(agg);
  const report = buildReport(plan, inputs.results, {
    spec: inputs.spec,
    generatedAt: new Date().toISOString(),
    figures,
    extra: inputs.extra,
  });
  const files: Record<string, string | Buffer> = {
    'index.html': report.html,
    'report.json': report.json,
    'cells.csv': report.cellsCsv,
    'arms.csv': report.armsCsv,
    'figure2.svg': figures.figure2,
    'figure3.svg': figures.figure3,
    'figure2.png': await svgToPng(figures.figure2),
    'figure3.png': await svgToPng(figures.figure3),
    [INPUTS]: JSON.stringify(inputs, null, 2),
  };
  const staging = `${dir}.writing-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  for (const [name, content] of Object.entries(files)) await writeFile(join(staging, name), content);
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch(() => undefined);
  await rename(staging, dir);
  await rm(old, { recursive: true, force: true });
  return { files: Object.keys(files).map((name) => join(dir, name)), warnings: agg.warnings };
}

/** Redraws a report from the inputs a previous `writeReport` left in the folder. */
export async function redrawReport(dir: string): Promise<{ files: string[]; warnings: string[] }> {
  const path = join(dir, INPUTS);
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch {
    throw new Error(`${path}: not found; is ${dir} a report folder written by 'transferlab run'?`);
  }
  const inputs = JSON.parse(raw) as ReportInputs;
  return writeReport(dir, { ...inputs, spec: validateSpec(inputs.spec, path) });
}
