// The two CPU backends train the same cell alike, and each reads the other's checkpoints: a
// base net trained on a GPU cluster (tfjs-node-gpu, the same libtensorflow kernels as tfjs-node)
// must serve transfer cells trained anywhere. Real MNIST, the runner's own cell steps, one
// process per backend. Needs tfjs-node built by scripts/tfjs-node-install.sh.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { cellKeys, ensureSplits, putJson } from '@transferlab/runner';
import type { CellOnBackend } from './support/cell-on-backend.ts';

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL('./support/cell-on-backend.ts', import.meta.url));

// 5 classes, 120 training images a class, 7 epochs with the learning rate cut tenfold after the
// fifth, so both nets settle: about 97% test top-1 on 500 test images, on either backend.
const SPEC = validateSpec({
  name: 'backends-agree',
  dataset: { kind: 'mnist' },
  split: { kind: 'random', trainPerClass: 120, valPerClass: 20, testPerClass: 100 },
  net: { kind: 'small', width: 0.25 },
  training: {
    batchSize: 16,
    learningRate: 0.01,
    schedule: { stepEpochs: 5, gamma: 0.1 },
    maxEpochs: 7,
    patience: 7,
    augment: false,
    scoreTopK: 1,
  },
  base: { maxEpochs: 7, patience: 7 },
  layers: [1],
  arms: ['baseA'],
  repeats: 1,
});
const TEST_IMAGES = 5 * 100;

// Same seed, same initial weights (tfjs draws them in JavaScript on every backend), same batches
// and dropout masks: only the kernels' float rounding differs. The first steps' losses therefore
// agree to about 1e-7 (measured); a wrong kernel, such as a bad gradient, shows at step two.
const EARLY_STEPS = 10;
const EARLY_LOSS_TOLERANCE = 1e-4; // relative
// Later the rounding differences grow (from about step 20 here) and the two runs take different
// paths to similar nets: test top-1 0.974 on wasm against 0.976 on tensorflow in one run, 3.2
// points apart in another (after each cell got its own init stream). 5% of 500 is 25 images; a
// broken backend costs tens of points.
const TRAINED_TOLERANCE = 0.05;
// One net scored on two backends: only near-ties between two logits can flip.
const EVALUATED_TOLERANCE = 2 / TEST_IMAGES;

async function storeWithCell(): Promise<{ root: string; cell: Cell }> {
  const root = await mkdtemp(join(tmpdir(), 'tl-backends-'));
  const store = new LocalFolderStore(root);
  const plan = expandGrid(SPEC);
  await ensureSplits(store, plan.splits, { specDir: process.cwd() });
  const cell = plan.cells.find((c) => c.arm === 'baseA')!;
  await putJson(store, cellKeys.cell(cell.id), cell);
  return { root, cell };
}

async function onBackend(
  backend: 'tensorflow' | 'wasm',
  command: 'run' | 'evaluate',
  root: string,
  cell: Cell,
): Promise<CellOnBackend> {
  const { stdout } = await run(
    process.execPath,
    ['--import', import.meta.resolve('tsx'), CHILD, command, root, cell.id],
    {
      env: { ...process.env, TRANSFERLAB_BACKEND: backend },
      maxBuffer: 16 * 1024 * 1024,
    },
  ).catch((error: unknown) => {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    const reason = stderr.split('\n').find((line) => /Error/.test(line)) ?? (error as Error).message;
    throw new Error(`${command} of cell ${cell.name} on ${backend} failed: ${reason}`, { cause: error });
  });
  const output = JSON.parse(stdout.trim().split('\n').at(-1)!) as CellOnBackend;
  expect(output.backend, `${command} ran on ${output.backend}, not ${backend}`).toBe(backend);
  return output;
}

describe('tensorflow and wasm backends', () => {
  it('train one cell to the same accuracy, and each evaluates the nets the other trained', async () => {
    const onWasm = await storeWithCell();
    const onTensorflow = await storeWithCell();
    expect(onTensorflow.cell.id).toBe(onWasm.cell.id);
    try {
      await trainAndCross(onWasm, onTensorflow);
    } finally {
      await Promise.all([onWasm.root, onTensorflow.root].map((root) => rm(root, { recursive: true, force: true })));
    }
  });
});

async function trainAndCross(
  onWasm: { root: string; cell: Cell },
  onTensorflow: { root: string; cell: Cell },
): Promise<void> {
  const [wasm, tensorflow] = await Promise.all([
    onBackend('wasm', 'run', onWasm.root, onWasm.cell),
    onBackend('tensorflow', 'run', onTensorflow.root, onTensorflow.cell),
  ]);
  expect(wasm.stepLosses!.length).toBeGreaterThanOrEqual(EARLY_STEPS);
  expect(tensorflow.stepLosses!.length).toBeGreaterThanOrEqual(EARLY_STEPS);
  for (let step = 0; step < EARLY_STEPS; step++) {
    const [a, b] = [wasm.stepLosses![step]!, tensorflow.stepLosses![step]!];
    expect(Math.abs(a - b) / a, `loss of step ${step + 1}: wasm ${a}, tensorflow ${b}`).toBeLessThanOrEqual(
      EARLY_LOSS_TOLERANCE,
    );
  }
  // Both learned (chance is 20%), to the same accuracy.
  expect(wasm.testTop1).toBeGreaterThan(0.9);
  expect(tensorflow.testTop1).toBeGreaterThan(0.9);
  expect(Math.abs(wasm.testTop1 - tensorflow.testTop1)).toBeLessThanOrEqual(TRAINED_TOLERANCE);

  // Checkpoints cross: each backend loads the net the other wrote and scores it as its trainer did.
  const [wasmNetOnTensorflow, tensorflowNetOnWasm] = await Promise.all([
    onBackend('tensorflow', 'evaluate', onWasm.root, onWasm.cell),
    onBackend('wasm', 'evaluate', onTensorflow.root, onTensorflow.cell),
  ]);
  expect(Math.abs(wasmNetOnTensorflow.testTop1 - wasm.testTop1)).toBeLessThanOrEqual(EVALUATED_TOLERANCE);
  expect(Math.abs(tensorflowNetOnWasm.testTop1 - tensorflow.testTop1)).toBeLessThanOrEqual(EVALUATED_TOLERANCE);
}
