/**
 * `transferlab sweep plan SPEC`: the cells, their dependencies and a cost forecast (compute-hours,
 * wall time at the concurrency limit) from a calibration run of the spec's net on this
 * machine's backend, cached per machine (runner/calibrate.ts). Cells already finished in the
 * store cost nothing (the controller reuses them); splits already in the store likewise.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  type Half,
  type HalfSizes,
  KNOWN_DATASETS,
  type SweepSpec,
  expandGrid,
  halfSizesOf,
  sweepCost,
} from '@transferlab/experiment';
import { busyWhenMeasured, calibrate, workerCount } from '@transferlab/runner';
import { table } from './sweep.ts';

export interface PlanOptions {
  store: string;
  workers?: number;
  /** Forecast for a cluster running at most this many trainers at once (its maxTrainers). */
  clusterTrainers?: number;
  recalibrate?: boolean;
  calibrationSteps?: number;
  json?: boolean;
}

/**
 * Preparing a split reads the whole dataset and writes the shards of its halves. Seconds per
 * image read; not calibrated (small next to training: docs/performance.md). A JPEG dataset is
 * decoded once, then read from its shard cache.
 */
const SPLIT_SECONDS_PER_IMAGE = { decoded: 20e-6, jpeg: 0.5e-3 } as const;

interface DatasetFacts {
  shape: [number, number, number];
  classes: number;
  trainPerClass: number;
  testPerClass: number;
  jpeg: boolean;
}

function knownDataset(spec: SweepSpec): DatasetFacts | undefined {
  const dataset = spec.dataset;
  let name: string | undefined;
  if (dataset.kind === 'mnist') name = 'mnist';
  else if (dataset.kind === 'catalog') name = dataset.name;
  else if (dataset.kind === 'cifar10') name = 'cifar10';
  else if (dataset.kind === 'cifar100') name = dataset.labels === 'coarse' ? 'cifar100-coarse' : 'cifar100';
  const facts = name === undefined ? undefined : KNOWN_DATASETS[name];
  return facts && { ...facts, jpeg: name === 'cifar10-jpg' };
}

interface StoredSplit {
  shape: [number, number, number];
  halves: Record<Half, { classes: string[]; subsets: Record<'train' | 'val' | 'test', { count: number }> }>;
}

