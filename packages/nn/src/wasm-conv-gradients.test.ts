import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// tfjs-core's Node bundle registers no gradients; the tfjs-layers bundle registers them all.
import '@tensorflow/tfjs-layers';
import { xoroshiro128plus } from 'pure-rand';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerWasmConvGradients } from './wasm-conv-gradients.ts';

type Shape4 = [number, number, number, number];
type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

interface ConvCase {
  x: Shape4;
  filter: Shape4;
  strides: number | [number, number];
  pad: Pad;
  seed: number;
}

function randomValues(size: number, seed: number): Float32Array {
  const rng = xoroshiro128plus(seed);
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) values[i] = (rng.unsafeNext() >>> 0) / 2 ** 32 - 0.5;
  return values;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function relativeError(actual: Float32Array, expected: Float32Array): number {
  expect(actual.length).toBe(expected.length);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs((actual[i] ?? NaN) - (expected[i] ?? NaN)));
    maxRef = Math.max(maxRef, Math.abs(expected[i] ?? NaN));
  }
  return maxDiff / maxRef;
}

function outputShape(c: ConvCase): number[] {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad);
  return info.outShape;
}

/**
 * Gradients of sum(conv2d(x, w) * r) on one backend: r makes dy a random tensor instead of
 * all ones. Data crosses backends only as plain arrays.
 */
async function convGrads(backend: string, c: ConvCase): Promise<{ dx: Float32Array; dw: Float32Array }> {
  await tf.setBackend(backend);
  const out = outputShape(c);
  return tf.tidy(() => {
    const x = tf.tensor4d(randomValues(sizeOf(c.x), c.seed), c.x);
    const w = tf.tensor4d(randomValues(sizeOf(c.filter), c.seed + 1), c.filter);
    const r = tf.tensor(randomValues(sizeOf(out), c.seed + 2), out);
    const loss = (a: tf.Tensor, b: tf.Tensor) =>
      tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad), r));
    const [dx, dw] = tf.grads(loss)([x, w]);
    if (dx === undefined || dw === undefined) throw new Error('missing gradient');
    expect(dx.shape).toEqual(c.x);
    expect(dw.shape).toEqual(c.filter);
    return { dx: dx.dataSync() as Float32Array, dw: dw.dataSync() as Float32Array };
  });
}

async function expectWasmMatchesCpu(c: ConvCase): Promise<void> {
  const cpu = await convGrads('cpu', c);
  const wasm = await convGrads('wasm', c);
  expect(relativeError(wasm.dw, cpu.dw)).toBeLessThan(1e-4);
  expect(relativeError(wasm.dx, cpu.dx)).toBeLessThan(1e-4);
}

beforeAll(async () => {
  registerWasmConvGradients();
  expect(await tf.setBackend('wasm')).toBe(true);
});

afterAll(async () => {
  await tf.setBackend('wasm');
});

describe('wasm conv gradients against cpu', () => {
  // 12x15 so that stride 4 with an 11 kernel and 'valid' leaves rows the conv never reads.
  const x: Shape4 = [3, 12, 15, 4];
  const grid = [1, 2, 4].flatMap((stride) =>
    (['same', 'valid'] as const).flatMap((pad) => [1, 3, 5, 11].map((k) => ({ stride, pad, k }))),
  );
  let seed = 100;
  for (const { stride, pad, k } of grid) {
    const c: ConvCase = { x, filter: [k, k, 4, 6], strides: stride, pad, seed: (seed += 10) };
    const empty = outputShape(c).some((d) => d <= 0);
    it.skipIf(empty)(`stride ${stride}, ${pad}, kernel ${k}`, async () => {
      await expectWasmMatchesCpu(c);
    });
  }

  it('numeric padding', async () => {
    await expectWasmMatchesCpu({ x: [2, 11, 9, 3], filter: [3, 3, 3, 5], strides: 2, pad: 1, seed: 7 });
    await expectWasmMatchesCpu({ x: [2, 11, 9, 3], filter: [5, 5, 3, 5], strides: 1, pad: 2, seed: 8 });
  });

  it('explicit asymmetric padding and unequal strides', async () => {
    await expectWasmMatchesCpu({
      x: [2, 10, 13, 3],
      filter: [3, 4, 3, 5],
      strides: [2, 3],
      pad: [
        [0, 0],
        [1, 2],
        [0, 3],
        [0, 0],
      ],
      seed: 9,
    });
  });

  it('wider channels, where summation order matters most', async () => {
    await expectWasmMatchesCpu({ x: [8, 16, 16, 16], filter: [5, 5, 16, 32], strides: 2, pad: 'same', seed: 11 });
  });
});

