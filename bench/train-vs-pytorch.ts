// Training throughput of transferlab's 'small' net against PyTorch training the same net, one
// thread each, same input shape, batch size, optimizer and synthetic data, in one run.
//
//   bash scripts/bench-peer-setup.sh            # once: python3-torch and an unpacked OpenBLAS
//   node_modules/.bin/tsx bench/train-vs-pytorch.ts [--steps N] [--warmup N] [--reference-blas]
//
// transferlab side: selectBackend() (wasm with our conv gradient kernels here), buildNet() and
// one epoch of train() over synthetic uint8 batches, so what is timed is the loop users get
// (uint8 -> float conversion, dropout masks, momentum SGD with weight decay, loss read back).
// PyTorch side: bench/peer/small_net_torch.py, the same architecture in torch 1.13 with
// set_num_threads(1), OpenBLAS (pthread build) for its dense layers, oneDNN for its convs.
//
// Every measurement runs in its own child process, so peak RSS is that of one configuration,
// and the two sides of a configuration run back to back, so a change in machine load hits both
// about equally. Besides wall-clock img/s, each side reports images per CPU-second of its own
// process: both are meant to use one core, so that figure barely moves when other jobs compete
// for the CPU, and the CPU-time ratio is the one to trust on a loaded machine.
//
// Ratios are transferlab / PyTorch: below 1 means transferlab is slower.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNet, selectBackend, train, type Batch, type TrainData } from '@transferlab/nn';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PYTHON = '/usr/bin/python3';
const PEER_SCRIPT = path.join(REPO, 'bench', 'peer', 'small_net_torch.py');
const DEFAULT_CACHE = path.join(REPO, 'node_modules', '.cache', 'transferlab-bench');

interface NetConfig {
  label: string;
  height: number;
  width: number;
  channels: number;
  classes: number;
  netWidth: number;
}

interface Job {
  config: NetConfig;
  batch: number;
  warmup: number;
  steps: number;
  seed: number;
}

/** What either side reports for one job. */
interface Measurement {
  imagesPerSecond: number;
  imagesPerCpuSecond: number;
  seconds: number;
  cpuSeconds: number;
  steps: number;
  lastLoss: number;
  parameters: number;
  peakRssBytes: number;
}

interface OursReport extends Measurement {
  backend: string;
  backendReason: string;
}

interface PeerReport extends Measurement {
  torch: string;
  threads: number;
  blasLoaded: string[];
}

const CONFIGS: NetConfig[] = [
  { label: '(a) 28x28x1 w0.25', height: 28, width: 28, channels: 1, classes: 5, netWidth: 0.25 },
  { label: '(b) 32x32x3 w0.5', height: 32, width: 32, channels: 3, classes: 5, netWidth: 0.5 },
];
const BATCHES = [32, 64];
/**
 * Timed steps per configuration, the same count on both sides. Sized so that transferlab spends
 * about 15 s per job on an unloaded core (it trained (a) at about 1,100-1,300 img/s and (b) at
 * about 360-390 img/s when this was written), which keeps the whole run near two minutes.
 */
const STEPS: Record<string, Record<number, number>> = {
  '(a) 28x28x1 w0.25': { 32: 500, 64: 300 },
  '(b) 32x32x3 w0.5': { 32: 170, 64: 90 },
};

// ---------------------------------------------------------------------------------------------
// The transferlab side, run in a child process: `--worker <job JSON>`.

/** xorshift32: a seeded byte stream, so every run trains on the same synthetic images. */
function bytes(count: number, seed: number): Uint8Array {
  let state = seed >>> 0 || 0x9e3779b9;
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = state & 0xff;
  }
  return out;
}

function syntheticBatches(job: Job, pool: number): Batch[] {
  const { height, width, channels, classes } = job.config;
  return Array.from({ length: pool }, (_, i) => {
    const images = bytes(job.batch * height * width * channels, job.seed * 1000 + i * 2 + 1);
    const labels = Int32Array.from(bytes(job.batch, job.seed * 1000 + i * 2 + 2), (b) => b % classes);
    return { images, labels, count: job.batch };
  });
}

