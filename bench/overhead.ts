// The system's own overhead on one small real cell (issue 10, item 4): the share of the cell's
// wall time spent outside its training steps and evaluation passes. The cell (baseB of the
// demo's MNIST spec, 4 epochs) runs through runCell, the function a trainer and a local
// worker run, once on a local-folder store and once on S3 (a real Ceph radosgw).
//
//   node_modules/.bin/tsx bench/overhead.ts [--epochs 4] [--local-only]
//
// With TRANSFERLAB_S3_* set it uses that S3; else it starts radosgw through
// scripts/radosgw-start.sh (tens of seconds) and stops exactly that one at the end.
//
// Where the time goes, from the hooks the trainer's telemetry already uses: the step reports
// (CellProgress, one per batch) and the epoch reports (epochSeconds: the epoch, validation
// included), and onCheckpoint (each checkpoint's store time). The step span of an epoch (first
// to last step report, scaled by n/(n-1) for the first step) holds the batches' building too, so
// the data pipeline is timed on its own over the same batches and moved to the overhead.
// The test pass (the cell's primary score: useful work, not overhead) is timed on its own too,
// on a net of the same shape over the same test images, since its cost does not depend on the
// weights. "Other" is the rest of the wall time: loading the split, building or loading nets,
// the final net, result.json. The controller's share (scheduling, KV, events) per cell comes
// from bench/controller-scale.ts (cells per CPU-second) and is added as a row.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { makeBatches } from '@transferlab/data';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore, type ObjectStore, S3Store, s3StoreOptionsFromEnv } from '@transferlab/platform';
import { buildNet, evaluate, selectBackend } from '@transferlab/nn';
import { ensureSplits, loadSubsets, runCell } from '@transferlab/runner';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Cells per CPU-second of the controller at 10,000 cells (docs/performance.md). */
const CONTROLLER_CELLS_PER_CPU_SECOND = 600;

