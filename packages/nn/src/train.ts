/**
 * The training loop. It reads top-down: options, data, model, resume, learning-rate schedule,
 * then the loop (set rate, step, evaluate after each epoch, checkpoint, log).
 *
 * Determinism: the data layer gives the same batches for the same (epoch, startBatch), dropout
 * masks are a function of the step counter, and a checkpoint holds weights, momentum buffers and
 * the loop's position, so a resumed run ends with the same weights, bit for bit, as one that was
 * never interrupted (on the same backend).
 *
 * Frozen-prefix caching (prefix-cache.ts): when the data says so, batches may carry the outputs
 * of the net's frozen prefix instead of images; those train the net above the cut, and the
 * validation set's prefix outputs are computed once, here. Same weights, bit for bit.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import {
  type EpochRecord,
  type StopReason,
  type TrainCheckpoint,
  type TrainState,
  restoreOptimizer,
  restoreWeights,
  serializeModel,
  serializeOptimizer,
} from './checkpoint.ts';
import { type Evaluation, type LabelledImages, evaluate, evaluateFeatures } from './evaluate.ts';
import { SeededDropout, setDropoutStep } from './layers.ts';
import { type InputMean, imagesToTensor, inputShapeOf, numClassesOf } from './nets.ts';
import { type PrefixCut, prefixFeatures, suffixModel } from './prefix-cache.ts';
import { type StepSchedule, lastPhaseStart, learningRateAt } from '@transferlab/experiment/schedule';

export interface Batch {
  /** count * h * w * c uint8, HWC. */
  images: Uint8Array;
  labels: Int32Array;
  count: number;
}

/** A batch of the frozen prefix's outputs (TrainData.prefix.cut.layer) instead of images. */
export interface FeatureBatch {
  /** count * cut.featureSize float32, image after image. */
  features: Float32Array;
  labels: Int32Array;
  count: number;
}

export interface TrainData {
  /** The batches of a 0-based epoch from `startBatch` on; the same arguments give the same batches. */
  batches(epoch: number, startBatch: number): AsyncIterable<Batch | FeatureBatch>;
  batchesPerEpoch: number;
  val: LabelledImages;
  /**
   * Frozen-prefix caching: batches may be FeatureBatches of this cut, each computed in a batch
   * of its own size (prefixFeatures with chunkSize = its size), and validation then runs from
   * the val images' prefix outputs, computed once.
   */
  prefix?: { cut: PrefixCut };
}

export interface StepProgress {
  epoch: number;
  /** Optimizer steps taken so far, this one included. */
  step: number;
  /** Index of this batch within its epoch. */
  batch: number;
  loss: number;
  imagesPerSecond: number;
}

export interface TrainOptions {
  learningRate: number;
  /** Default 0.9. */
  momentum?: number;
  /** Caffe-style L2: wd * w is added to the gradient of every trainable kernel (not biases). Default 5e-4. */
  weightDecay?: number;
  schedule: StepSchedule;
  maxEpochs: number;
  /**
   * Early stopping, off when absent: stop when validation top-1 has not improved for this many
   * epochs. It can only fire in the last learning-rate phase, so that every net sees every rate
   * step of the schedule (a stop before a rate drop leaves a net short of its plateau).
   */
  patience?: number;
  /** No early stop before this many epochs. Default 0. */
  minEpochs?: number;
  /** Default 0.5, as the data is scaled to [0, 1]. */
  mean?: InputMean;
  /** Default 256. */
  evalBatchSize?: number;
  /** Default 1 when saveCheckpoint is given. A checkpoint is also written when training ends or is interrupted. */
  checkpointEveryEpochs?: number;
  checkpointEverySteps?: number;
  saveCheckpoint?(checkpoint: TrainCheckpoint): Promise<void>;
  resume?: TrainCheckpoint;
  onStep?(progress: StepProgress): void;
  onEpoch?(record: EpochRecord): void;
  /** Stops at the next batch boundary, after writing a checkpoint. */
  signal?: AbortSignal;
}