async function runWorker(job: Job): Promise<OursReport> {
  const choice = await selectBackend();
  const { height, width, channels, classes, netWidth } = job.config;
  const model = buildNet(
    { kind: 'small', width: netWidth },
    { inputShape: [height, width, channels], numClasses: classes, seed: job.seed },
  );
  const pool = syntheticBatches(job, 4);
  const total = job.warmup + job.steps;
  const data: TrainData = {
    batchesPerEpoch: total,
    async *batches(_epoch: number, startBatch: number): AsyncIterable<Batch> {
      for (let i = startBatch; i < total; i++) yield pool[i % pool.length] as Batch;
    },
    // One image: the end-of-epoch evaluation train() insists on, kept out of the way.
    val: {
      images: pool[0]?.images.subarray(0, height * width * channels) ?? new Uint8Array(),
      labels: Int32Array.of(0),
      count: 1,
    },
  };

  // One epoch of warm-up + timed steps; the clock starts when the last warm-up step returns and
  // stops when the last timed step returns, so the end-of-epoch evaluation is not counted.
  let wallStart = 0;
  let wallEnd = 0;
  let cpuStart: NodeJS.CpuUsage | undefined;
  let cpuEnd: NodeJS.CpuUsage | undefined;
  let lastLoss = Number.NaN;
  await train(model, data, {
    learningRate: 0.01,
    momentum: 0.9,
    weightDecay: 5e-4,
    schedule: { stepEpochs: 1, gamma: 1 },
    maxEpochs: 1,
    patience: 1,
    onStep: ({ step, loss }) => {
      if (step === job.warmup) {
        wallStart = performance.now();
        cpuStart = process.cpuUsage();
      } else if (step === total) {
        wallEnd = performance.now();
        cpuEnd = process.cpuUsage();
        lastLoss = loss;
      }
    },
  });
  if (cpuStart === undefined || cpuEnd === undefined) throw new Error('the timed steps did not all run');
  const seconds = (wallEnd - wallStart) / 1000;
  const cpuSeconds = (cpuEnd.user + cpuEnd.system - cpuStart.user - cpuStart.system) / 1e6;
  const images = job.steps * job.batch;
  const report: OursReport = {
    imagesPerSecond: images / seconds,
    imagesPerCpuSecond: images / cpuSeconds,
    seconds,
    cpuSeconds,
    steps: job.steps,
    lastLoss,
    parameters: model.countParams(),
    // maxRSS is in KiB.
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    backend: choice.name,
    backendReason: choice.reason,
  };
  model.dispose();
  return report;
}

// ---------------------------------------------------------------------------------------------
// The parent: checks the peer, runs every job on both sides, prints the table.

interface Options {
  warmup: number;
  /** Overrides STEPS when given. */
  steps: number | undefined;
  referenceBlas: boolean;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { warmup: 3, steps: undefined, referenceBlas: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const int = (): number => {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value < 0) throw new Error(`${arg} needs a whole number, got '${argv[i]}'`);
      return value;
    };
    // At least one warm-up step: the clock starts when the last one returns.
    if (arg === '--warmup') options.warmup = Math.max(1, int());
    else if (arg === '--steps') options.steps = Math.max(1, int());
    else if (arg === '--reference-blas') options.referenceBlas = true;
    else throw new Error(`unknown argument '${arg}' (use --steps N, --warmup N, --reference-blas)`);
  }
  return options;
}

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The last line of a child's stdout that parses as a JSON object. */
function lastJson(result: ChildResult, what: string): Record<string, unknown> {
  const lines = result.stdout.trim().split('\n').reverse();
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      break;
    }
  }
  throw new Error(
    `${what} exited with ${result.code} and printed no result\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`,
  );
}

function openblasDir(): string | undefined {
  const explicit = process.env['TRANSFERLAB_OPENBLAS_DIR'];
  if (explicit !== undefined && explicit !== '') {
    if (!existsSync(path.join(explicit, 'libblas.so.3')))
      throw new Error(`TRANSFERLAB_OPENBLAS_DIR=${explicit} has no libblas.so.3`);
    return explicit;
  }
  const lib = path.join(process.env['TRANSFERLAB_BENCH_CACHE'] ?? DEFAULT_CACHE, 'openblas', 'usr', 'lib');
  if (!existsSync(lib)) return undefined;
  for (const triplet of readdirSync(lib)) {
    const dir = path.join(lib, triplet, 'openblas-pthread');
    if (existsSync(path.join(dir, 'libblas.so.3'))) return dir;
  }
  return undefined;
}