function option(args: string[], name: string): string | undefined {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function measure(label: string, store: ObjectStore, epochs: number): Promise<Array<[string, number]>> {
  const spec = validateSpec({
    name: 'overhead',
    dataset: { kind: 'mnist' },
    split: { kind: 'random', trainPerClass: 500, valPerClass: 100, testPerClass: 300 },
    net: { kind: 'small', width: 0.25 },
    training: { batchSize: 32, maxEpochs: epochs, augment: false, schedule: { stepEpochs: 2, gamma: 0.1 } },
    layers: [1],
    arms: ['baseB'],
    repeats: 1,
  });
  const plan = expandGrid(spec);
  await ensureSplits(store, plan.splits, { specDir: REPO });
  const cell = plan.cells.find((c) => c.arm === 'baseB')!;
  const steps = new Map<number, number[]>();
  const epochSeconds: number[] = [];
  let checkpointSeconds = 0;
  const started = performance.now();
  await runCell(store, cell, {
    progress: (report) => {
      if (report.phase !== 'training' || report.epoch === undefined) return;
      if (report.epochDone) epochSeconds.push(report.epochSeconds ?? 0);
      else steps.set(report.epoch, [...(steps.get(report.epoch) ?? []), performance.now()]);
    },
    onCheckpoint: (info) => void (checkpointSeconds += info.seconds),
  });
  const wall = (performance.now() - started) / 1000;
  let stepSeconds = 0;
  const spans: number[] = [];
  for (const times of steps.values()) {
    const span = (times.at(-1)! - times[0]!) / 1000;
    const scaled = times.length > 1 ? (span * times.length) / (times.length - 1) : 0;
    spans.push(scaled);
    stepSeconds += scaled;
  }
  const validationSeconds = epochSeconds.reduce((sum, s, i) => sum + Math.max(0, s - (spans[i] ?? 0)), 0);
  // The data pipeline alone, over the same batches.
  const [trainSet] = await loadSubsets(store, cell, ['train']);
  const dataStart = performance.now();
  for (let epoch = 0; epoch < epochs; epoch++) {
    for await (const _ of makeBatches(trainSet!, { batchSize: 32, seed: 1, epoch, dropLast: false })) void _;
  }
  const dataSeconds = (performance.now() - dataStart) / 1000;
  // The test pass alone: the same net shape over the same test images, after one warm-up pass.
  const [testSet] = await loadSubsets(store, cell, ['test']);
  const test = { images: testSet!.pixels, labels: testSet!.labels, count: testSet!.count };
  const probe = buildNet(spec.net, { inputShape: testSet!.shape, numClasses: testSet!.classes.length, seed: 1 });
  evaluate(probe, test);
  const testStart = performance.now();
  evaluate(probe, test);
  const testSeconds = (performance.now() - testStart) / 1000;
  probe.dispose();
  const controllerSeconds = 1 / CONTROLLER_CELLS_PER_CPU_SECOND;
  const pureSteps = stepSeconds - dataSeconds;
  const other = wall - stepSeconds - validationSeconds - checkpointSeconds - testSeconds;
  const overhead = dataSeconds + checkpointSeconds + other + controllerSeconds;
  console.log(`\n${label}: cell ${cell.name}, ${epochs} epoch(s), wall ${wall.toFixed(2)} s`);
  const rows: Array<[string, number]> = [
    ['training steps (net only)', pureSteps],
    ['validation passes', validationSeconds],
    [`test pass (${testSet!.count} images, the primary score)`, testSeconds],
    ['data loading (batches)', dataSeconds],
    ['checkpoint I/O', checkpointSeconds],
    ['other (split load, nets, result)', other],
    ['controller: scheduling, KV, events (from controller-scale)', controllerSeconds],
  ];
  for (const [name, seconds] of rows) {
    console.log(
      `| ${name.padEnd(60)} | ${seconds.toFixed(3).padStart(8)} s | ${((100 * seconds) / wall).toFixed(2).padStart(6)}% |`,
    );
  }
  console.log(
    `| ${'overhead: data + checkpoints + other + controller (< 2%)'.padEnd(60)} | ${overhead.toFixed(3).padStart(8)} s | ${((100 * overhead) / wall).toFixed(2).padStart(6)}% |`,
  );
  return rows;
}

async function main(args: string[]): Promise<number> {
  const epochs = Number(option(args, '--epochs') ?? 4);
  // A worker selects its backend once and keeps it for every cell it runs: not a cell's cost.
  const backend = await selectBackend();
  console.log(
    `overhead: backend ${backend.name}, load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  const local = await mkdtemp(path.join(os.tmpdir(), 'tl-overhead-'));
  try {
    await measure('local-folder store', new LocalFolderStore(local), epochs);
  } finally {
    await rm(local, { recursive: true, force: true });
  }
  if (args.includes('--local-only')) return 0;
  let env: NodeJS.ProcessEnv = process.env;
  let rgwDir: string | undefined;
  if (!env.TRANSFERLAB_S3_ENDPOINT) {
    rgwDir = await mkdtemp(path.join(os.tmpdir(), 'tl-overhead-rgw-'));
    const { stdout } = await run(
      'bash',
      [path.join(REPO, 'scripts/radosgw-start.sh'), rgwDir, String(await freePort())],
      {
        timeout: 300_000,
      },
    );
    env = { ...env };
    for (const line of stdout.split('\n')) {
      const match = /^(TRANSFERLAB_S3_[A-Z_]+)=(.*)$/.exec(line.trim());
      if (match) env[match[1]!] = match[2]!;
    }
  }
  try {
    await measure('S3 store (radosgw)', new S3Store(s3StoreOptionsFromEnv(env)), epochs);
  } finally {
    if (rgwDir) await run('bash', [path.join(REPO, 'scripts/radosgw-stop.sh'), rgwDir]);
  }
  console.log(
    `overhead: load average at the end ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