async function storedSplit(store: string, splitId: string): Promise<StoredSplit | undefined> {
  const text = await readFile(join(store, 'splits', splitId, 'manifest.json'), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : (JSON.parse(text) as StoredSplit);
}

async function finished(store: string, cellId: string): Promise<boolean> {
  return readFile(join(store, 'cells', cellId, 'result.json')).then(
    () => true,
    () => false,
  );
}

const LEARNED_LAYER_NAMES = ['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'];

const hours = (seconds: number): string => `${(seconds / 3600).toFixed(2)} h`;
export function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export async function planSweep(spec: SweepSpec, options: PlanOptions): Promise<number> {
  const store = resolve(options.store);
  const plan = expandGrid(spec);
  const known = knownDataset(spec);
  const log = (message: string): void => void process.stderr.write(`${message}\n`);

  // Image counts: the stored split's manifest, else the dataset's known sizes and the caps.
  const sizes = new Map<string, Record<Half, HalfSizes>>();
  let shape = known?.shape;
  let classes = known ? Math.ceil(known.classes / 2) : 0;
  let splitSeconds = 0;
  let decoded = false;
  for (const task of plan.splits) {
    const stored = await storedSplit(store, task.id);
    if (stored) {
      const half = (h: Half): HalfSizes => ({
        train: stored.halves[h].subsets.train.count,
        val: stored.halves[h].subsets.val.count,
        test: stored.halves[h].subsets.test.count,
      });
      sizes.set(task.id, { A: half('A'), B: half('B') });
      shape = stored.shape;
      classes = Math.max(stored.halves.A.classes.length, stored.halves.B.classes.length);
      continue;
    }
    if (!known) {
      log(
        `transferlab: split ${task.id} is not in ${store} and the image counts of a ${spec.dataset.kind} dataset are not known ` +
          'before it is read: run the sweep once (it prepares the splits first), or give --store where they are',
      );
      return 2;
    }
    sizes.set(task.id, halfSizesOf(known, spec.split));
    const images = known.classes * (known.trainPerClass + known.testPerClass);
    splitSeconds += images * SPLIT_SECONDS_PER_IMAGE.decoded;
    if (known.jpeg && !decoded) splitSeconds += images * SPLIT_SECONDS_PER_IMAGE.jpeg;
    decoded = true;
  }
  const reused = new Set<string>();
  for (const cell of plan.cells) if (await finished(store, cell.id)) reused.add(cell.id);

  const cluster = options.clusterTrainers !== undefined;
  const concurrency = cluster ? options.clusterTrainers! : workerCount(spec, options.workers);
  // A cluster's trainers each have their own node: one process measured. Locally, the workers
  // share this machine: as many processes as workers, measured together.
  const processes = cluster ? 1 : Math.min(concurrency, plan.cells.length - reused.size || 1);
  const { training } = spec;
  const calibration = await calibrate({
    job: {
      net: spec.net,
      inputShape: shape!,
      classes,
      batchSize: training.batchSize,
      augment: training.augment === false ? undefined : training.augment,
      warmup: 3,
      steps: options.calibrationSteps ?? 20,
    },
    processes,
    refresh: options.recalibrate,
    onProgress: log,
  });
  const cost = sweepCost({
    cells: plan.cells,
    sizes,
    throughput: calibration.throughput,
    reused,
    concurrency,
    splitSeconds,
    measureExamples: spec.measures?.examples,
  });

  if (options.json) {
    console.log(
      JSON.stringify(
        {
          sweep: spec.name,
          cells: cost.cells.map((c) => ({
            id: c.cell.id,
            name: c.cell.name,
            deps: c.cell.deps,
            reused: c.reused,
            frozen: c.frozen,
            seconds: c.seconds,
          })),
          computeSeconds: cost.computeSeconds,
          wallSeconds: cost.wallSeconds,
          splitSeconds: cost.splitSeconds,
          concurrency,
          calibration,
        },
        null,
        2,
      ),
    );
    return 0;
  }
  const names = new Map(plan.cells.map((cell) => [cell.id, cell.name]));
  const rows = [['cell', 'depends on', 'frozen', 'forecast', 'id']];
  for (const c of cost.cells) {
    rows.push([
      c.cell.name,
      c.cell.deps.map((dep) => names.get(dep) ?? dep.slice(0, 12)).join(', ') || '-',
      c.frozen > 0 ? LEARNED_LAYER_NAMES.slice(0, c.frozen).join(',').replace(/,.*,/, '..') : '-',
      c.reused ? 'reused' : duration(c.seconds),
      c.cell.id.slice(0, 12),
    ]);
  }
  console.log(table(rows));
  const t = calibration.throughput;
  const busy = busyWhenMeasured(calibration);
  const where = cluster
    ? `a cluster of ${concurrency} trainer(s)`
    : `${concurrency} worker process(es) on this machine`;
  console.log(
    [
      '',
      `sweep ${spec.name}: ${plan.cells.length} cells (${reused.size} finished in the store, free), ${plan.splits.length} split(s)` +
        (splitSeconds > 0 ? ` (preparing them: ${duration(splitSeconds)})` : ' (in the store)'),
      `compute: ${hours(cost.computeSeconds)} of worker time`,
      `wall time: ${duration(cost.wallSeconds)} on ${where}`,
      `calibration (${calibration.cached ? `cached, ${calibration.measuredAt}` : 'measured now'}; ${calibration.file}):`,
      `  ${t.backend}, ${calibration.processes} process(es) at once: train ${t.trainImagesPerSecond.toFixed(0)} img/s, ` +
        `forward ${t.forwardImagesPerSecond.toFixed(0)} img/s, evaluation ${t.evalImagesPerSecond.toFixed(0)} img/s per process`,
      '  epochs at maxEpochs (early stopping, when on, only shortens cells); --recalibrate measures again',
      ...(busy ? [`warning: calibration ${busy}`] : []),
    ].join('\n'),
  );
  return 0;
}
