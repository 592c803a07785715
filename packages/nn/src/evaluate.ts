/** Accuracy of a net on labelled images, and the paper's score of a training run. */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { type InputMean, imagesToTensor, inputShapeOf, numClassesOf } from './nets.ts';

export interface LabelledImages {
  /** count * h * w * c uint8, HWC. */
  images: Uint8Array;
  labels: Int32Array;
  count: number;
}

export interface EvaluateOptions {
  /** Images per forward pass. Default 256. */
  batchSize?: number;
  /** Default: the net's number of logits. */
  numClasses?: number;
  /** Must match the mean the net was trained with. Default 0.5. */
  mean?: InputMean;
}

export interface Evaluation {
  top1: number;
  /** Top-k with k = min(5, classes): with 5 classes or fewer it is always 1. */
  top5: number;
  top1Error: number;
  top5Error: number;
  /** Top-1 accuracy per class; NaN for a class with no images. */
  perClass: number[];
  count: number;
}

export function evaluate(model: tfl.LayersModel, data: LabelledImages, options: EvaluateOptions = {}): Evaluation {
  const inputShape = inputShapeOf(model);
  const pixels = inputShape[0] * inputShape[1] * inputShape[2];
  return score(model, data, options, (start, count) =>
    imagesToTensor(
      { images: data.images.subarray(start * pixels, (start + count) * pixels), count },
      inputShape,
      options.mean,
    ),
  );
}

/** Labelled outputs of a net's frozen prefix (prefix-cache.ts), to score the net above the cut. */
export interface LabelledFeatures {
  /** count * featureSize float32, image after image. */
  features: Float32Array;
  featureShape: readonly number[];
  labels: Int32Array;
  count: number;
}

/**
 * evaluate() for the net above a cut, on the prefix's outputs. Given features computed in the
 * same batches as evaluate() would run (prefixFeatures with chunkSize = batchSize, pad false),
 * it scores exactly as evaluate() on the images.
 */
export function evaluateFeatures(
  suffix: tfl.LayersModel,
  data: LabelledFeatures,
  options: EvaluateOptions = {},
): Evaluation {
  const size = data.featureShape.reduce((product, dim) => product * dim, 1);
  if (data.features.length !== data.count * size)
    throw new Error(`${data.features.length} feature values for ${data.count} images of ${size}`);
  return score(suffix, data, options, (start, count) =>
    tf.tensor(data.features.subarray(start * size, (start + count) * size), [count, ...data.featureShape]),
  );
}

function score(
  model: tfl.LayersModel,
  data: { labels: Int32Array; count: number },
  options: EvaluateOptions,
  input: (start: number, count: number) => tf.Tensor,
): Evaluation {
  const batchSize = options.batchSize ?? 256;
  const numClasses = options.numClasses ?? numClassesOf(model);
  if (data.count < 1) throw new Error('evaluate needs at least one image');
  if (data.labels.length !== data.count) throw new Error(`${data.count} images but ${data.labels.length} labels`);
  const k = Math.min(5, numClasses);

  let top1 = 0;
  let topK = 0;
  const correct = new Array<number>(numClasses).fill(0);
  const seen = new Array<number>(numClasses).fill(0);
  for (let start = 0; start < data.count; start += batchSize) {
    const count = Math.min(batchSize, data.count - start);
    const ranked = tf.tidy(() => {
      const logits = model.apply(input(start, count)) as tf.Tensor;
      return tf.topk(logits, k).indices;
    });
    const best = ranked.dataSync();
    ranked.dispose();
    for (let i = 0; i < count; i++) {
      const label = data.labels[start + i] ?? -1;
      if (label < 0 || label >= numClasses)
        throw new Error(`label ${label} of image ${start + i} is outside 0..${numClasses - 1}`);
      seen[label] = (seen[label] ?? 0) + 1;
      const row = best.subarray(i * k, (i + 1) * k);
      if (row[0] === label) {
        top1++;
        correct[label] = (correct[label] ?? 0) + 1;
      }
      if (row.includes(label)) topK++;
    }
  }
  return {
    top1: top1 / data.count,
    top5: topK / data.count,
    top1Error: 1 - top1 / data.count,
    top5Error: 1 - topK / data.count,
    perClass: correct.map((hits, label) => ((seen[label] ?? 0) > 0 ? hits / (seen[label] ?? 1) : Number.NaN)),
    count: data.count,
  };
}
