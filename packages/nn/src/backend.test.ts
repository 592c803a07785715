import * as tf from '@tensorflow/tfjs-core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type * as BackendModule from './backend.ts';

// selectBackend remembers its choice for the life of the module, so each test loads a fresh
// copy. tfjs-core itself is external to vitest's module graph and stays shared, as in a real
// process.
async function freshBackendModule(): Promise<typeof BackendModule> {
  vi.resetModules();
  return import('./backend.ts');
}

// Every output position of a 2x2 valid conv over a 3x3 input of ones adds 1 to each tap: [8, 8, 8, 8].
async function filterGradient(): Promise<number[]> {
  const x = tf.ones([2, 3, 3, 1]) as tf.Tensor4D;
  const filter = tf.tensor4d([0.5, -1, 2, 0.25], [2, 2, 1, 1]);
  const dFilter = tf.grad((w: tf.Tensor) => tf.sum(tf.conv2d(x, w as tf.Tensor4D, 1, 'valid')))(filter);
  const values = Array.from(await dFilter.data());
  tf.dispose([x, filter, dFilter]);
  return values;
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('selectBackend', () => {
  it('uses cpu when TRANSFERLAB_BACKEND=cpu, logs once, and returns the same choice again', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', 'cpu');
    const { selectBackend } = await freshBackendModule();
    const log = vi.fn();
    const choice = await selectBackend({ log });
    expect(choice).toEqual({ name: 'cpu', tfBackend: 'cpu', reason: 'forced by TRANSFERLAB_BACKEND=cpu' });
    expect(tf.getBackend()).toBe('cpu');
    expect(await selectBackend({ log, prefer: 'wasm' })).toBe(choice);
    expect(log).toHaveBeenCalledTimes(1);
    expect(log).toHaveBeenCalledWith('compute backend selected', { ...choice });
  });

  // tfjs-node-gpu stays unbuilt here: its install script is skipped (pnpm.ignoredBuiltDependencies)
  // and scripts/tfjs-node-install.sh builds only the CPU package.
  it('fails clearly when TRANSFERLAB_BACKEND=tensorflow-gpu cannot load, and does not remember the failure', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', 'tensorflow-gpu');
    const { selectBackend } = await freshBackendModule();
    await expect(selectBackend()).rejects.toThrow(
      /^TRANSFERLAB_BACKEND=tensorflow-gpu, but @tensorflow\/tfjs-node-gpu could not be used: \S/,
    );
    vi.stubEnv('TRANSFERLAB_BACKEND', 'cpu');
    expect((await selectBackend()).name).toBe('cpu');
  });

  it('rejects an unknown TRANSFERLAB_BACKEND, listing the valid names', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', 'webgl');
    const { selectBackend } = await freshBackendModule();
    await expect(selectBackend()).rejects.toThrow(
      'TRANSFERLAB_BACKEND=webgl is not a backend; use one of tensorflow-gpu, tensorflow, wasm, cpu',
    );
  });

  it('honours prefer', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', '');
    const { selectBackend } = await freshBackendModule();
    const choice = await selectBackend({ prefer: 'cpu' });
    expect(choice.name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('takes tfjs-node by default once scripts/tfjs-node-install.sh has built it, passing over tfjs-node-gpu', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', '');
    const { selectBackend } = await freshBackendModule();
    const log = vi.fn();
    const choice = await selectBackend({ log });
    expect(choice.name, `tfjs-node did not load (${choice.reason}): run bash scripts/tfjs-node-install.sh`).toBe(
      'tensorflow',
    );
    expect(choice.tfBackend).toBe('tensorflow');
    expect(choice.reason).toMatch(/^@tensorflow\/tfjs-node-gpu unavailable \(.+\); @tensorflow\/tfjs-node loaded$/);
    expect(tf.getBackend()).toBe('tensorflow');
    expect(log).toHaveBeenCalledTimes(1);
    expect(await filterGradient()).toEqual([8, 8, 8, 8]);
    // The real native backend answers the GPU probe: the CPU build, so the check refuses it.
    const { assertGpuDevice } = await freshBackendModule();
    const probe = tf.backend() as { isGPUPackage?: boolean; isUsingGpuDevice?: boolean };
    expect(probe.isGPUPackage).toBe(false);
    expect(probe.isUsingGpuDevice).toBe(false);
    expect(() => assertGpuDevice(probe)).toThrow(/the CPU build/);
  });

  it('uses wasm when preferred, and wasm computes a conv2d gradient w.r.t. the filter', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', '');
    const { selectBackend } = await freshBackendModule();
    const choice = await selectBackend({ prefer: 'wasm' });
    expect(choice.name).toBe('wasm');
    expect(choice.tfBackend).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    // Stock tfjs-backend-wasm has no Conv2DBackpropFilter; ours (wasm-conv-gradients.ts) does.
    expect(await filterGradient()).toEqual([8, 8, 8, 8]);
  });
});

describe('assertGpuDevice: the tensorflow-gpu backend refuses to train without a GPU', () => {
  // There is no GPU here: the probe tfjs-node's backend gives is injected.
  it('passes when TensorFlow registered a GPU device', async () => {
    const { assertGpuDevice } = await freshBackendModule();
    expect(() => assertGpuDevice({ isGPUPackage: true, isUsingGpuDevice: true })).not.toThrow();
  });

  it('fails clearly, saying what to check, when it did not', async () => {
    const { assertGpuDevice } = await freshBackendModule();
    expect(() => assertGpuDevice({ isGPUPackage: true, isUsingGpuDevice: false })).toThrow(
      /@tensorflow\/tfjs-node-gpu loaded, but TensorFlow registered no GPU device.*nvidia\.com\/gpu.*runtimeClassName.*CUDA/,
    );
    expect(() => assertGpuDevice({ isGPUPackage: false, isUsingGpuDevice: false })).toThrow(/the CPU build/);
    expect(() => assertGpuDevice({})).toThrow(/registered no GPU device/);
  });
});
