// 10,000 cells through the SweepController over a real nats-server, with a simulated executor
// and simulated cell steps (no training, no transplant, no evaluation): what is measured is
// the controller's own cost per cell (grid expansion, KV state, leases, events, scheduling).
//
//   node_modules/.bin/tsx bench/controller-scale.ts [--cells 10000] [--concurrency auto|N]
//                                                   [--train-ms 0] [--nats nats://127.0.0.1:4222]
//
// Without --nats (or TRANSFERLAB_NATS_URL) it starts its own nats-server through
// scripts/nats-start.sh and stops exactly that one at the end.
//
// A sweep may have at most SPEC_LIMITS.maxCells (5000) cells and there is no setting that
// raises it, so 10,000 cells are two sweeps of 5000 started together on one controller (two
// specs that differ only in the learning rate, so no cell id is shared and no lease waits).
//
// Reported: cells per second (first start() to the last sweep finished), the bench process's
// peak RSS (controller, NATS client and the simulated executor), the nats-server's peak RSS,
// CPU seconds, and the scheduling latency from ready to launched as the controller's own
// histogram records it (SweepMetrics.cellLaunched): ready = the last dependency succeeded (the
// sweep's splits ready, for a cell without dependencies), launched = executor.run called.
// Targets (issue 10): >= 500 cells/s.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import { type Cell, type SweepSpec, plannedCellCount, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore, connectNatsBus } from '@transferlab/platform';
import type { StoredResult } from '@transferlab/runner';
import type { CellSteps, Executor } from '@transferlab/runner/controller/ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function option(args: string[], name: string): string | undefined {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A spec of `perSweep` cells within the limits: every arm at n = 1..7 with measures, repeats to fit. */
function specOf(name: string, learningRate: number, perSweep: number): SweepSpec {
  const base = {
    name,
    dataset: { kind: 'mnist' },
    net: { kind: 'small', width: 0.25 },
    training: { learningRate },
    layers: [1, 2, 3, 4, 5, 6, 7],
    arms: ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'AnA', 'AnA+', 'BnA', 'BnA+', 'RnB', 'controlB'],
    measures: { only: false },
  };
  const one = plannedCellCount(validateSpec({ ...base, repeats: 1 }));
  const repeats = Math.max(1, Math.min(100, Math.floor(perSweep / one)));
  return validateSpec({ ...base, repeats });
}

/**
 * The simulated executor and cell steps (a fake: nothing trains). run() resolves after
 * `trainMs` (0: on the next turn of the event loop), so the controller, not the work, sets the pace.
 */
class SimulatedCluster implements CellSteps, Executor {
  launched = 0;
  constructor(private readonly trainMs: number) {}
  async createSplit(): Promise<void> {}
  async transplant(): Promise<void> {}
  async evaluate(cell: Cell): Promise<StoredResult> {
    return { cellId: cell.id, score: 0.5 } as StoredResult;
  }
  async measure(cell: Cell): Promise<StoredResult> {
    this.launched += 1;
    return { cellId: cell.id } as StoredResult;
  }
  async run(): Promise<'trained'> {
    this.launched += 1;
    await new Promise((resolve) => (this.trainMs > 0 ? setTimeout(resolve, this.trainMs) : setImmediate(resolve)));
    return 'trained';
  }
  async close(): Promise<void> {}
}

