import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateSpec } from '@transferlab/experiment';
import { type ReportFileName, type ReportInputs, REPORT_FILES, renderReport } from '@transferlab/runner/report';

/** What a report folder keeps so that `transferlab report DIR` can redraw it with no store. */
export interface WrittenReport {
  files: string[];
  warnings: string[];
  /** the paper's findings with their verdicts, one line each */
  findings: string[];
}

const INPUTS = 'inputs.json';

/**
 * Writes the report (HTML, figures as SVG and PNG, CSV, JSON, and its inputs) into `dir`. Files
 * are written into a sibling folder first and swapped in whole, so a failure never leaves half a
 * report.
 */
export async function writeReport(dir: string, inputs: ReportInputs): Promise<WrittenReport> {
  const report = await renderReport(inputs, new Set(Object.keys(REPORT_FILES) as ReportFileName[]));
  const staging = `${dir}.writing-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  for (const file of report.files) await writeFile(join(staging, file.name), file.data);
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch(() => undefined);
  await rename(staging, dir);
  await rm(old, { recursive: true, force: true });
  return {
    files: report.files.map((file) => join(dir, file.name)),
    warnings: report.aggregate.warnings,
    findings: report.findings,
  };
}

async function readInputs(dir: string): Promise<ReportInputs> {
  const path = join(dir, INPUTS);
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch {
    throw new Error(`${path}: not found; is ${dir} a report folder written by 'transferlab run'?`);
  }
  const inputs = JSON.parse(raw) as ReportInputs;
  return { ...inputs, spec: validateSpec(inputs.spec, path) };
}

/**
 * Redraws a report from the inputs a previous `writeReport` left in the folder; `randomSplitDir`
 * names the report of the same sweep on a random split, when this one is on a dissimilar split.
 */
export async function redrawReport(dir: string, randomSplitDir?: string): Promise<WrittenReport> {
  const inputs = await readInputs(dir);
  if (randomSplitDir !== undefined) {
    const other = await readInputs(randomSplitDir);
    inputs.randomSplit = { spec: other.spec, results: other.results };
  }
  return writeReport(dir, inputs);
}
