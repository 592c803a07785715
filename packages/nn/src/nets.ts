/**
 * The nets: CaffeNet (the paper's net) and a small net of the same 8-layer shape for 28x28 and
 * 32x32 images. Both have exactly eight learned layers, conv1..conv5 and fc6..fc8, so `n`
 * counts learned layers as the paper does. Outputs are logits: the loss applies the softmax.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { LocalResponseNormalization, SeededDropout } from './layers.ts';
import { deriveSeed } from './seeds.ts';

export const LEARNED_LAYERS = ['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'] as const;
export type LearnedLayer = (typeof LEARNED_LAYERS)[number];

export interface NetSpec {
  kind: 'caffenet' | 'small';
  /** Multiplies every channel count and fc width (rounded, at least 1). Default 1. */
  width?: number;
  /** Dropout rate after fc6 and fc7. Default 0.5, as the paper. */
  dropout?: number;
  /** Local response normalisation after conv1 and conv2. Default: on for caffenet, off for small. */
  lrn?: boolean;
  /**
   * he (default): He-normal kernels under a ReLU, Glorot for the logits, zero biases.
   * paper: CaffeNet's Gaussian kernels (std 0.01; 0.005 for fc6 and fc7) and biases of 1 on
   * conv2, conv4, conv5, fc6 and fc7, as the paper's nets were initialised.
   */
  init?: 'he' | 'paper';
}

export interface BuildNetOptions {
  /** [height, width, channels]. */
  inputShape: [number, number, number];
  numClasses: number;
  /** Fixes every initial weight (and every dropout mask, unless dropoutSeed is given). */
  seed: number;
  /** The dropout masks' own stream, so that two nets with the same init need not share masks. */
  dropoutSeed?: number;
}

type Padding = 'same' | 'valid';
interface ConvStage {
  name: LearnedLayer;
  filters: number;
  kernel: number;
  stride: number;
  padding: Padding;
  lrn: boolean;
  pool?: { size: number; stride: number; padding: Padding };
}
interface Blueprint {
  convs: ConvStage[];
  fc: [number, number];
}

// CaffeNet's pools and conv1 are 'valid' (227 -> 55 -> 27 -> 13 -> 6). AlexNet's two-GPU groups
// in conv2, conv4 and conv5 are not reproduced: tfjs has no grouped convolution.
const CAFFENET: Blueprint = {
  convs: [
    {
      name: 'conv1',
      filters: 96,
      kernel: 11,
      stride: 4,
      padding: 'valid',
      lrn: true,
      pool: { size: 3, stride: 2, padding: 'valid' },
    },
    {
      name: 'conv2',
      filters: 256,
      kernel: 5,
      stride: 1,
      padding: 'same',
      lrn: true,
      pool: { size: 3, stride: 2, padding: 'valid' },
    },
    { name: 'conv3', filters: 384, kernel: 3, stride: 1, padding: 'same', lrn: false },
    { name: 'conv4', filters: 384, kernel: 3, stride: 1, padding: 'same', lrn: false },
    {
      name: 'conv5',
      filters: 256,
      kernel: 3,
      stride: 1,
      padding: 'same',
      lrn: false,
      pool: { size: 3, stride: 2, padding: 'valid' },
    },
  ],
  fc: [4096, 4096],
};

// 'same' pools so that 28 -> 14 -> 7 -> 4 and 32 -> 16 -> 8 -> 4 both keep a spatial map to the end.
const SMALL: Blueprint = {
  convs: [
    {
      name: 'conv1',
      filters: 32,
      kernel: 5,
      stride: 1,
      padding: 'same',
      lrn: true,
      pool: { size: 3, stride: 2, padding: 'same' },
    },
    {
      name: 'conv2',
      filters: 64,
      kernel: 5,
      stride: 1,
      padding: 'same',
      lrn: true,
      pool: { size: 3, stride: 2, padding: 'same' },
    },
    { name: 'conv3', filters: 96, kernel: 3, stride: 1, padding: 'same', lrn: false },
    { name: 'conv4', filters: 96, kernel: 3, stride: 1, padding: 'same', lrn: false },
    {
      name: 'conv5',
      filters: 64,
      kernel: 3,
      stride: 1,
      padding: 'same',
      lrn: false,
      pool: { size: 3, stride: 2, padding: 'same' },
    },
  ],
  fc: [512, 512],
};

