/**
 * Custom layers the nets need and tfjs-layers lacks. Both are registered for (de)serialisation,
 * so a model saved with them loads anywhere this module has been imported.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { deriveSeed } from './seeds.ts';

type LayerArgs = NonNullable<ConstructorParameters<typeof tfl.layers.Layer>[0]>;
type Kwargs = Record<string, unknown>;

function single(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
  if (Array.isArray(inputs)) {
    if (inputs.length !== 1 || inputs[0] === undefined)
      throw new Error(`expected one input tensor, got ${inputs.length}`);
    return inputs[0];
  }
  return inputs;
}

export interface LocalResponseNormalizationArgs extends LayerArgs {
  depthRadius?: number;
  bias?: number;
  alpha?: number;
  beta?: number;
}

/**
 * Local response normalisation across channels (AlexNet/CaffeNet's LRN). The defaults are
 * CaffeNet's local_size 5, alpha 1e-4, beta 0.75, k 1, translated to TensorFlow's convention:
 * Caffe divides alpha by local_size, TensorFlow does not, so alpha here is 1e-4 / 5.
 */
export class LocalResponseNormalization extends tfl.layers.Layer {
  static readonly className = 'LocalResponseNormalization';
  readonly depthRadius: number;
  readonly bias: number;
  readonly alpha: number;
  readonly beta: number;

  constructor(args: LocalResponseNormalizationArgs = {}) {
    super(args);
    this.depthRadius = args.depthRadius ?? 2;
    this.bias = args.bias ?? 1;
    this.alpha = args.alpha ?? 1e-4 / 5;
    this.beta = args.beta ?? 0.75;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() =>
      tf.localResponseNormalization(single(inputs) as tf.Tensor4D, this.depthRadius, this.bias, this.alpha, this.beta),
    );
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), depthRadius: this.depthRadius, bias: this.bias, alpha: this.alpha, beta: this.beta };
  }
}
tf.serialization.registerClass(LocalResponseNormalization);

export interface SeededDropoutArgs extends LayerArgs {
  rate: number;
  seed: number;
}

/**
 * Inverted dropout whose mask is a pure function of (layer seed, training step). The stock
 * Dropout draws from a global generator, so a run resumed from a checkpoint would draw other
 * masks than the uninterrupted run; here the loop sets the step (`setDropoutStep`) and a
 * resumed run repeats the same masks. Identity at inference.
 */
export class SeededDropout extends tfl.layers.Layer {
  static readonly className = 'SeededDropout';
  readonly rate: number;
  readonly seed: number;
  /** Training state, not configuration: deliberately absent from getConfig. */
  step = 0;

  constructor(args: SeededDropoutArgs) {
    super(args);
    if (!(args.rate >= 0 && args.rate < 1)) throw new Error(`dropout rate must be in [0, 1), got ${args.rate}`);
    this.rate = args.rate;
    this.seed = args.seed;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    const x = single(inputs);
    if (kwargs['training'] !== true || this.rate === 0) return x;
    return tf.tidy(() => tf.dropout(x, this.rate, undefined, deriveSeed(this.seed, `step${this.step}`)));
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate, seed: this.seed };
  }
}
tf.serialization.registerClass(SeededDropout);

/** Sets the step every SeededDropout layer of `model` draws its next mask for. */
export function setDropoutStep(model: tfl.LayersModel, step: number): void {
  for (const layer of model.layers) {
    if (layer instanceof SeededDropout) layer.step = step;
  }
}