export interface TrainResult {
  history: EpochRecord[];
  bestValTop1: number;
  bestEpoch: number;
  /** Epochs trained, resumed ones included. */
  epochs: number;
  stoppedBy: StopReason;
  imagesPerSecond: number;
}

export async function train(model: tfl.LayersModel, data: TrainData, options: TrainOptions): Promise<TrainResult> {
  // Options.
  const momentum = options.momentum ?? 0.9;
  const weightDecay = options.weightDecay ?? 5e-4;
  const minEpochs = options.minEpochs ?? 0;
  const checkpointEveryEpochs = options.checkpointEveryEpochs ?? 1;
  const { maxEpochs, patience, signal } = options;
  if (!(maxEpochs >= 1) || (patience !== undefined && !(patience >= 1)) || minEpochs > maxEpochs) {
    throw new Error(
      `need maxEpochs >= 1, patience >= 1 (or none) and minEpochs <= maxEpochs; got ${maxEpochs}, ${patience}, ${minEpochs}`,
    );
  }
  const earliestStop = Math.max(minEpochs, lastPhaseStart(maxEpochs, options.schedule) + 1);

  // Data: the net fixes the image shape and the number of classes.
  const inputShape = inputShapeOf(model);
  const numClasses = numClassesOf(model);

  // Model: frozen layers are simply not among the trainable weights, so they get no gradient
  // and no update. Weight decay follows CaffeNet (decay_mult 0 on biases): kernels only.
  const params = model.trainableWeights.map((weight) => ({
    variable: weight.read() as tf.Variable,
    decay: weightDecay > 0 && weight.originalName.endsWith('/kernel'),
  }));
  if (params.length === 0) throw new Error(`net '${model.name}' has no trainable weights`);
  const optimizer = tf.train.momentum(options.learningRate, momentum);
  const cut = data.prefix?.cut;
  const suffix = cut ? { model: suffixModel(model, cut), shape: cut.featureShape } : undefined;
  const context: StepContext = { model, params, optimizer, inputShape, numClasses, weightDecay, mean: options.mean };
  if (suffix) context.suffix = suffix;

  try {
    // Resume.
    const state = options.resume ? await resume(context, options.resume) : freshState(options.learningRate);
    // After resume: the prefix outputs come from the weights the run continues with.
    const validate = validation(model, data.val, {
      batchSize: options.evalBatchSize,
      numClasses,
      mean: options.mean,
      ...(cut && suffix ? { prefix: { cut, suffix: suffix.model } } : {}),
    });
    if (state.stoppedBy === 'budget' && state.epoch < maxEpochs) delete state.stoppedBy;
    const checkpoint = async (): Promise<void> => {
      if (!options.saveCheckpoint) return;
      await options.saveCheckpoint({
        model: await serializeModel(model),
        optimizer: await serializeOptimizer(optimizer),
        state: structuredClone(state),
      });
    };
    let mark = performance.now();
    const clock = (): void => {
      const now = performance.now();
      state.partialEpoch.seconds += (now - mark) / 1000;
      mark = now;
    };
    const interrupt = async (): Promise<TrainResult> => {
      clock();
      await checkpoint();
      return resultOf(state, 'interrupted');
    };

    while (state.stoppedBy === undefined) {
      const epoch = state.epoch;
      // Learning-rate schedule.
      state.learningRate = learningRateAt(epoch, options.learningRate, options.schedule);
      optimizer.setLearningRate(state.learningRate);

      // Train the rest of the epoch.
      if (state.nextBatch < data.batchesPerEpoch) {
        for await (const batch of data.batches(epoch, state.nextBatch)) {
          if (signal?.aborted) return await interrupt();
          const started = performance.now();
          setDropoutStep(model, state.step);
          const loss = await trainStep(context, batch);
          const seconds = (performance.now() - started) / 1000;
          if (!Number.isFinite(loss)) {
            throw new Error(
              `training loss is ${loss} at epoch ${epoch}, step ${state.step}: the learning rate is too high`,
            );
          }
          const batchIndex = state.nextBatch;
          state.step += 1;
          state.nextBatch += 1;
          state.partialEpoch.lossSum += loss;
          state.partialEpoch.batches += 1;
          state.trainImages += batch.count;
          state.trainSeconds += seconds;
          options.onStep?.({
            epoch,
            step: state.step,
            batch: batchIndex,
            loss,
            imagesPerSecond: batch.count / seconds,
          });
          if (options.checkpointEverySteps && state.step % options.checkpointEverySteps === 0) {
            clock();
            await checkpoint();
          }
        }
      }
      if (signal?.aborted) return await interrupt();

      // Evaluate.
      const valTop1 = validate().top1;
      clock();
      const { lossSum, batches, seconds } = state.partialEpoch;
      const record: EpochRecord = {
        epoch,
        loss: lossSum / batches,
        valTop1,
        learningRate: state.learningRate,
        seconds,
      };
      state.history.push(record);
      if (valTop1 > state.bestValTop1) {
        state.bestValTop1 = valTop1;
        state.bestEpoch = epoch;
      }
      state.epoch = epoch + 1;
      state.nextBatch = 0;
      state.partialEpoch = { lossSum: 0, batches: 0, seconds: 0 };

      // Stop by patience (a plateau) before the budget: both may hold at once.
      if (patience !== undefined && state.epoch >= earliestStop && epoch - state.bestEpoch >= patience)
        state.stoppedBy = 'patience';
      else if (state.epoch >= maxEpochs) state.stoppedBy = 'budget';

      // Checkpoint.
      if (state.stoppedBy !== undefined || state.epoch % checkpointEveryEpochs === 0) await checkpoint();
      mark = performance.now();

      // Log.
      options.onEpoch?.(record);
    }
    return resultOf(state, state.stoppedBy);
  } finally {
    optimizer.dispose();
    // MomentumOptimizer.dispose (tfjs 4.22) forgets the learning-rate scalar its parent keeps.
    const rate = (optimizer as unknown as { c?: tf.Tensor }).c;
    if (rate && !rate.isDisposed) rate.dispose();
  }
}

