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

  it('fails clearly when TRANSFERLAB_BACKEND=tensorflow cannot load, and does not remember the failure', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', 'tensorflow');
    const { selectBackend } = await freshBackendModule();
    await expect(selectBackend()).rejects.toThrow(
      /^TRANSFERLAB_BACKEND=tensorflow, but @tensorflow\/tfjs-node could not be loaded: \S/,
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

  it('picks wasm here by default, and wasm computes a conv2d gradient w.r.t. the filter', async () => {
    vi.stubEnv('TRANSFERLAB_BACKEND', '');
    const { selectBackend } = await freshBackendModule();
    const log = vi.fn();
    const choice = await selectBackend({ log });
    expect(choice.name).toBe('wasm');
    expect(choice.tfBackend).toBe('wasm');
    expect(choice.reason).toMatch(/@tensorflow\/tfjs-node-gpu unavailable \(.+\); @tensorflow\/tfjs-node unavailable/);
    expect(tf.getBackend()).toBe('wasm');
    expect(log).toHaveBeenCalledTimes(1);

    // Every output position of a 2x2 valid conv over a 3x3 input of ones adds 1 to each tap.
    const x = tf.ones([2, 3, 3, 1]) as tf.Tensor4D;
    const filter = tf.tensor4d([0.5, -1, 2, 0.25], [2, 2, 1, 1]);
    const dFilter = tf.grad((w: tf.Tensor) => tf.sum(tf.conv2d(x, w as tf.Tensor4D, 1, 'valid')))(filter);
    expect(Array.from(await dFilter.data())).toEqual([8, 8, 8, 8]);
    tf.dispose([x, filter, dFilter]);
  });
});
