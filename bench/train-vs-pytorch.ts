// Training throughput of transferlab's 'small' net against PyTorch training the same net: same
// input shape, batch size, optimizer and synthetic data, in one run. transferlab runs on every
// backend that loads here (wasm, and tensorflow once scripts/tfjs-node-install.sh has built
// tfjs-node), each with one thread and with all cores, against PyTorch at the same thread count.
//
//   bash scripts/bench-peer-setup.sh            # once: torch 2.x in a cached venv (and Debian's 1.13)
//   node_modules/.bin/tsx bench/train-vs-pytorch.ts [--steps N] [--warmup N] [--all-cores N]
//                                                   [--peer torch2|debian] [--reference-blas]
//
// transferlab side: selectBackend() (forced by TRANSFERLAB_BACKEND per child), buildNet() and
// one epoch of train() over synthetic uint8 batches, so what is timed is the loop users get
// (uint8 -> float conversion, dropout masks, momentum SGD with weight decay, loss read back).
// PyTorch side: bench/peer/small_net_torch.py, the same architecture; by default torch 2.x from
// PyPI (MKL for its dense layers, oneDNN for its convs), or with --peer debian, Debian's torch
// 1.13 with an unpacked OpenBLAS.
//
// Threads are held by environment in every child: OMP/OpenBLAS/MKL for torch (plus
// torch.set_num_threads), TF_NUM_INTRAOP_THREADS/TF_NUM_INTEROP_THREADS for libtensorflow. wasm
// is single-threaded in Node, so its all-cores figure is its one-thread one. Each measurement
// runs in its own child process, so peak RSS is that of one configuration, and the sides of a
// configuration run back to back, so a change in machine load hits them about equally. Each
// side also reports images per CPU-second of its own process and how many cores it kept busy
// (CPU-s / s): on a loaded machine the per-core CPU-time ratio is the one to trust.
//
// Ratios are transferlab / PyTorch at the same thread count: below 1 means transferlab is slower.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNet, selectBackend, train, type Batch, type TrainData } from '@transferlab/nn';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEBIAN_PYTHON = '/usr/bin/python3';
/** The PyTorch 2.x that scripts/bench-peer-setup.sh installs from PyPI; keep the two in step. */
const TORCH2_VERSION = '2.15.0';
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
  blasBuild: string;
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
// ---------------------------------------------------------------------------------------------
// The parent: checks the peer, runs every job on every side, prints the table.

type OurBackend = 'wasm' | 'tensorflow';
type Peer = 'torch2' | 'debian';

interface Options {
  warmup: number;
  /** Overrides STEPS when given. */
  steps: number | undefined;
  referenceBlas: boolean;
  peer: Peer;
  /** Threads for the all-cores runs; 1 skips them. */
  allCores: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = {
    warmup: 3,
    steps: undefined,
    referenceBlas: false,
    peer: 'torch2',
    allCores: os.availableParallelism(),
  };
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
    else if (arg === '--all-cores') options.allCores = Math.max(1, int());
    else if (arg === '--reference-blas') options.referenceBlas = true;
    else if (arg === '--peer') {
      const peer = argv[++i];
      if (peer !== 'torch2' && peer !== 'debian') throw new Error(`--peer takes torch2 or debian, got '${peer}'`);
      options.peer = peer;
    } else
      throw new Error(
        `unknown argument '${arg}' (use --steps N, --warmup N, --all-cores N, --peer torch2|debian, --reference-blas)`,
      );
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

/** The PyTorch 2.x venv that scripts/bench-peer-setup.sh makes, or TRANSFERLAB_TORCH_PYTHON. */
function torch2Python(): string {
  const explicit = process.env['TRANSFERLAB_TORCH_PYTHON'];
  if (explicit !== undefined && explicit !== '') return explicit;
  const cache = process.env['TRANSFERLAB_CACHE'] ?? path.join(os.homedir(), '.cache', 'transferlab');
  return path.join(cache, `torch-${TORCH2_VERSION}`, 'venv', 'bin', 'python');
}

/** Environment that holds a process to `threads` threads in every pool it could start. */
function threadEnv(base: NodeJS.ProcessEnv, threads: number): NodeJS.ProcessEnv {
  const n = String(threads);
  return {
    ...base,
    // OpenMP (ATen, oneDNN), OpenBLAS's own pthreads and MKL, which torch.set_num_threads does
    // not all govern; libtensorflow's intra-op pool, and its inter-op pool held to one thread
    // when per core.
    OMP_NUM_THREADS: n,
    OPENBLAS_NUM_THREADS: n,
    MKL_NUM_THREADS: n,
    TF_NUM_INTRAOP_THREADS: n,
    TF_NUM_INTEROP_THREADS: threads === 1 ? '1' : n,
    // libgomp's workers spin while they wait; on a machine shared with other jobs that spinning
    // steals the cores they wait for, and torch at 2 threads fell from 460 to 40 img/s here.
    // Passive waiting is what a shared machine needs.
    OMP_WAIT_POLICY: 'PASSIVE',
  };
}

function peerEnv(blasDir: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (blasDir !== undefined) {
    const previous = process.env['LD_LIBRARY_PATH'];
    env['LD_LIBRARY_PATH'] = previous ? `${blasDir}:${previous}` : blasDir;
  }
  return env;
}

function describeBlas(loaded: string[], build: string): string {
  if (loaded.some((p) => /openblas/i.test(p))) {
    const lib = loaded.find((p) => /libopenblas/i.test(p)) ?? loaded[0] ?? '';
    return `OpenBLAS (${path.basename(lib)}${/pthread/.test(lib) ? ', pthread build' : ''})`;
  }
  if (loaded.some((p) => p.includes('/blas/libblas'))) return 'reference BLAS (Debian libblas3)';
  // The PyPI wheels link MKL into libtorch_cpu, so no CPU BLAS library is mapped; the cuBLAS
  // ones they map serve only CUDA tensors.
  const cpu = loaded.filter((p) => !/cublas/i.test(p));
  if (cpu.length === 0) return build === 'mkl' ? 'MKL (linked into libtorch_cpu)' : `none mapped (build: ${build})`;
  return cpu.map((p) => path.basename(p)).join(', ');
}

async function measureOurs(job: Job, backend: OurBackend, threads: number): Promise<OursReport> {
  const self = fileURLToPath(import.meta.url);
  const env = threadEnv({ ...process.env, TRANSFERLAB_BACKEND: backend }, threads);
  // process.execArgv carries tsx's loader flags, so the child runs this file as TypeScript too.
  const result = await run(process.execPath, [...process.execArgv, self, '--worker', JSON.stringify(job)], env);
  const what = `transferlab worker on ${backend} (${job.config.label}, batch ${job.batch}, ${threads} threads)`;
  if (result.code !== 0) lastJson({ ...result, stdout: '' }, what);
  return lastJson(result, what) as unknown as OursReport;
}

async function measurePeer(python: string, job: Job, env: NodeJS.ProcessEnv, threads: number): Promise<PeerReport> {
  const { height, width, channels, classes, netWidth } = job.config;
  const args = [
    PEER_SCRIPT,
    ...['--height', height, '--width', width, '--channels', channels, '--classes', classes].map(String),
    ...['--net-width', netWidth, '--batch', job.batch, '--warmup', job.warmup, '--steps', job.steps].map(String),
    ...['--seed', String(job.seed), '--threads', String(threads)],
  ];
  const result = await run(python, args, threadEnv(env, threads));
  const what = `PyTorch peer (${job.config.label}, batch ${job.batch}, ${threads} threads)`;
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
    blasBuild: raw['blas_build'] as string,
  };
}