interface StepContext {
  model: tfl.LayersModel;
  params: Array<{ variable: tf.Variable; decay: boolean }>;
  optimizer: tf.MomentumOptimizer;
  inputShape: [number, number, number];
  numClasses: number;
  weightDecay: number;
  mean: InputMean | undefined;
  /** The net above the frozen prefix, for FeatureBatches. */
  suffix?: { model: tfl.LayersModel; shape: readonly number[] };
}

/**
 * Scores the net on the validation set. With a prefix cut the val images' prefix outputs are
 * computed once, in evaluate()'s own batches, and every epoch scores the net above the cut.
 */
function validation(
  model: tfl.LayersModel,
  val: LabelledImages,
  options: {
    batchSize: number | undefined;
    numClasses: number;
    mean: InputMean | undefined;
    prefix?: { cut: PrefixCut; suffix: tfl.LayersModel };
  },
): () => Evaluation {
  const { prefix, ...scoring } = options;
  if (!prefix) return () => evaluate(model, val, scoring);
  const batchSize = options.batchSize ?? 256;
  const shape = inputShapeOf(model);
  const imageBytes = shape[0] * shape[1] * shape[2];
  const { images, labels, count } = val;
  const features = prefixFeatures(
    model,
    prefix.cut,
    { count, images: (start, n) => images.subarray(start * imageBytes, (start + n) * imageBytes) },
    { chunkSize: batchSize, pad: false, mean: options.mean, as: 'inference' },
  );
  const data = { features, featureShape: prefix.cut.featureShape, labels, count };
  return () => evaluateFeatures(prefix.suffix, data, { ...scoring, batchSize });
}

