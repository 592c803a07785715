// The compute backend the nn tests run on. scripts/test.sh runs them once per backend with
// TRANSFERLAB_BACKEND set (tensorflow, then wasm), so the kernels users train on are the ones
// tested; a bare `vitest run` without it keeps them on cpu, which needs nothing native.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BACKEND_ENV_VAR, selectBackend } from './backend.ts';

/** Activates the tests' backend and returns its tfjs name. */
export async function useTestBackend(): Promise<string> {
  if (process.env[BACKEND_ENV_VAR]?.trim()) return (await selectBackend()).tfBackend;
  if (!(await tf.setBackend('cpu'))) throw new Error("tfjs-core's cpu backend failed to initialise");
  return 'cpu';
}
