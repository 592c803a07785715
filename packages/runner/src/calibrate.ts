/**
 * Throughput of a sweep's net on this machine, measured by a short run and cached per machine
 * (`~/.cache/transferlab/calibration/<key>.json`, or under TRANSFERLAB_CACHE), for the cost
 * forecast of `transferlab sweep plan` (experiment/cost.ts). The key holds everything the figures
 * depend on: the net, the input shape, the batch, the augmentation, the backend asked for, the
 * processes running at once, the versions of node and tfjs, the CPU model and its thread count.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, homedir, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NetSpec, Throughput } from '@transferlab/experiment';
import { version_core as tfjsVersion } from '@tensorflow/tfjs-core';

export interface CalibrationJob {
  net: NetSpec;
  inputShape: [number, number, number];
  classes: number;
  batchSize: number;
  augment: { crop: number; mirror: boolean } | undefined;
  warmup: number;
  steps: number;
}

export interface CalibrationResult extends Throughput {
  backend: string;
}

export interface Calibration {
  key: string;
  file: string;
  /** True when read from the cache, false when measured now. */
  cached: boolean;
  measuredAt: string;
  /** Processes measured at once (each figure is per process). */
  processes: number;
  machine: { cpu: string; threads: number; node: string; tfjs: string; backendAsked: string };
  /** The 1-minute load average when the measurement began (absent in older cache files). */
  loadAverage?: number;
  throughput: CalibrationResult;
}

export interface CalibrateOptions {
  job: CalibrationJob;
  /** How many cells run at once: that many processes are measured together. */
  processes: number;
  /** Measure again even when the cache has the key. */
  refresh?: boolean;
  cacheDir?: string;
  onProgress?: (message: string) => void;
  /** For tests: the figures, instead of a real run. */
  measure?: (job: CalibrationJob, processes: number) => Promise<CalibrationResult[]>;
  /** For tests: the machine's 1-minute load average. */
  loadAverage?: () => number;
}

export function calibrationCacheDir(): string {
  return join(process.env.TRANSFERLAB_CACHE ?? join(homedir(), '.cache', 'transferlab'), 'calibration');
}

export function machineFacts(): Calibration['machine'] {
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    threads: availableParallelism(),
    node: process.version,
    tfjs: tfjsVersion,
    backendAsked: process.env.TRANSFERLAB_BACKEND || 'auto',
  };
}

export function calibrationKey(job: CalibrationJob, processes: number, machine = machineFacts()): string {
  const identity = JSON.stringify({ v: 1, job, processes, machine });
  return createHash('sha256').update(identity).digest('hex').slice(0, 24);
}

/** The cached figures for the job on this machine, or a new measurement (then cached). */
export async function calibrate(options: CalibrateOptions): Promise<Calibration> {
  const machine = machineFacts();
  const key = calibrationKey(options.job, options.processes, machine);
  const dir = options.cacheDir ?? calibrationCacheDir();
  const file = join(dir, `${key}.json`);
  if (!options.refresh) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text !== undefined) return { ...(JSON.parse(text) as Calibration), cached: true, file };
  }
  const measure = options.measure ?? measureInProcesses(options.onProgress);
  const loadAverage = (options.loadAverage ?? (() => loadavg()[0]!))();
  const results = await measure(options.job, options.processes);
  if (results.length === 0) throw new Error('calibration: no process reported a result');
  const calibration: Calibration = {
    key,
    file,
    cached: false,
    measuredAt: new Date().toISOString(),
    processes: options.processes,
    machine,
    loadAverage,
    throughput: meanOf(results),
  };
  await mkdir(dir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(calibration, null, 2)}\n`);
  await rename(tmp, file);
  return calibration;
}

/**
 * Why a calibration may not fit a quiet machine: measured while other work kept more than half
 * of the machine's threads busy, so it forecasts a busy machine. Undefined when it was quiet (or
 * the cache file predates the record).
 */
export function busyWhenMeasured(calibration: Calibration): string | undefined {
  const load = calibration.loadAverage;
  if (load === undefined || load <= calibration.machine.threads / 2) return undefined;
  return (
    `measured under a load average of ${load.toFixed(1)} on ${calibration.machine.threads} thread(s): ` +
    'the forecast is for a machine that busy; --recalibrate when it is quiet'
  );
}

/** Per-process figures averaged over the processes (times averaged, not rates: a slow one counts fully). */
export function meanOf(results: readonly CalibrationResult[]): CalibrationResult {
  const harmonic = (pick: (result: CalibrationResult) => number): number =>
    results.length / results.reduce((sum, result) => sum + 1 / pick(result), 0);
  const mean = (pick: (result: CalibrationResult) => number): number =>
    results.reduce((sum, result) => sum + pick(result), 0) / results.length;
  const backends = new Set(results.map((result) => result.backend));
  if (backends.size > 1)
    throw new Error(`calibration: processes chose different backends (${[...backends].join(', ')})`);
  return {
    backend: results[0]!.backend,
    trainImagesPerSecond: harmonic((r) => r.trainImagesPerSecond),
    forwardImagesPerSecond: harmonic((r) => r.forwardImagesPerSecond),
    pipelineImagesPerSecond: harmonic((r) => r.pipelineImagesPerSecond),
    evalImagesPerSecond: harmonic((r) => r.evalImagesPerSecond),
    layerFlopShare: results[0]!.layerFlopShare,
    netSeconds: mean((r) => r.netSeconds),
    checkpointSeconds: mean((r) => r.checkpointSeconds),
  };
}

const CHILD = fileURLToPath(new URL('./calibrate-child.ts', import.meta.url));

function measureInProcesses(onProgress?: (message: string) => void) {
  return async (job: CalibrationJob, processes: number): Promise<CalibrationResult[]> => {
    const tsx = import.meta.resolve('tsx');
    const runs = Array.from(
      { length: processes },
      (_, i) =>
        new Promise<CalibrationResult>((resolve, reject) => {
          const child = spawn(process.execPath, ['--import', tsx, CHILD, JSON.stringify(job)], {
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          let result: CalibrationResult | undefined;
          let errors = '';
          let pending = '';
          child.stdout.on('data', (chunk: Buffer) => {
            pending += chunk.toString();
            let newline: number;
            while ((newline = pending.indexOf('\n')) >= 0) {
              const line = pending.slice(0, newline);
              pending = pending.slice(newline + 1);
              let message: { progress?: string; result?: CalibrationResult };
              try {
                message = JSON.parse(line) as typeof message;
              } catch {
                continue; // a library's own output
              }
              if (message.result) result = message.result;
              else if (message.progress && i === 0) onProgress?.(`calibration: ${message.progress}`);
            }
          });
          child.stderr.on('data', (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-2000)));
          child.on('error', reject);
          child.on('close', (code) => {
            if (code === 0 && result) resolve(result);
            else reject(new Error(`calibration process ${i + 1}/${processes} exited with ${code}: ${errors.trim()}`));
          });
        }),
    );
    return Promise.all(runs);
  };
}