function outputSize(size: number, window: number, stride: number, padding: Padding): number {
  return padding === 'same' ? Math.ceil(size / stride) : Math.floor((size - window) / stride) + 1;
}

/** Builds a net with freshly initialised weights; the same spec, options and seed give the same net. */
export function buildNet(spec: NetSpec, options: BuildNetOptions): tfl.LayersModel {
  const { inputShape, numClasses, seed } = options;
  const dropoutSeed = options.dropoutSeed ?? seed;
  const init = spec.init ?? 'he';
  if (init !== 'he' && init !== 'paper') throw new Error(`unknown net init '${String(init)}' (expected he or paper)`);
  const blueprint = spec.kind === 'caffenet' ? CAFFENET : spec.kind === 'small' ? SMALL : undefined;
  if (blueprint === undefined) throw new Error(`unknown net kind '${String(spec.kind)}'`);
  const width = spec.width ?? 1;
  if (!(width > 0)) throw new Error(`net width multiplier must be > 0, got ${width}`);
  if (!Number.isInteger(numClasses) || numClasses < 2)
    throw new Error(`numClasses must be an integer >= 2, got ${numClasses}`);
  const scaled = (units: number): number => Math.max(1, Math.round(units * width));
  const lrn = spec.lrn ?? spec.kind === 'caffenet';
  const dropout = spec.dropout ?? 0.5;

  const input = tfl.input({ shape: inputShape, name: 'input' });
  let x: tfl.SymbolicTensor = input;
  // Track the spatial size ourselves: tfjs reports a too-small input as a cryptic negative dimension.
  let size = Math.min(inputShape[0], inputShape[1]);
  const shrink = (stage: string, next: number): void => {
    if (next < 1) {
      throw new Error(
        `input ${inputShape[0]}x${inputShape[1]} is too small for the ${spec.kind} net: ${stage} would produce an empty map`,
      );
    }
    size = next;
  };
  const apply = (layer: tfl.layers.Layer): void => {
    x = layer.apply(x) as tfl.SymbolicTensor;
  };

  for (const [i, stage] of blueprint.convs.entries()) {
    shrink(stage.name, outputSize(size, stage.kernel, stage.stride, stage.padding));
    apply(
      tfl.layers.conv2d({
        name: stage.name,
        filters: scaled(stage.filters),
        kernelSize: stage.kernel,
        strides: stage.stride,
        padding: stage.padding,
        activation: 'relu',
        kernelInitializer: kernelInitializer(stage.name, seed, init),
        biasInitializer: biasInitializer(stage.name, init),
      }),
    );
    if (stage.lrn && lrn) apply(new LocalResponseNormalization({ name: `norm${i + 1}` }));
    if (stage.pool) {
      shrink(`pool${i + 1}`, outputSize(size, stage.pool.size, stage.pool.stride, stage.pool.padding));
      apply(
        tfl.layers.maxPooling2d({
          name: `pool${i + 1}`,
          poolSize: stage.pool.size,
          strides: stage.pool.stride,
          padding: stage.pool.padding,
        }),
      );
    }
  }
  apply(tfl.layers.flatten({ name: 'flatten' }));
  for (const [i, units] of blueprint.fc.entries()) {
    const name = i === 0 ? 'fc6' : 'fc7';
    const drop = i === 0 ? 'drop6' : 'drop7';
    apply(
      tfl.layers.dense({
        name,
        units: scaled(units),
        activation: 'relu',
        kernelInitializer: kernelInitializer(name, seed, init),
        biasInitializer: biasInitializer(name, init),
      }),
    );
    apply(new SeededDropout({ name: drop, rate: dropout, seed: deriveSeed(dropoutSeed, drop) }));
  }
  apply(
    tfl.layers.dense({
      name: 'fc8',
      units: numClasses,
      kernelInitializer: kernelInitializer('fc8', seed, init),
      biasInitializer: biasInitializer('fc8', init),
    }),
  );
  return tfl.model({ inputs: input, outputs: x, name: spec.kind });
}

type Initializer = ReturnType<typeof tfl.initializers.heNormal>;
type NetInit = NonNullable<NetSpec['init']>;

