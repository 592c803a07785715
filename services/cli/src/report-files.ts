import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type CellResult, type SweepSpec, validateSpec } from '@transferlab/experiment';
import { type ReportFileName, REPORT_FILES, renderReport } from '@transferlab/runner/report';

/** What a report folder keeps so that `transferlab report DIR` can redraw it with no store. */
interface ReportInputs {
  spec: SweepSpec;
  results: CellResult[];
  extra?: Record<string, string>;
}

const INPUTS = 'inputs.json';

/**
 * Writes the report (HTML, figures as SVG and PNG, CSV, JSON, and its inputs) into `dir`. Files
 * are written into a sibling folder first and swapped in whole, so a failure never leaves half a
 * report.
 */
export async function writeReport(dir: string, inputs: ReportInputs): Promise<{ files: string[]; warnings: string[] }> {
  const report = await renderReport(inputs, new Set(Object.keys(REPORT_FILES) as ReportFileName[]));
  const staging = `${dir}.writing-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  for (const file of report.files) await writeFile(join(staging, file.name), file.data);
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch(() => undefined);
  await rename(staging, dir);
  await rm(old, { recursive: true, force: true });
  return { files: report.files.map((file) => join(dir, file.name)), warnings: report.aggregate.warnings };
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