function peerEnv(blasDir: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // One thread everywhere torch could spawn some: OpenMP (ATen, oneDNN) and OpenBLAS's own
    // pthreads, which torch.set_num_threads does not govern.
    OMP_NUM_THREADS: '1',
    OPENBLAS_NUM_THREADS: '1',
    MKL_NUM_THREADS: '1',
  };
  if (blasDir !== undefined) {
    const previous = process.env['LD_LIBRARY_PATH'];
    env['LD_LIBRARY_PATH'] = previous ? `${blasDir}:${previous}` : blasDir;
  }
  return env;
}

function describeBlas(loaded: string[]): string {
  if (loaded.length === 0) return 'none mapped';
  if (loaded.some((p) => /openblas/i.test(p))) {
    const lib = loaded.find((p) => /libopenblas/i.test(p)) ?? loaded[0] ?? '';
    return `OpenBLAS (${path.basename(lib)}${/pthread/.test(lib) ? ', pthread build' : ''})`;
  }
  if (loaded.some((p) => p.includes('/blas/libblas'))) return 'reference BLAS (Debian libblas3)';
  return loaded.map((p) => path.basename(p)).join(', ');
}

async function measureOurs(job: Job): Promise<OursReport> {
  const self = fileURLToPath(import.meta.url);
  // process.execArgv carries tsx's loader flags, so the child runs this file as TypeScript too.
  const result = await run(process.execPath, [...process.execArgv, self, '--worker', JSON.stringify(job)], process.env);
  if (result.code !== 0)
    lastJson({ ...result, stdout: '' }, `transferlab worker (${job.config.label}, batch ${job.batch})`);
  return lastJson(result, 'transferlab worker') as unknown as OursReport;
}

async function measurePeer(job: Job, env: NodeJS.ProcessEnv): Promise<PeerReport> {
  const { height, width, channels, classes, netWidth } = job.config;
  const args = [
    PEER_SCRIPT,
    ...['--height', height, '--width', width, '--channels', channels, '--classes', classes].map(String),
    ...['--net-width', netWidth, '--batch', job.batch, '--warmup', job.warmup, '--steps', job.steps].map(String),
    ...['--seed', String(job.seed)],
  ];
  const result = await run(PYTHON, args, env);
  const what = `PyTorch peer (${job.config.label}, batch ${job.batch})`;
  if (result.code !== 0) lastJson({ ...result, stdout: '' }, what);
  const raw = lastJson(result, what);
  return {
    imagesPerSecond: raw['images_per_second'] as number,
    imagesPerCpuSecond: raw['images_per_cpu_second'] as number,
    seconds: raw['seconds'] as number,
    cpuSeconds: raw['cpu_seconds'] as number,
    steps: raw['steps'] as number,
    lastLoss: raw['last_loss'] as number,
    parameters: raw['parameters'] as number,
    peakRssBytes: raw['peak_rss_bytes'] as number,
    torch: raw['torch'] as string,
    threads: raw['threads'] as number,
    blasLoaded: raw['blas_loaded'] as string[],
  };
}

async function torchStatus(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (!existsSync(PYTHON)) return undefined;
  const probe = await run(PYTHON, ['-c', 'import torch; print(torch.__version__)'], env);
  return probe.code === 0 ? probe.stdout.trim() : undefined;
}

