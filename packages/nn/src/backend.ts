// Chooses the TensorFlow.js compute backend for this process: libtensorflow through
// tfjs-node-gpu or tfjs-node when their native parts are installed, else wasm with our conv
// gradient kernels (DESIGN.md, "Facts that shape the code").
import * as tf from '@tensorflow/tfjs-core';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export const BACKEND_NAMES: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export interface BackendChoice {
  name: BackendName;
  /** What `tf.getBackend()` reports once selected ('tensorflow' for both native builds). */
  tfBackend: string;
  /** Why this backend, including why the ones before it were passed over. */
  reason: string;
}

export interface SelectBackendOptions {
  /** Tried first; when it cannot load, selection goes on in the usual order. */
  prefer?: BackendName;
  log?: (message: string, fields?: Record<string, unknown>) => void;
}

export const BACKEND_ENV_VAR = 'TRANSFERLAB_BACKEND';

// cpu is left out on purpose: it trains a conv net hundreds of times slower than wasm, so it
// is used only when asked for, never as a silent fallback.
const AUTOMATIC_ORDER: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm'];

const PACKAGES: Record<BackendName, string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
  wasm: '@tensorflow/tfjs-backend-wasm',
  cpu: '@tensorflow/tfjs-backend-cpu',
};

let selection: Promise<BackendChoice> | undefined;

/**
 * Selects and activates the compute backend, once per process: later calls return the first
 * choice whatever their options. A failed selection is not remembered, so it can be retried.
 * `TRANSFERLAB_BACKEND` (one of BACKEND_NAMES) forces a backend and fails if it cannot load.
 */
export function selectBackend(options: SelectBackendOptions = {}): Promise<BackendChoice> {
  selection ??= choose(options).catch((error: unknown) => {
    selection = undefined;
    throw error;
  });
  return selection;
}

async function choose(options: SelectBackendOptions): Promise<BackendChoice> {
  await registerGradients();
  const forced = forcedBackend();
  let choice: BackendChoice;
  if (forced !== undefined) {
    try {
      await activate(forced);
    } catch (error) {
      throw new Error(`${BACKEND_ENV_VAR}=${forced}, but ${PACKAGES[forced]} could not be used: ${firstLine(error)}`, {
        cause: error,
      });
    }
    choice = { name: forced, tfBackend: tf.getBackend(), reason: `forced by ${BACKEND_ENV_VAR}=${forced}` };
  } else {
    choice = await firstThatLoads(options.prefer);
  }
  options.log?.('compute backend selected', { ...choice });
  return choice;
}

async function firstThatLoads(prefer: BackendName | undefined): Promise<BackendChoice> {
  const order = prefer === undefined ? AUTOMATIC_ORDER : [prefer, ...AUTOMATIC_ORDER.filter((n) => n !== prefer)];
  const passedOver: string[] = [];
  for (const name of order) {
    try {
      await activate(name);
    } catch (error) {
      passedOver.push(`${PACKAGES[name]} unavailable (${firstLine(error)})`);
      continue;
    }
    const why =
      name === prefer
        ? `${PACKAGES[name]} preferred by the caller`
        : name === 'wasm'
          ? WASM_NOTE
          : `${PACKAGES[name]} loaded`;
    return { name, tfBackend: tf.getBackend(), reason: [...passedOver, why].join('; ') };
  }
  throw new Error(`no compute backend could be loaded: ${passedOver.join('; ')}`);
}

const WASM_NOTE = 'using wasm (XNNPACK, single-threaded in Node) with transferlab conv gradient kernels';

function forcedBackend(): BackendName | undefined {
  const raw = process.env[BACKEND_ENV_VAR]?.trim();
  if (raw === undefined || raw === '') return undefined;
  const name = BACKEND_NAMES.find((n) => n === raw);
  if (name === undefined) {
    throw new Error(`${BACKEND_ENV_VAR}=${raw} is not a backend; use one of ${BACKEND_NAMES.join(', ')}`);
  }
  return name;
}

