/** What a trained net's learned layers output on a set of images: the input of CKA and LogME. */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { type InputMean, type LearnedLayer, imagesToTensor, inputShapeOf } from './nets.ts';

export interface LayerActivations {
  layer: LearnedLayer;
  /** features per image after pooling */
  features: number;
  /** the spatial average-pooling window applied (1 = none; dense layers are never pooled) */
  pool: number;
  /** count × features, image after image */
  data: Float32Array;
}

export interface ActivationOptions {
  layers: readonly LearnedLayer[];
  /** A conv output wider than this is average-pooled over space, 2×2, 4×4, …, until it fits. */
  maxFeatures: number;
  /** Images per forward pass. Default 128. */
  batchSize?: number;
  /** Must match the mean the net was trained with. Default 0.5, as in training. */
  mean?: InputMean;
}

/**
 * The smallest power-of-two window that brings an h×w×c map to at most maxFeatures values; the
 * whole map (global average pooling) when no window does, since channels are never mixed.
 */
export function poolWindow(shape: readonly number[], maxFeatures: number): number {
  const [height, width, channels] = shape as [number, number, number];
  let window = 1;
  while (Math.ceil(height / window) * Math.ceil(width / window) * channels > maxFeatures) {
    if (window >= height && window >= width) break;
    window *= 2;
  }
  return Math.min(window, Math.max(height, width));
}

/**
 * Runs the net once over the images (inference mode: no dropout) and keeps each requested
 * layer's output, flattened per image. Conv outputs (after their fused ReLU, before any
 * pooling or LRN layer that follows) are average-pooled when wider than maxFeatures.
 */
export function layerActivations(
  model: tfl.LayersModel,
  data: { images: Uint8Array; count: number },
  options: ActivationOptions,
): LayerActivations[] {
  const batchSize = options.batchSize ?? 128;
  const inputShape = inputShapeOf(model);
  const pixels = inputShape[0] * inputShape[1] * inputShape[2];
  if (data.count < 1) throw new Error('layerActivations needs at least one image');
  if (data.images.length < data.count * pixels)
    throw new Error(`layerActivations: ${data.images.length} bytes for ${data.count} images of ${pixels}`);
  const outputs = options.layers.map((name) => model.getLayer(name).output as tfl.SymbolicTensor);
  const probe = tfl.model({ inputs: model.inputs, outputs });
  const windows = outputs.map((output) =>
    output.shape.length === 4 ? poolWindow(output.shape.slice(1) as number[], options.maxFeatures) : 1,
  );
  const widths = outputs.map((output, i) => {
    const shape = output.shape.slice(1) as number[];
    if (shape.length !== 3) return shape.reduce((a, b) => a * b, 1);
    const window = windows[i]!;
    return Math.ceil(shape[0]! / window) * Math.ceil(shape[1]! / window) * shape[2]!;
  });
  const results = options.layers.map((layer, i) => ({
    layer,
    features: widths[i]!,
    pool: windows[i]!,
    data: new Float32Array(data.count * widths[i]!),
  }));
  for (let start = 0; start < data.count; start += batchSize) {
    const count = Math.min(batchSize, data.count - start);
    const images = data.images.subarray(start * pixels, (start + count) * pixels);
    const flat = tf.tidy(() => {
      const input = imagesToTensor({ images, count }, inputShape, options.mean);
      const predicted = probe.predict(input);
      const list = Array.isArray(predicted) ? predicted : [predicted];
      return list.map((tensor, i) => {
        const window = windows[i]!;
        const pooled =
          tensor.rank === 4 && window > 1 ? tf.avgPool(tensor as tf.Tensor4D, window, window, 'same') : tensor;
        return tf.reshape(pooled, [count, -1]);
      });
    });
    flat.forEach((tensor, i) => {
      results[i]!.data.set(tensor.dataSync(), start * widths[i]!);
      tensor.dispose();
    });
  }
  return results;
}