const mib = (bytes: number): string => `${Math.round(bytes / 2 ** 20)} MiB`;
const rate = (value: number): string => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
const ratio = (value: number): string => value.toFixed(value >= 1 ? 2 : 3);

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i < 2 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--worker') {
    const job = JSON.parse(argv[1] ?? '') as Job;
    console.log(JSON.stringify(await runWorker(job)));
    return 0;
  }
  const options = parseOptions(argv);

  const blasDir = openblasDir();
  const env = peerEnv(blasDir);
  const torchVersion = await torchStatus(env);
  if (torchVersion === undefined) {
    console.error(
      `PyTorch is not importable by ${PYTHON}: this benchmark needs it as its peer.\n` +
        'Install it (and an unpacked OpenBLAS for a fair peer) with:\n\n  bash scripts/bench-peer-setup.sh\n',
    );
    return 2;
  }
  if (blasDir === undefined && !options.referenceBlas) {
    console.error(
      "No unpacked OpenBLAS found: torch would use Debian's reference BLAS, whose dense layers are ~50x slower,\n" +
        'and the ratios would flatter transferlab. Run `bash scripts/bench-peer-setup.sh` (or set\n' +
        'TRANSFERLAB_OPENBLAS_DIR to an openblas-pthread folder), or pass --reference-blas to measure anyway.',
    );
    return 2;
  }

  const started = new Date();
  const load = os.loadavg();
  console.log('transferlab vs PyTorch: training throughput of the small net (8 learned layers), one thread each');
  console.log(
    `date ${started.toISOString()}; ${os.cpus()[0]?.model ?? 'unknown CPU'} x${os.availableParallelism()}; ` +
      `load average ${load.map((l) => l.toFixed(2)).join(' ')}; node ${process.version}; torch ${torchVersion}`,
  );
  console.log(`warm-up ${options.warmup} steps, then timed steps; SGD lr 0.01 momentum 0.9 wd 5e-4; dropout 0.5\n`);

  const rows: string[][] = [];
  const cpuRatios: number[] = [];
  let backend = '';
  let blas = '';
  for (const config of CONFIGS) {
    for (const batch of BATCHES) {
      const steps = options.steps ?? STEPS[config.label]?.[batch] ?? 20;
      const job: Job = { config, batch, warmup: options.warmup, steps, seed: 1 };
      const ours = await measureOurs(job);
      const peer = await measurePeer(job, env);
      if (ours.parameters !== peer.parameters) {
        throw new Error(
          `${config.label}: transferlab's net has ${ours.parameters} parameters, the PyTorch peer's ${peer.parameters}: ` +
            'the architectures have drifted apart (bench/peer/small_net_torch.py mirrors packages/nn/src/nets.ts)',
        );
      }
      backend = ours.backend;
      blas = describeBlas(peer.blasLoaded);
      const wall = ours.imagesPerSecond / peer.imagesPerSecond;
      const cpu = ours.imagesPerCpuSecond / peer.imagesPerCpuSecond;
      cpuRatios.push(cpu);
      console.log(
        `${config.label} batch ${batch}, ${steps} steps: transferlab ${rate(ours.imagesPerSecond)} img/s ` +
          `(${ours.seconds.toFixed(1)} s, ${ours.cpuSeconds.toFixed(1)} CPU-s), PyTorch ${rate(peer.imagesPerSecond)} img/s ` +
          `(${peer.seconds.toFixed(1)} s, ${peer.cpuSeconds.toFixed(1)} CPU-s, ${peer.threads} thread)`,
      );
      rows.push([
        config.label,
        String(batch),
        rate(ours.imagesPerSecond),
        rate(peer.imagesPerSecond),
        ratio(wall),
        rate(ours.imagesPerCpuSecond),
        rate(peer.imagesPerCpuSecond),
        ratio(cpu),
        mib(ours.peakRssBytes),
        mib(peer.peakRssBytes),
      ]);
    }
  }

  const elapsed = (Date.now() - started.getTime()) / 1000;
  if (!blas.startsWith('OpenBLAS')) {
    console.log(
      `\nWARNING: the peer ran on ${blas}, not OpenBLAS: its dense layers are slow and the ratios flatter transferlab.`,
    );
  }
  console.log(`\ntransferlab backend: ${backend}; PyTorch ${torchVersion}, BLAS: ${blas}, convolutions: oneDNN`);
  console.log(
    `load average at the end ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}; ${elapsed.toFixed(0)} s in all\n`,
  );
  console.log(
    table(
      [
        'config',
        'batch',
        'transferlab img/s',
        'PyTorch img/s',
        'ratio',
        'transferlab img/CPU-s',
        'PyTorch img/CPU-s',
        'ratio (CPU)',
        'transferlab peak RSS',
        'PyTorch peak RSS',
      ],
      rows,
    ),
  );
  const geomean = Math.exp(cpuRatios.reduce((sum, r) => sum + Math.log(r), 0) / cpuRatios.length);
  console.log(
    `\nratio = transferlab / PyTorch (below 1: transferlab is slower); geometric mean of the CPU ratios ${ratio(geomean)}`,
  );
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
