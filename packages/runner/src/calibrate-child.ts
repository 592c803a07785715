// One calibration process (runner/calibrate.ts forks as many as cells will run at once, so
// each measures its throughput while the others compete for the machine as workers do).
// Measures on synthetic images of the spec's shape, through the code a cell runs: makeBatches
// (augmentation included) into train(), a forward pass, evaluate(), buildNet and serializeModel.
// Reports progress lines and one result line as JSON on stdout.
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { makeBatches } from '@transferlab/data';
import { LEARNED_LAYERS, buildNet, evaluate, selectBackend, serializeModel, train } from '@transferlab/nn';
import type { CalibrationJob, CalibrationResult } from './calibrate.ts';

const say = (message: object): void => void process.stdout.write(`${JSON.stringify(message)}\n`);

/** Multiply-adds of each learned layer, from its kernel and output shapes. */
function layerFlops(model: tfl.LayersModel): number[] {
  return LEARNED_LAYERS.map((name) => {
    const layer = model.getLayer(name);
    const kernel = layer.getWeights()[0]?.shape ?? [];
    const out = layer.outputShape as number[];
    const kernelSize = kernel.reduce((product, size) => product * size, 1);
    // A conv kernel slides over every output position; a dense kernel is used once.
    const positions = out.length === 4 ? out[1]! * out[2]! : 1;
    return kernelSize * positions;
  });
}

async function seconds(what: () => Promise<unknown> | unknown): Promise<number> {
  const start = performance.now();
  await what();
  return (performance.now() - start) / 1000;
}

async function main(job: CalibrationJob): Promise<void> {
  const backend = await selectBackend();
  const [height, width, channels] = job.inputShape;
  const imageBytes = height * width * channels;
  const count = job.batchSize * (job.warmup + job.steps);
  const pixels = new Uint8Array(count * imageBytes);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) >>> 24;
  const labels = Int32Array.from({ length: count }, (_, i) => i % job.classes);
  const subset = { count, pixels, labels, shape: job.inputShape };
  const options = { inputShape: job.inputShape, numClasses: job.classes, seed: 1 };

  let model: tfl.LayersModel | undefined;
  const netSeconds =
    (await seconds(() => (model = buildNet(job.net, options)))) + (await seconds(() => serializeModel(model!)));
  const flops = layerFlops(model!);
  const total = flops.reduce((sum, value) => sum + value, 0);
  say({ progress: 'net built', backend: backend.name });

  // The data pipeline alone: batches of the epoch, augmented as the spec asks.
  const batchOptions = { batchSize: job.batchSize, seed: 1, epoch: 0, augment: job.augment, dropLast: false };
  const pipelineSeconds = await seconds(async () => {
    for await (const _ of makeBatches(subset, batchOptions)) void _;
  });

  // A full training step over warm-up + timed batches; the clock runs from the last warm-up step.
  const stepTimes: number[] = [];
  await train(
    model!,
    {
      batches: () => makeBatches(subset, batchOptions),
      batchesPerEpoch: job.warmup + job.steps,
      val: { images: pixels.subarray(0, imageBytes), labels: labels.subarray(0, 1), count: 1 },
    },
    {
      learningRate: 0.001,
      schedule: { stepEpochs: 1, gamma: 1 },
      maxEpochs: 1,
      onStep: (progress) => {
        stepTimes.push(performance.now());
        if (progress.batch % 5 === 0) say({ progress: `train step ${progress.batch + 1}/${job.warmup + job.steps}` });
      },
    },
  );
  const timed = (stepTimes.at(-1)! - stepTimes[job.warmup - 1]!) / 1000;
  const trainImagesPerSecond = (job.steps * job.batchSize) / timed;

  // The forward pass at the training batch size, no gradients.
  const batch = tf.tidy(() => tf.randomUniform([job.batchSize, height, width, channels]));
  tf.tidy(() => model!.predict(batch));
  const forwardSeconds = await seconds(async () => {
    for (let i = 0; i < job.steps; i++) {
      const out = tf.tidy(() => model!.predict(batch) as tf.Tensor);
      await out.data();
      out.dispose();
    }
  });
  batch.dispose();
  say({ progress: 'forward pass timed' });

  // Evaluation as the runner does it (batch 256).
  const evalCount = Math.min(count, 1024);
  evaluate(model!, { images: pixels.subarray(0, imageBytes), labels: labels.subarray(0, 1), count: 1 });
  const evalSeconds = await seconds(() =>
    evaluate(model!, {
      images: pixels.subarray(0, evalCount * imageBytes),
      labels: labels.subarray(0, evalCount),
      count: evalCount,
    }),
  );
  // A checkpoint holds the weights and the optimizer's (as many again): two serialisations.
  const checkpointSeconds = 2 * (await seconds(() => serializeModel(model!)));
  const result: CalibrationResult = {
    backend: backend.name,
    trainImagesPerSecond,
    forwardImagesPerSecond: (job.steps * job.batchSize) / forwardSeconds,
    pipelineImagesPerSecond: count / Math.max(pipelineSeconds, 1e-9),
    evalImagesPerSecond: evalCount / evalSeconds,
    layerFlopShare: flops.map((value) => value / total),
    netSeconds,
    checkpointSeconds,
  };
  say({ result });
}

await main(JSON.parse(process.argv[2]!) as CalibrationJob);