async function activate(name: BackendName): Promise<void> {
  let tfBackend: string;
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow':
      await importNative(PACKAGES[name]);
      tfBackend = 'tensorflow';
      break;
    case 'wasm': {
      await import('@tensorflow/tfjs-backend-wasm');
      const { registerWasmConvGradients } = await import('./wasm-conv-gradients.ts');
      registerWasmConvGradients();
      tfBackend = 'wasm';
      break;
    }
    case 'cpu':
      await import('@tensorflow/tfjs-backend-cpu');
      tfBackend = 'cpu';
      break;
  }
  // tfjs-node registers its backend through its own @tensorflow/tfjs; if that resolved to a
  // different tfjs-core copy, ours would never see it and ops would silently run elsewhere.
  if (tf.findBackendFactory(tfBackend) === null) {
    throw new Error(
      `${PACKAGES[name]} loaded but backend '${tfBackend}' is not registered with this ` +
        "process's @tensorflow/tfjs-core (is a second copy of tfjs-core installed?)",
    );
  }
  // setBackend reports a failed backend initialisation by returning false, not by throwing.
  if (!(await tf.setBackend(tfBackend))) {
    throw new Error(`backend '${tfBackend}' failed to initialise`);
  }
  await tf.ready();
  if (tf.getBackend() !== tfBackend) {
    throw new Error(`asked tfjs-core for backend '${tfBackend}' but it reports '${tf.getBackend()}'`);
  }
  // tfjs-node-gpu loads without a GPU and then runs every op on the CPU, silently: a GPU pod
  // that trains at CPU speed. Refuse it (automatic selection passes over to the next backend).
  if (name === 'tensorflow-gpu') assertGpuDevice(tf.backend() as NativeDeviceProbe);
}

/**
 * What tfjs-node's backend (NodeJSKernelBackend) says of its devices: `isUsingGpuDevice` is
 * libtensorflow's answer to whether it registered a GPU device at start-up.
 */
export interface NativeDeviceProbe {
  isGPUPackage?: boolean;
  isUsingGpuDevice?: boolean;
}

/** Throws, saying what to check, unless TensorFlow registered a GPU device. */
export function assertGpuDevice(probe: NativeDeviceProbe): void {
  if (probe.isUsingGpuDevice === true) return;
  const what =
    probe.isGPUPackage === false
      ? 'the loaded TensorFlow is the CPU build'
      : 'TensorFlow registered no GPU device (it would run every op on the CPU)';
  throw new Error(
    `${PACKAGES['tensorflow-gpu']} loaded, but ${what}: check that the pod requests nvidia.com/gpu, runs with the ` +
      "NVIDIA container runtime (the chart's trainer.runtimeClassName), and that the node's driver supports the " +
      'CUDA and cuDNN libtensorflow was built for (libtensorflow 2.9: CUDA 11.2, cuDNN 8.1)',
  );
}

async function importNative(specifier: string): Promise<void> {
  // A failed tfjs-node import gets as far as registering its ~150 kernels before the native
  // addon fails to load; the next attempt registers them again and tfjs warns once per
  // kernel. PROD mode is what silences tfjs's warnings, so hold it for the import.
  const env = tf.env();
  const wasProd = env.getBool('PROD');
  env.set('PROD', true);
  // libtensorflow logs INFO lines to stderr, among them a oneDNN CPU-feature notice in every
  // process, and stderr is where our commands report errors. Warnings and errors still show;
  // a value set by the user wins (the GPU image sets the same).
  process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '1';
  try {
    // A variable specifier: these optional packages may be absent, and tsc must not need them.
    await import(specifier);
  } finally {
    env.set('PROD', wasProd);
  }
}

async function registerGradients(): Promise<void> {
  // tfjs-core's Node bundle registers no gradients (tf.grad fails with "gradient function not
  // found"); the tfjs-layers bundle registers all of core's, which every backend needs.
  await import('@tensorflow/tfjs-layers');
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return (text.split('\n').find((line) => line.trim() !== '') ?? text).trim();
}