// CaffeNet's train_val: std 0.005 on the two wide dense layers, 0.01 elsewhere; bias 1 where
// the paper's net has it, so the ReLUs of those layers start open.
const PAPER_STD: Record<LearnedLayer, number> = {
  conv1: 0.01,
  conv2: 0.01,
  conv3: 0.01,
  conv4: 0.01,
  conv5: 0.01,
  fc6: 0.005,
  fc7: 0.005,
  fc8: 0.01,
};
const PAPER_BIAS_ONE: ReadonlySet<LearnedLayer> = new Set(['conv2', 'conv4', 'conv5', 'fc6', 'fc7']);

// Each layer's seed is derived from the net's seed and the layer's name, so re-initialising one
// layer reproduces buildNet exactly. He: He-normal under a ReLU, Glorot for the logits.
function kernelInitializer(layer: LearnedLayer, seed: number, init: NetInit): Initializer {
  const layerSeed = deriveSeed(seed, layer);
  if (init === 'paper') return tfl.initializers.randomNormal({ mean: 0, stddev: PAPER_STD[layer], seed: layerSeed });
  return layer === 'fc8'
    ? tfl.initializers.glorotNormal({ seed: layerSeed })
    : tfl.initializers.heNormal({ seed: layerSeed });
}

function biasInitializer(layer: LearnedLayer, init: NetInit): Initializer {
  return init === 'paper' && PAPER_BIAS_ONE.has(layer) ? tfl.initializers.ones() : tfl.initializers.zeros();
}

/** Gives one learned layer the weights buildNet would have given it with `seed`. */
export function reinitialiseLayer(
  model: tfl.LayersModel,
  layer: LearnedLayer,
  seed: number,
  init: NetInit = 'he',
): void {
  const target = model.getLayer(layer);
  const [kernel, bias] = target.weights;
  if (kernel === undefined || bias === undefined)
    throw new Error(`layer ${layer} has no kernel and bias to re-initialise`);
  const fresh = [
    kernelInitializer(layer, seed, init).apply(kernel.shape as number[], 'float32'),
    biasInitializer(layer, init).apply(bias.shape as number[], 'float32'),
  ];
  try {
    target.setWeights(fresh);
  } finally {
    tf.dispose(fresh);
  }
}

/** [height, width, channels] of a net's input. */
export function inputShapeOf(model: tfl.LayersModel): [number, number, number] {
  const shape = model.inputs[0]?.shape;
  const [, h, w, c] = shape ?? [];
  if (shape?.length !== 4 || typeof h !== 'number' || typeof w !== 'number' || typeof c !== 'number') {
    throw new Error(`expected a net with one [batch, height, width, channels] input, got ${JSON.stringify(shape)}`);
  }
  return [h, w, c];
}

/** Number of logits a net produces. */
export function numClassesOf(model: tfl.LayersModel): number {
  const shape = model.outputs[0]?.shape;
  const classes = shape?.[shape.length - 1];
  if (shape?.length !== 2 || typeof classes !== 'number') {
    throw new Error(`expected a net with one [batch, classes] output, got ${JSON.stringify(shape)}`);
  }
  return classes;
}

/** Subtracted from pixel values scaled to [0, 1]: one value, or one per channel. */
export type InputMean = number | readonly number[];

/**
 * uint8 HWC images to the float32 [count, h, w, c] tensor the nets take: value / 255 - mean.
 * Done in the loop, not in the data layer, so shards stay uint8 (a quarter of the bytes).
 */
export function imagesToTensor(
  batch: { images: Uint8Array; count: number },
  inputShape: readonly [number, number, number],
  mean: InputMean = 0.5,
): tf.Tensor4D {
  const [h, w, c] = inputShape;
  const { images, count } = batch;
  if (images.length !== count * h * w * c) {
    throw new Error(
      `expected ${count} images of ${h}x${w}x${c} (${count * h * w * c} bytes), got ${images.length} bytes`,
    );
  }
  const means = typeof mean === 'number' ? new Array<number>(c).fill(mean) : [...mean];
  if (means.length !== c) throw new Error(`mean has ${means.length} values for ${c} channels`);
  // One lookup table per channel: 256 * c divisions instead of one per pixel.
  const table = new Float32Array(256 * c);
  for (let ch = 0; ch < c; ch++) {
    for (let v = 0; v < 256; v++) table[ch * 256 + v] = v / 255 - (means[ch] ?? 0);
  }
  const values = new Float32Array(images.length);
  for (let i = 0; i < images.length; i++) values[i] = table[(i % c) * 256 + (images[i] ?? 0)] ?? 0;
  return tf.tensor4d(values, [count, h, w, c]);
}