/** The controller's metrics port, recording the scheduling latencies instead of exporting them. */
class RecordingMetrics {
  readonly latencies: number[] = [];
  cellCounts(): void {}
  queueDepth(): void {}
  cellFinished(): void {}
  cellScore(): void {}
  sweepFinished(): void {}
  cellLaunched(_sweepId: string, seconds: number): void {
    this.latencies.push(seconds);
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function peakRssOf(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const match = /VmHWM:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) * 1024 : undefined;
}

async function main(args: string[]): Promise<number> {
  const cells = Number(option(args, '--cells') ?? 10_000);
  const concurrencyArg = option(args, '--concurrency') ?? 'auto';
  const concurrency = concurrencyArg === 'auto' ? undefined : Number(concurrencyArg);
  const trainMs = Number(option(args, '--train-ms') ?? 0);
  let natsUrl = option(args, '--nats') ?? process.env.TRANSFERLAB_NATS_URL;
  let natsDir: string | undefined;
  if (!natsUrl) {
    natsDir = await mkdtemp(path.join(os.tmpdir(), 'tl-bench-nats-'));
    const { stdout } = await run('bash', [
      path.join(REPO, 'scripts/nats-start.sh'),
      natsDir,
      String(await freePort()),
      String(await freePort()),
    ]);
    natsUrl = /TRANSFERLAB_NATS_URL=(\S+)/.exec(stdout)?.[1];
    if (!natsUrl) throw new Error(`scripts/nats-start.sh printed no TRANSFERLAB_NATS_URL: ${stdout}`);
  }
  const natsPid = natsDir ? Number((await readFile(path.join(natsDir, 'nats-server.pid'), 'utf8')).trim()) : undefined;
  const storeDir = await mkdtemp(path.join(os.tmpdir(), 'tl-bench-store-'));
  const bus = await connectNatsBus({ servers: natsUrl, name: 'bench-controller-scale' });
  try {
    const sweeps = Math.max(1, Math.ceil(cells / 5000));
    const specs = Array.from({ length: sweeps }, (_, i) => specOf(`scale-${i}`, 0.01 + i * 0.001, cells / sweeps));
    const total = specs.reduce((sum, spec) => sum + plannedCellCount(spec), 0);
    const cluster = new SimulatedCluster(trainMs);
    const metrics = new RecordingMetrics();
    const controller = new SweepController({
      store: new LocalFolderStore(storeDir),
      bus,
      steps: cluster,
      executor: cluster,
      metrics,
    });
    console.log(
      `controller-scale: ${total} cells in ${sweeps} sweep(s), concurrency ${concurrencyArg}, ` +
        `simulated training ${trainMs} ms, nats ${natsUrl}; load average ${os
          .loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')}`,
    );
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const started = await Promise.all(
      specs.map((spec) => controller.start(spec, { specDir: '.', ...(concurrency ? { concurrency } : {}) })),
    );
    const tStarted = performance.now();
    const cpuStarted = process.cpuUsage(cpu0);
    const states = await Promise.all(started.map((sweep) => controller.wait(sweep.id)));
    const t1 = performance.now();
    const cpu = process.cpuUsage(cpu0);
    await controller.close();
    const failed = states.filter((sweep) => sweep?.state !== 'succeeded');
    if (failed.length > 0 || cluster.launched !== total) {
      console.error(
        `controller-scale: FAILED: ${failed.length} sweep(s) not succeeded (${states.map((s) => s?.state).join(', ')}), ` +
          `${cluster.launched} of ${total} cells launched`,
      );
      return 1;
    }
    const seconds = (t1 - t0) / 1000;
    const sorted = [...metrics.latencies].sort((a, b) => a - b);
    const natsRss = natsPid ? await peakRssOf(natsPid) : undefined;
    const mib = (bytes: number | undefined): string =>
      bytes === undefined ? 'n/a' : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
    const rows: Array<[string, string]> = [
      ['cells', String(total)],
      ['start() of every sweep (expand, store cell.json, KV records)', `${((tStarted - t0) / 1000).toFixed(2)} s`],
      ['wall time, first start() to last sweep finished', `${seconds.toFixed(2)} s`],
      ['cells per second (target >= 500)', (total / seconds).toFixed(0)],
      ['CPU seconds of this process (user + system)', ((cpu.user + cpu.system) / 1e6).toFixed(2)],
      ['  of which start()', ((cpuStarted.user + cpuStarted.system) / 1e6).toFixed(2)],
      ['cells per CPU-second of this process', (total / ((cpu.user + cpu.system) / 1e6)).toFixed(0)],
      ['peak RSS, this process (controller + simulated executor)', mib(process.resourceUsage().maxRSS * 1024)],
      ['peak RSS, nats-server', natsPid ? mib(natsRss) : 'n/a (not started here)'],
      ['scheduling latency ready -> launched, p50', `${(percentile(sorted, 50) * 1000).toFixed(1)} ms`],
      ['scheduling latency ready -> launched, p99', `${(percentile(sorted, 99) * 1000).toFixed(1)} ms`],
      ['scheduling latency ready -> launched, max', `${(percentile(sorted, 100) * 1000).toFixed(1)} ms`],
      [
        'load average at the end',
        os
          .loadavg()
          .map((l) => l.toFixed(1))
          .join(' '),
      ],
    ];
    for (const [name, value] of rows) console.log(`| ${name.padEnd(60)} | ${value.padStart(22)} |`);
    if (sorted.length !== total) {
      console.error(`controller-scale: FAILED: ${sorted.length} scheduling latencies recorded for ${total} cells`);
      return 1;
    }
    return 0;
  } finally {
    await bus.close();
    await rm(storeDir, { recursive: true, force: true });
    if (natsDir) {
      await run('bash', [path.join(REPO, 'scripts/nats-stop.sh'), natsDir]);
      await rm(natsDir, { recursive: true, force: true });
    }
  }
}

process.exitCode = await main(process.argv.slice(2));
