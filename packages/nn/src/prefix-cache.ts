/**
 * Frozen-prefix caching. In a frozen cell (BnB, AnB, RnB) layers 1..n never change, so their
 * output for an image is the same every epoch: it can be computed once and the upper layers
 * trained from it. The loop (train.ts) takes batches of these outputs ("features") as well as
 * batches of images; this module finds where a net can be cut and computes the features.
 *
 * Exactness: training from features must end bit-identical to training from images. Three
 * things make that so:
 * - the cut stops before the first layer whose output in training mode is not a function of
 *   its input alone (dropout, at any depth, even inside the frozen layers: the paper's frozen
 *   nets still drop units there), so no random stream is skipped or drawn twice;
 * - the prefix runs as it runs in the step it replaces: tfjs fuses a conv or dense layer's bias
 *   and ReLU into one kernel only outside gradient computation, and the fused kernel rounds
 *   differently (wasm adds the bias first), so training features are computed inside a
 *   gradient scope and validation features outside one, as evaluate() runs;
 * - every image's features are computed in a batch of exactly the size it trains in
 *   (`chunkSize`, padded): libtensorflow picks its convolution and matmul kernels, and so its
 *   summation order, by batch size, while an image's place within a batch does not matter;
 * - the upper layers are the net's own layer objects, applied to the features, so the same
 *   weights, the same dropout layers and the same ops run.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { type InputMean, imagesToTensor, inputShapeOf } from './nets.ts';

/**
 * Layers whose output in training mode equals their output in inference mode and depends on
 * their input alone. A layer of any other class ends the cacheable prefix.
 */
const PURE_LAYERS: ReadonlySet<string> = new Set([
  'InputLayer',
  'Conv2D',
  'Dense',
  'MaxPooling2D',
  'AveragePooling2D',
  'Flatten',
  'LocalResponseNormalization',
]);

export interface PrefixCut {
  /** The last layer of the cached prefix: features are its outputs. */
  layer: string;
  /** One image's features, without the batch axis. */
  featureShape: number[];
  /** float32 values per image. */
  featureSize: number;
  /** The frozen learned layers inside the prefix, bottom first. */
  frozenLayers: string[];
}

/**
 * Where `model` can be cut: the deepest layer such that it and every layer below it hold no
 * trainable weight and compute the same thing in training as in inference. Undefined when no
 * learned layer lies below that point (nothing frozen: a base or fine-tuned cell), or when the
 * net is not one chain of layers.
 */
export function cacheablePrefix(model: tfl.LayersModel): PrefixCut | undefined {
  const layers = model.layers;
  let cut = -1;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i]!;
    // Node 0 is the layer's place in this model; a suffix model built later adds node 1.
    if (i > 0 && layer.getInputAt(0) !== layers[i - 1]!.getOutputAt(0)) return undefined;
    if (!PURE_LAYERS.has(layer.getClassName()) || layer.trainableWeights.length > 0) break;
    cut = i;
  }
  const prefix = layers.slice(0, cut + 1);
  const frozenLayers = prefix.filter((layer) => layer.weights.length > 0).map((layer) => layer.name);
  if (frozenLayers.length === 0 || cut === layers.length - 1) return undefined;
  const shape = (prefix[prefix.length - 1]!.getOutputAt(0) as tfl.SymbolicTensor).shape.slice(1);
  if (shape.some((size) => typeof size !== 'number')) return undefined;
  const featureShape = shape as number[];
  return {
    layer: prefix[prefix.length - 1]!.name,
    featureShape,
    featureSize: featureShape.reduce((product, size) => product * size, 1),
    frozenLayers,
  };
}

/**
 * The net above the cut: a model whose input is the cut layer's output and whose layers are
 * `model`'s own (shared weights, shared dropout layers). Never dispose it: that would dispose
 * the shared layers; disposing `model` frees everything.
 */
