// Training throughput of a small conv net on wasm with transferlab's conv gradient kernels,
// against the stock pure-JS cpu backend, in one process.
//
//   node_modules/.bin/tsx bench/wasm-conv.ts
//
// The stock cpu backend needs seconds per image, so it is measured on a small batch and
// fewer steps; images/s is comparable across the two because a step's cost per image barely
// depends on batch size on cpu (measured: about 3.6 s/img at batch 4 and at batch 8).
import { createRequire } from 'node:module';
import type * as TfCore from '../packages/nn/node_modules/@tensorflow/tfjs-core/dist/index.js';
import type * as TfLayers from '../packages/nn/node_modules/@tensorflow/tfjs-layers/dist/index.js';
import { registerWasmConvGradients } from '../packages/nn/src/wasm-conv-gradients.ts';

// The tfjs packages are dependencies of packages/nn, not of the workspace root, so resolve
// them from there; this yields the same module instances that packages/nn/src uses.
const requireFromNn = createRequire(new URL('../packages/nn/package.json', import.meta.url));
const tf = requireFromNn('@tensorflow/tfjs-core') as typeof TfCore;
const tfl = requireFromNn('@tensorflow/tfjs-layers') as typeof TfLayers;
requireFromNn('@tensorflow/tfjs-backend-cpu');

interface Plan {
  backend: 'wasm' | 'cpu';
  label: string;
  batch: number;
  warmupSteps: number;
  /** Timed steps stop once both the minimum count and the time budget are reached. */
  minSteps: number;
  budgetMs: number;
}

interface Measurement {
  steps: number;
  images: number;
  ms: number;
  /** Process CPU time: both backends run single-threaded, so this is immune to other load. */
  cpuMs: number;
}

const plans: Plan[] = [
  {
    backend: 'wasm',
    label: 'wasm + transferlab conv gradients',
    batch: 64,
    warmupSteps: 2,
    minSteps: 5,
    budgetMs: 8_000,
  },
  { backend: 'cpu', label: 'cpu (stock tfjs-backend-cpu)', batch: 4, warmupSteps: 0, minSteps: 1, budgetMs: 0 },
];

function buildNet(): TfLayers.Sequential {
  const model = tfl.sequential({
    layers: [
      tfl.layers.conv2d({ inputShape: [32, 32, 3], filters: 32, kernelSize: 5, padding: 'same', activation: 'relu' }),
      tfl.layers.maxPooling2d({ poolSize: 2 }),
      tfl.layers.conv2d({ filters: 64, kernelSize: 5, padding: 'same', activation: 'relu' }),
      tfl.layers.maxPooling2d({ poolSize: 2 }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
  model.compile({ optimizer: tf.train.sgd(0.01), loss: 'categoricalCrossentropy' });
  return model;
}

async function measure(plan: Plan): Promise<Measurement> {
  if (!(await tf.setBackend(plan.backend))) throw new Error(`backend ${plan.backend} failed to initialise`);
  // Seeded, so both backends train on the same kind of data; made after setBackend so every
  // tensor lives on the backend under test.
  const x = tf.randomUniform([plan.batch, 32, 32, 3], 0, 1, 'float32', 1);
  const labels = tf.randomUniform([plan.batch], 0, 10, 'int32', 2) as TfCore.Tensor1D;
  const y = tf.oneHot(labels, 10);
  const model = buildNet();
  try {
    for (let i = 0; i < plan.warmupSteps; i++) await model.trainOnBatch(x, y);
    let steps = 0;
    const start = performance.now();
    const cpuStart = process.cpuUsage();
    while (steps < plan.minSteps || performance.now() - start < plan.budgetMs) {
      await model.trainOnBatch(x, y);
      steps++;
    }
    const ms = performance.now() - start;
    const cpu = process.cpuUsage(cpuStart);
    return { steps, images: steps * plan.batch, ms, cpuMs: (cpu.user + cpu.system) / 1000 };
  } finally {
    model.dispose();
    tf.dispose([x, labels, y]);
  }
}

function rate(images: number, ms: number): string {
  const perSecond = (images / ms) * 1000;
  return perSecond.toFixed(perSecond < 10 ? 2 : 1);
}

// Production mode for both backends alike; it also keeps tfjs's cpu banner out of the output.
tf.enableProdMode();
registerWasmConvGradients();

console.log('conv net: 32x32x3 -> conv 5x5x32 relu -> pool 2 -> conv 5x5x64 relu -> pool 2 -> dense 10; sgd steps');
const results = new Map<string, Measurement>();
for (const plan of plans) {
  const m = await measure(plan);
  results.set(plan.backend, m);
  console.log(
    `${plan.label}: batch ${plan.batch}, ${m.steps} step(s) in ${(m.ms / 1000).toFixed(1)} s: ` +
      `${rate(m.images, m.ms)} img/s wall, ${rate(m.images, m.cpuMs)} img per CPU-second`,
  );
}
const wasm = results.get('wasm');
const cpu = results.get('cpu');
if (wasm !== undefined && cpu !== undefined) {
  const wallRatio = wasm.images / wasm.ms / (cpu.images / cpu.ms);
  const cpuRatio = wasm.images / wasm.cpuMs / (cpu.images / cpu.cpuMs);
  console.log(`ratio wasm / cpu: ${wallRatio.toFixed(0)}x wall, ${cpuRatio.toFixed(0)}x per CPU-second`);
}