describe('wasm conv gradient kernels', () => {
  it('registering twice is silent and keeps one registration', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      registerWasmConvGradients();
      registerWasmConvGradients();
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
    const names = tf.getKernelsForBackend('wasm').map((k) => k.kernelName);
    expect(names.filter((n) => n === 'Conv2DBackpropFilter')).toHaveLength(1);
    expect(names.filter((n) => n === 'Conv2DBackpropInput')).toHaveLength(1);
  });

  it('leaks neither engine tensors nor backend buffers', async () => {
    await tf.setBackend('wasm');
    const x = tf.tensor4d(randomValues(2 * 9 * 9 * 3, 1), [2, 9, 9, 3]);
    const w = tf.tensor4d(randomValues(3 * 3 * 3 * 4, 2), [3, 3, 3, 4]);
    const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same'));
    const tensorsBefore = tf.memory().numTensors;
    const buffersBefore = tf.engine().backend.numDataIds();
    const grads = tf.grads(loss)([x, w]);
    tf.dispose(grads);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(tf.engine().backend.numDataIds()).toBe(buffersBefore);
    tf.dispose([x, w]);
  });

  it('rejects NCHW and dilations, naming the attribute', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 5, 5, 2]);
    const dy = tf.zeros([1, 3, 3, 4]);
    const filter = tf.zeros([3, 3, 2, 4]);
    const base = { strides: 1, pad: 'valid' };
    expect(() =>
      tf
        .engine()
        .runKernel('Conv2DBackpropFilter', { x, dy }, { ...base, dataFormat: 'NCHW', filterShape: [3, 3, 2, 4] }),
    ).toThrow(/dataFormat 'NCHW'/);
    expect(() =>
      tf
        .engine()
        .runKernel('Conv2DBackpropInput', { dy, filter }, { ...base, dataFormat: 'NCHW', inputShape: [1, 5, 5, 2] }),
    ).toThrow(/dataFormat 'NCHW'/);
    expect(() =>
      tf.engine().runKernel(
        'Conv2DBackpropFilter',
        { x, dy },
        {
          ...base,
          dataFormat: 'NHWC',
          dilations: [2, 2],
          filterShape: [3, 3, 2, 4],
        },
      ),
    ).toThrow(/dilations/);
    tf.dispose([x, dy, filter]);
  });
});

describe('a tiny conv net', () => {
  // conv (fused bias + relu) -> max pool -> strided valid conv -> dense -> softmax cross-entropy
  const shapes: Record<string, number[]> = {
    w1: [3, 3, 3, 8],
    b1: [8],
    w2: [3, 3, 8, 12],
    w3: [3 * 3 * 12, 5],
  };
  const batch = 4;

  async function variableGradsOn(backend: string): Promise<Record<string, Float32Array>> {
    await tf.setBackend(backend);
    const vars = Object.fromEntries(
      Object.entries(shapes).map(([name, shape], i) => [
        name,
        tf.variable(tf.tensor(randomValues(sizeOf(shape), 500 + i), shape), true, `${backend}-${name}`),
      ]),
    );
    const x = tf.tensor4d(randomValues(batch * 16 * 16 * 3, 600), [batch, 16, 16, 3]);
    const labels = tf.oneHot(tf.tensor1d([0, 3, 1, 4], 'int32'), 5);
    const { value, grads } = tf.variableGrads(() => {
      const h1 = tf.fused.conv2d({ x, filter: vars['w1'] as tf.Tensor4D, strides: 1, pad: 'same', bias: vars['b1'] });
      const relu = tf.relu(h1);
      const pooled = tf.maxPool(relu, 2, 2, 'valid');
      const h2 = tf.relu(tf.conv2d(pooled, vars['w2'] as tf.Tensor4D, 2, 'valid'));
      const logits = tf.matMul(tf.reshape(h2, [batch, -1]), vars['w3'] as tf.Tensor2D);
      return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
    }, Object.values(vars));
    const out = Object.fromEntries(
      Object.entries(vars).map(([name, v]) => [name, grads[v.name]?.dataSync() as Float32Array]),
    );
    tf.dispose([value, x, labels, ...Object.values(grads), ...Object.values(vars)]);
    return out;
  }

  it('has the same variableGrads on wasm as on cpu', async () => {
    const cpu = await variableGradsOn('cpu');
    const wasm = await variableGradsOn('wasm');
    for (const name of Object.keys(shapes)) {
      expect(wasm[name], name).toBeDefined();
      expect(relativeError(wasm[name] as Float32Array, cpu[name] as Float32Array), name).toBeLessThan(1e-4);
    }
  });
});