export function suffixModel(model: tfl.LayersModel, cut: PrefixCut): tfl.LayersModel {
  const index = model.layers.findIndex((layer) => layer.name === cut.layer);
  if (index < 0) throw new Error(`net '${model.name}' has no layer '${cut.layer}' to cut at`);
  const input = tfl.input({ shape: cut.featureShape, name: `${cut.layer}_features` });
  let x: tfl.SymbolicTensor = input;
  for (const layer of model.layers.slice(index + 1)) x = layer.apply(x) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: x, name: `${model.name}_above_${cut.layer}` });
}

export interface PrefixFeaturesOptions {
  /**
   * Images per forward pass. Each image's features are computed in a batch of exactly this
   * many images: the last pass is padded (with copies of the first image) unless `pad` is false.
   */
  chunkSize: number;
  /** Default true. False: the last pass holds only the images left, as evaluate() batches. */
  pad?: boolean;
  /** Must match the mean the net trains with. Default 0.5. */
  mean?: InputMean;
  /**
   * training (default): as a training step runs the prefix, inside a gradient scope. inference:
   * as evaluate() runs it. The two differ in the last bits where a layer has a bias.
   */
  as?: 'training' | 'inference';
}

/**
 * Runs `forward` inside a gradient scope, as the loop's tf.variableGrads does, without taking
 * a gradient through it: the scope's only path to its output is from a dummy scalar.
 */
function inGradientScope(forward: () => tf.Tensor): tf.Tensor {
  let output: tf.Tensor | undefined;
  const dummy = tf.scalar(0);
  const gradient = tf.grad((x: tf.Tensor) => {
    output = tf.keep(forward());
    return tf.mul(x, 1);
  })(dummy);
  tf.dispose([dummy, gradient]);
  return output!;
}

/**
 * The prefix's outputs for `count` images, image after image (`count * cut.featureSize`
 * values). `images(start, count)` gives the uint8 HWC pixels of images start..start+count-1,
 * so a caller can hand out views of a subset or augmented copies without materialising them all.
 */
export function prefixFeatures(
  model: tfl.LayersModel,
  cut: PrefixCut,
  source: { count: number; images(start: number, count: number): Uint8Array },
  options: PrefixFeaturesOptions,
): Float32Array {
  const { chunkSize } = options;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new Error(`chunkSize must be >= 1, got ${chunkSize}`);
  const inputShape = inputShapeOf(model);
  const imageBytes = inputShape[0] * inputShape[1] * inputShape[2];
  const prefix = tfl.model({ inputs: model.inputs, outputs: model.getLayer(cut.layer).getOutputAt(0) });
  const features = new Float32Array(source.count * cut.featureSize);
  for (let start = 0; start < source.count; start += chunkSize) {
    const count = Math.min(chunkSize, source.count - start);
    let images = source.images(start, count);
    if (images.length !== count * imageBytes)
      throw new Error(`images(${start}, ${count}) gave ${images.length} bytes, expected ${count * imageBytes}`);
    const passCount = options.pad === false ? count : chunkSize;
    if (passCount > count) {
      const padded = new Uint8Array(passCount * imageBytes);
      padded.set(images);
      for (let slot = count; slot < passCount; slot++) padded.copyWithin(slot * imageBytes, 0, imageBytes);
      images = padded;
    }
    const input = imagesToTensor({ images, count: passCount }, inputShape, options.mean);
    // Training mode, as the loop runs the prefix; every layer in it computes the same either way.
    const forward = (): tf.Tensor => prefix.apply(input, { training: true }) as tf.Tensor;
    let output: tf.Tensor;
    try {
      output = options.as === 'inference' ? tf.tidy(forward) : inGradientScope(forward);
    } finally {
      input.dispose();
    }
    try {
      const values = output.dataSync() as Float32Array;
      features.set(values.subarray(0, count * cut.featureSize), start * cut.featureSize);
    } finally {
      output.dispose();
    }
  }
  return features;
}