async function torchStatus(python: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (!existsSync(python)) return undefined;
  const probe = await run(python, ['-c', 'import torch; print(torch.__version__)'], env);
  return probe.code === 0 ? probe.stdout.trim() : undefined;
}

const mib = (bytes: number): string => `${Math.round(bytes / 2 ** 20)} MiB`;
const rate = (value: number): string => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
const ratio = (value: number): string => value.toFixed(value >= 1 ? 2 : 3);
const geomean = (values: number[]): number => Math.exp(values.reduce((sum, v) => sum + Math.log(v), 0) / values.length);

function table(header: string[], rows: string[][], leftColumns: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i < leftColumns ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

interface Row {
  config: string;
  batch: number;
  threads: number;
  side: string;
  report: Measurement;
  peer: Measurement;
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--worker') {
    const job = JSON.parse(argv[1] ?? '') as Job;
    console.log(JSON.stringify(await runWorker(job)));
    return 0;
  }
  const options = parseOptions(argv);

  const python = options.peer === 'torch2' ? torch2Python() : DEBIAN_PYTHON;
  // Debian's torch 1.13 needs the unpacked OpenBLAS to be a fair peer; the PyPI wheel has MKL.
  const blasDir = options.peer === 'debian' ? openblasDir() : undefined;
  const env = peerEnv(blasDir);
  const torchVersion = await torchStatus(python, env);
  if (torchVersion === undefined) {
    console.error(
      `PyTorch is not importable by ${python}: this benchmark needs it as its peer.\n` +
        'Install it (torch 2.x in a cached venv; Debian torch 1.13 and an unpacked OpenBLAS for --peer debian) with:\n\n' +
        '  bash scripts/bench-peer-setup.sh\n',
    );
    return 2;
  }
  if (options.peer === 'debian' && blasDir === undefined && !options.referenceBlas) {
    console.error(
      "No unpacked OpenBLAS found: torch would use Debian's reference BLAS, whose dense layers are ~50x slower,\n" +
        'and the ratios would flatter transferlab. Run `bash scripts/bench-peer-setup.sh` (or set\n' +
        'TRANSFERLAB_OPENBLAS_DIR to an openblas-pthread folder), or pass --reference-blas to measure anyway.',
    );
    return 2;
  }

  const started = new Date();
  const load = os.loadavg();
  const threadCounts = options.allCores > 1 ? [1, options.allCores] : [1];
  console.log('transferlab vs PyTorch: training throughput of the small net (8 learned layers)');
  console.log(
    `date ${started.toISOString()}; ${os.cpus()[0]?.model ?? 'unknown CPU'} x${os.availableParallelism()}; ` +
      `load average ${load.map((l) => l.toFixed(2)).join(' ')}; node ${process.version}; torch ${torchVersion} (${python})`,
  );
  console.log(
    `threads per process: ${threadCounts.join(' and ')}; warm-up ${options.warmup} steps, then timed steps; ` +
      'SGD lr 0.01 momentum 0.9 wd 5e-4; dropout 0.5\n',
  );

  const rows: Row[] = [];
  const unavailable = new Map<OurBackend, string>();
  let blas = '';
  for (const config of CONFIGS) {
    for (const batch of BATCHES) {
      const steps = options.steps ?? STEPS[config.label]?.[batch] ?? 20;
      const job: Job = { config, batch, warmup: options.warmup, steps, seed: 1 };
      let wasmPerCore: OursReport | undefined;
      for (const threads of threadCounts) {
        const peer = await measurePeer(python, job, env, threads);
        blas = describeBlas(peer.blasLoaded, peer.blasBuild);
        for (const backend of ['wasm', 'tensorflow'] as const) {
          if (unavailable.has(backend)) continue;
          let ours: OursReport;
          if (backend === 'wasm' && threads > 1 && wasmPerCore) {
            // tfjs-backend-wasm runs single-threaded in Node: more cores change nothing for one process.
            ours = wasmPerCore;
          } else {
            try {
              ours = await measureOurs(job, backend, threads);
            } catch (error) {
              if (backend === 'wasm' || !/could not be loaded/.test(String(error))) throw error;
              unavailable.set(backend, 'tfjs-node is not built: run bash scripts/tfjs-node-install.sh');
              continue;
            }
            if (backend === 'wasm') wasmPerCore = ours;
          }
          if (ours.parameters !== peer.parameters) {
            throw new Error(
              `${config.label}: transferlab's net has ${ours.parameters} parameters, the PyTorch peer's ${peer.parameters}: ` +
                'the architectures have drifted apart (bench/peer/small_net_torch.py mirrors packages/nn/src/nets.ts)',
            );
          }
          if (ours.backend !== backend) throw new Error(`asked for ${backend}, the worker ran on ${ours.backend}`);
          rows.push({ config: config.label, batch, threads, side: `transferlab ${backend}`, report: ours, peer });
          console.log(
            `${config.label} batch ${batch}, ${threads} thread(s), ${steps} steps: ${backend} ${rate(ours.imagesPerSecond)} img/s ` +
              `(${ours.seconds.toFixed(1)} s, ${ours.cpuSeconds.toFixed(1)} CPU-s), PyTorch ${rate(peer.imagesPerSecond)} img/s ` +
              `(${peer.seconds.toFixed(1)} s, ${peer.cpuSeconds.toFixed(1)} CPU-s)`,
          );
        }
        rows.push({ config: config.label, batch, threads, side: `PyTorch ${torchVersion}`, report: peer, peer });
      }
    }
  }

  const elapsed = (Date.now() - started.getTime()) / 1000;
  if (options.peer === 'debian' && !blas.startsWith('OpenBLAS')) {
    console.log(
      `\nWARNING: the peer ran on ${blas}, not OpenBLAS: its dense layers are slow and the ratios flatter transferlab.`,
    );
  }
  for (const [backend, why] of unavailable) console.log(`\n${backend}: not measured (${why})`);
  console.log(`\nPyTorch ${torchVersion}, BLAS: ${blas}, convolutions: oneDNN`);
  console.log(
    `load average at the end ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}; ${elapsed.toFixed(0)} s in all\n`,
  );
  console.log(
    table(
      ['config', 'batch', 'side', 'threads', 'img/s', 'img/CPU-s', 'cores busy', 'ratio', 'ratio (CPU)', 'peak RSS'],
      rows.map((row) => [
        row.config,
        String(row.batch),
        row.side,
        String(row.threads),
        rate(row.report.imagesPerSecond),
        rate(row.report.imagesPerCpuSecond),
        (row.report.cpuSeconds / row.report.seconds).toFixed(2),
        ratio(row.report.imagesPerSecond / row.peer.imagesPerSecond),
        ratio(row.report.imagesPerCpuSecond / row.peer.imagesPerCpuSecond),
        mib(row.report.peakRssBytes),
      ]),
      3,
    ),
  );
  console.log('\nratio = side / PyTorch at the same thread count (below 1: slower than PyTorch). Geometric means:');
  const summary: string[][] = [];
  for (const side of [...new Set(rows.map((r) => r.side))].filter((s) => s.startsWith('transferlab'))) {
    for (const threads of threadCounts) {
      const picked = rows.filter((r) => r.side === side && r.threads === threads);
      if (picked.length === 0) continue;
      summary.push([
        side,
        String(threads),
        ratio(geomean(picked.map((r) => r.report.imagesPerSecond / r.peer.imagesPerSecond))),
        ratio(geomean(picked.map((r) => r.report.imagesPerCpuSecond / r.peer.imagesPerCpuSecond))),
      ]);
    }
  }
  console.log(table(['side', 'threads', 'ratio', 'ratio (CPU)'], summary, 1));
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