/** One SGD step on one batch (of images, or of prefix outputs for the net above the cut); returns the batch's mean loss. */
async function trainStep(context: StepContext, batch: Batch | FeatureBatch): Promise<number> {
  const { params, optimizer, numClasses, weightDecay, suffix } = context;
  if (batch.labels.length !== batch.count)
    throw new Error(`batch of ${batch.count} images has ${batch.labels.length} labels`);
  for (const label of batch.labels) {
    // oneHot would silently turn an out-of-range label into an all-zero target.
    if (label < 0 || label >= numClasses) throw new Error(`label ${label} is outside the net's 0..${numClasses - 1}`);
  }
  const loss = tf.tidy(() => {
    let net = context.model;
    let input: tf.Tensor;
    if ('features' in batch) {
      if (!suffix) throw new Error('a batch of prefix outputs, but the training data names no prefix cut');
      net = suffix.model;
      input = tf.tensor(batch.features, [batch.count, ...suffix.shape]);
    } else {
      input = imagesToTensor(batch, context.inputShape, context.mean);
    }
    const targets = tf.oneHot(tf.tensor1d(batch.labels, 'int32'), numClasses);
    const { value, grads } = tf.variableGrads(
      () => {
        const logits = net.apply(input, { training: true }) as tf.Tensor;
        return tf.losses.softmaxCrossEntropy(targets, logits) as tf.Scalar;
      },
      params.map(({ variable }) => variable),
    );
    optimizer.applyGradients(
      params.map(({ variable, decay }) => {
        const gradient = grads[variable.name];
        if (gradient === undefined) throw new Error(`no gradient for ${variable.name}: is it connected to the loss?`);
        return { name: variable.name, tensor: decay ? tf.add(gradient, tf.mul(variable, weightDecay)) : gradient };
      }),
    );
    return value;
  });
  try {
    const [value] = await loss.data();
    return value ?? Number.NaN;
  } finally {
    loss.dispose();
  }
}

function freshState(learningRate: number): TrainState {
  return {
    epoch: 0,
    nextBatch: 0,
    step: 0,
    learningRate,
    partialEpoch: { lossSum: 0, batches: 0, seconds: 0 },
    history: [],
    bestValTop1: -1,
    bestEpoch: -1,
    trainImages: 0,
    trainSeconds: 0,
  };
}

async function resume(context: StepContext, checkpoint: TrainCheckpoint): Promise<TrainState> {
  const { model, params, optimizer } = context;
  // The momentum buffers are matched to weights by position: check they line up, which also
  // catches a checkpoint whose frozen layers differ from this net's.
  const slots = checkpoint.optimizer.specs.slice(1);
  if (slots.length > 0) {
    const fits =
      slots.length === params.length &&
      slots.every((slot, i) => slot.shape.join(',') === params[i]?.variable.shape.join(','));
    if (!fits) {
      throw new Error(
        `checkpoint optimizer state does not fit net '${model.name}': ${slots.length} momentum buffers ` +
          `for ${params.length} trainable weights (were other layers frozen?)`,
      );
    }
  }
  // Dropout masks come from the seeds in the net's topology: a net built with another seed would
  // train on, but not along the path the checkpoint was on.
  const saved = dropoutSeeds(checkpoint.model.modelTopology);
  for (const layer of model.layers) {
    const seed = saved.get(layer.name);
    if (layer instanceof SeededDropout && seed !== undefined && seed !== layer.seed) {
      throw new Error(
        `checkpoint was trained with ${layer.name} seed ${seed}, net '${model.name}' has ${layer.seed}: ` +
          'resume with the net the checkpoint was made from (loadModel) or one built with the same seed',
      );
    }
  }
  restoreWeights(model, checkpoint.model);
  await restoreOptimizer(optimizer, checkpoint.optimizer);
  return structuredClone(checkpoint.state);
}

function dropoutSeeds(topology: object): Map<string, number> {
  const layers = (topology as { config?: { layers?: unknown } }).config?.layers;
  const seeds = new Map<string, number>();
  if (!Array.isArray(layers)) return seeds;
  for (const layer of layers as Array<{ class_name?: string; config?: { name?: string; seed?: number } }>) {
    const { name, seed } = layer.config ?? {};
    if (layer.class_name === SeededDropout.className && name !== undefined && seed !== undefined) seeds.set(name, seed);
  }
  return seeds;
}

function resultOf(state: TrainState, stoppedBy: StopReason): TrainResult {
  return {
    history: state.history,
    bestValTop1: state.bestValTop1,
    bestEpoch: state.bestEpoch,
    epochs: state.history.length,
    stoppedBy,
    imagesPerSecond: state.trainSeconds > 0 ? state.trainImages / state.trainSeconds : 0,
  };
}
