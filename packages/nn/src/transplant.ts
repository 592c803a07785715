/**
 * The transplant: the first n learned layers of a base net copied into a new net, frozen or
 * fine-tuned, the rest left at the new net's own initialisation. Every copied tensor's name and
 * shape is checked against the target, so a net of the wrong shape fails here, loudly, rather
 * than training on silently broadcast or truncated weights.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { LEARNED_LAYERS, type LearnedLayer, reinitialiseLayer } from './nets.ts';

/** A learned layer's weights, by layer name (`conv1` .. `fc8`). */
export type NamedWeights = Map<string, LayerWeights>;
export interface LayerWeights {
  kernel: tf.Tensor;
  bias: tf.Tensor;
}

export type TransplantMode = 'frozen' | 'fine-tuned' | 'random';

export interface TransplantOptions {
  /** How many learned layers, from the bottom, to copy: 0..7. */
  n: number;
  /**
   * frozen: copied layers are not trained. fine-tuned: every layer trains, at one learning rate,
   * as the paper. random: the first n layers keep the target's random weights, frozen (the
   * paper's random-filter control); the source is not read.
   */
  mode: TransplantMode;
  /**
   * When given, every layer not copied is re-initialised as buildNet would with this seed, so
   * the target need not be fresh. Without it those layers keep the target's current weights.
   */
  seed?: number;
  /**
   * The target learns the source's own task (the equal-budget control): n may then be 8, the
   * classifier fc8 included. Between halves fc8 means other classes, so it is never copied.
   */
  sameTask?: boolean;
}

const TENSORS = ['kernel', 'bias'] as const;

/** Copies of a net's learned weights, independent of later training; dispose with disposeNamedWeights. */
export function namedWeightsOf(model: tfl.LayersModel): NamedWeights {
  const weights: NamedWeights = new Map();
  for (const name of LEARNED_LAYERS) {
    const [kernel, bias] = learnedLayer(model, name).getWeights();
    if (kernel === undefined || bias === undefined) throw new Error(`layer ${name} has no kernel and bias`);
    weights.set(name, { kernel: tf.clone(kernel), bias: tf.clone(bias) });
  }
  return weights;
}

export function disposeNamedWeights(weights: NamedWeights): void {
  for (const { kernel, bias } of weights.values()) tf.dispose([kernel, bias]);
}

/** Applies a transplant to `target` in place. `source` may be null in 'random' mode. */
export function transplant(source: NamedWeights | null, target: tfl.LayersModel, options: TransplantOptions): void {
  const { n, mode, seed } = options;
  const maxN = options.sameTask === true && mode === 'fine-tuned' ? LEARNED_LAYERS.length : LEARNED_LAYERS.length - 1;
  if (n === LEARNED_LAYERS.length && maxN < n) {
    throw new Error(`transplant n=${n} would copy the classifier fc8 too; n must be 0..${LEARNED_LAYERS.length - 1}`);
  }
  if (!Number.isInteger(n) || n < 0 || n > maxN) {
    throw new Error(`transplant n must be an integer 0..${maxN}, got ${n}`);
  }
  if (mode !== 'frozen' && mode !== 'fine-tuned' && mode !== 'random') {
    throw new Error(`transplant mode must be 'frozen', 'fine-tuned' or 'random', got '${String(mode)}'`);
  }
  const copied = mode === 'random' ? [] : LEARNED_LAYERS.slice(0, n);
  if (copied.length > 0 && source === null) throw new Error(`transplant n=${n} ${mode} needs a source net`);

  // Check everything before changing anything: a failed transplant leaves the target as it was.
  const copies = copied.map((name) => {
    const from = source?.get(name);
    if (from === undefined) throw new Error(`transplant: the source has no layer ${name}`);
    const layer = learnedLayer(target, name);
    TENSORS.forEach((tensor, i) => checkTensor(name, tensor, from[tensor], layer.weights[i]));
    return { layer, weights: [from.kernel, from.bias] };
  });

  for (const { layer, weights } of copies) layer.setWeights(weights);
  if (seed !== undefined) {
    for (const name of LEARNED_LAYERS.slice(copied.length)) reinitialiseLayer(target, name, seed);
  }
  LEARNED_LAYERS.forEach((name, i) => {
    learnedLayer(target, name).trainable = !(mode !== 'fine-tuned' && i < n);
  });
}

function learnedLayer(model: tfl.LayersModel, name: LearnedLayer): tfl.layers.Layer {
  let layer: tfl.layers.Layer;
  try {
    layer = model.getLayer(name);
  } catch {
    throw new Error(`net '${model.name}' has no layer ${name}: not one of our 8-layer nets`);
  }
  if (layer.weights.length !== 2) {
    throw new Error(
      `layer ${name} of net '${model.name}' has ${layer.weights.length} weights, expected kernel and bias`,
    );
  }
  return layer;
}

function checkTensor(
  layer: string,
  tensor: (typeof TENSORS)[number],
  from: tf.Tensor,
  to: tfl.LayerVariable | undefined,
): void {
  const expectedName = `${layer}/${tensor}`;
  if (to === undefined || to.originalName !== expectedName) {
    throw new Error(
      `transplant: target layer ${layer} has ${to?.originalName ?? 'nothing'} where ${expectedName} belongs`,
    );
  }
  if (!sameShape(from.shape, to.shape) || from.dtype !== to.dtype) {
    throw new Error(
      `transplant: ${layer}/${tensor} does not fit: source ${from.dtype}[${from.shape.join(',')}], ` +
        `target ${to.dtype}[${to.shape.join(',')}]`,
    );
  }
}

function sameShape(a: readonly number[], b: readonly (number | null)[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}
