import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cell } from '@transferlab/experiment';
import { currentTraceparent } from '@transferlab/platform';
import { CellRunError, type Executor } from './ports.ts';

/** The trainer's entry point in this workspace: `services/trainer/src/main.ts`. */
export const TRAINER_ENTRY = fileURLToPath(new URL('../../../../services/trainer/src/main.ts', import.meta.url));

/**
 * Set to `1` in each trainer's environment: the trainer stops (with a checkpoint) when its
 * parent, this process, is gone, so a controller killed outright leaves no trainer behind.
 */
export const STOP_WITH_PARENT_ENV = 'TRANSFERLAB_STOP_WITH_PARENT';

/** What `trainer run-cell` exit codes mean (services/trainer/README.md). */
export const TRAINER_EXIT_CODES = { trained: 0, failed: 1, usage: 2, interrupted: 143 } as const;

export interface ProcessExecutorOptions {
  /** Trainer processes at once; further runs wait in a queue, in call order. */
  maxProcesses: number;
  /** The trainer's main module, run through tsx. Default: TRAINER_ENTRY. */
  entry?: string;
  /**
   * Added to this process's environment, which the trainer inherits whole: the store
   * (TRANSFERLAB_STORE or TRANSFERLAB_S3_*) and the bus (TRANSFERLAB_NATS_URL) must be the
   * controller's.
   */
  env?: NodeJS.ProcessEnv;
  /** After SIGTERM, how long a trainer may take to write its checkpoint before SIGKILL. Default 30 s. */
  killGraceMs?: number;
  /**
   * Ports for the trainers' Prometheus endpoints (TRANSFERLAB_METRICS_PORT), one per running
   * trainer; a trainer that finds none free serves no metrics. Default none: the trainers would
   * otherwise all take this process's inherited port.
   */
  metricsPorts?: readonly number[];
  /**
   * Where each running trainer's PID is recorded (`<cellId>.pid`): a restarted controller waits
   * for the trainer a killed predecessor left on a cell (it stops by itself, see
   * STOP_WITH_PARENT_ENV) before it starts another. Default `<tmpdir>/transferlab-trainers`.
   */
  pidDir?: string;
  /** Lines of the trainer's stderr kept for the error of a failed run. Default 20. */
  stderrTailLines?: number;
  /** Each line a trainer writes (its JSON logs). Default: copied to this process's stderr. */
  onOutput?: (line: string, cell: Cell) => void;
  log?: (message: string, fields?: Record<string, unknown>) => void;
}

interface Waiting {
  cellId: string;
  grant: () => void;
  reject: (error: Error) => void;
}

interface Running {
  child: ChildProcess;
  /** SIGTERM now, SIGKILL after the grace period; resolves when the child has exited. */
  stop: () => Promise<void>;
}

/** Longest line kept in an error message: a log line with a stack can be long. */
const MAX_LINE = 2000;

/**
 * The services-mode executor: each cell's trainer is its own process (`trainer run-cell`),
 * sharing nothing with the controller but the store and the bus. The process's exit code is
 * the outcome; progress and completion travel on the bus.
 */
export class ProcessExecutor implements Executor {
  private readonly entry: string;
  private readonly killGraceMs: number;
  private readonly tailLines: number;
  private readonly queue: Waiting[] = [];
  private readonly running = new Set<Running>();
  private readonly freeMetricsPorts: number[];
  private slotsInUse = 0;
  private closed = false;

  constructor(private readonly options: ProcessExecutorOptions) {
    if (!Number.isInteger(options.maxProcesses) || options.maxProcesses < 1) {
      throw new Error(`maxProcesses must be a positive integer, got ${options.maxProcesses}`);
    }
    this.entry = options.entry ?? TRAINER_ENTRY;
    this.killGraceMs = options.killGraceMs ?? 30_000;
    this.tailLines = options.stderrTailLines ?? 20;
    this.freeMetricsPorts = [...(options.metricsPorts ?? [])];
  }

  /** Trainer processes alive now. */
  get processes(): number {
    return this.running.size;
  }

  async run(
    cell: Cell,
    options: { sweepId: string; attempt: number; signal: AbortSignal },
  ): Promise<'trained' | 'interrupted'> {
    if (this.closed) throw new CellRunError(cell.id, 'the process executor is closed');
    if (options.signal.aborted) return 'interrupted';
    if (!(await this.acquire(cell.id, options.signal))) return 'interrupted';
    try {
      await this.waitForPredecessor(cell.id, options.signal);
      if (options.signal.aborted) return 'interrupted';
      return await this.runTrainer(cell, options);
    } finally {
      this.release();
    }
  }

  /** Stops every trainer (each checkpoints, or is killed after the grace period) and refuses new runs. */
  async close(): Promise<void> {
    this.closed = true;
    for (const waiting of this.queue.splice(0)) {
      waiting.reject(new CellRunError(waiting.cellId, 'the process executor closed before the cell started'));
    }
    await Promise.all([...this.running].map((run) => run.stop()));
  }

  private pidFile(cellId: string): string {
    return join(this.options.pidDir ?? join(tmpdir(), 'transferlab-trainers'), `${cellId}.pid`);
  }

  /**
   * Waits while a trainer recorded for the cell still runs (left by a controller killed
   * outright); past the kill grace period it is killed. Never starts two trainers on a cell.
   */
  private async waitForPredecessor(cellId: string, signal: AbortSignal): Promise<void> {
    const pid = Number(await readFile(this.pidFile(cellId), 'utf8').catch(() => ''));
    if (!Number.isInteger(pid) || pid <= 0) return;
    const isOurTrainer = async (): Promise<boolean> => {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
      if (cmdline !== undefined) return cmdline.includes('run-cell') && cmdline.includes(cellId);
      try {
        process.kill(pid, 0);
        return process.platform !== 'linux';
      } catch {
        return false;
      }
    };
    const deadline = Date.now() + this.killGraceMs;
    while (!signal.aborted && (await isOurTrainer())) {
      if (Date.now() > deadline) {
        this.options.log?.('killing the trainer a previous controller left', { cellId, pid });
        process.kill(pid, 'SIGKILL');
      } else {
        this.options.log?.('waiting for the trainer a previous controller left', { cellId, pid });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Resolves true with a slot, or false when the signal aborts while the run is queued. */
  private acquire(cellId: string, signal: AbortSignal): Promise<boolean> {
    if (this.slotsInUse < this.options.maxProcesses) {
      this.slotsInUse += 1;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.queue.indexOf(waiting);
        if (index >= 0) this.queue.splice(index, 1);
        resolve(false);
      };
      const waiting: Waiting = {
        cellId,
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          this.slotsInUse += 1;
          resolve(true);
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiting);
    });
  }

  private release(): void {
    this.slotsInUse -= 1;
    this.queue.shift()?.grant();
  }

  private runTrainer(
    cell: Cell,
    options: { sweepId: string; attempt: number; signal: AbortSignal },
  ): Promise<'trained' | 'interrupted'> {
    const args = [
      'run-cell',
      '--cell-id',
      cell.id,
      '--sweep-id',
      options.sweepId,
      '--attempt',
      String(options.attempt),
    ];
    // Telemetry: a metrics port of its own, and the trace context of the cell's span.
    const metricsPort = this.freeMetricsPorts.shift();
    const telemetryEnv: NodeJS.ProcessEnv = {
      TRANSFERLAB_METRICS_PORT: metricsPort?.toString() ?? 'off',
      [STOP_WITH_PARENT_ENV]: '1',
    };
    const traceparent = currentTraceparent();
    if (traceparent) telemetryEnv.TRANSFERLAB_TRACEPARENT = traceparent;
    // The trainer runs from its TypeScript sources through tsx, resolved from here so any cwd works.
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), this.entry, ...args], {
      env: { ...process.env, ...this.options.env, ...telemetryEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const what = `trainer for cell ${cell.name} (${cell.id}), attempt ${options.attempt}`;
    const pidFile = this.pidFile(cell.id);
    const recorded =
      child.pid === undefined
        ? Promise.resolve()
        : mkdir(join(pidFile, '..'), { recursive: true })
            .then(() => writeFile(pidFile, String(child.pid)))
            .catch((error: unknown) =>
              this.options.log?.('cannot record the trainer PID', { pidFile, err: (error as Error).message }),
            );
    this.options.log?.('trainer started', { cellId: cell.id, pid: child.pid, attempt: options.attempt });

    const output = this.options.onOutput ?? ((line: string) => process.stderr.write(`${line}\n`));
    const tail: string[] = [];
    collectLines(child.stdout!, (line) => output(line, cell));
    collectLines(child.stderr!, (line) => {
      output(line, cell);
      tail.push(line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}...` : line);
      if (tail.length > this.tailLines) tail.shift();
    });

    let stopRequested = false;
    let killedAfterGrace = false;
    let killTimer: NodeJS.Timeout | undefined;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    const stop = async (): Promise<void> => {
      if (!stopRequested && child.exitCode === null && child.signalCode === null) {
        stopRequested = true;
        child.kill('SIGTERM');
        killTimer = setTimeout(() => {
          killedAfterGrace = true;
          child.kill('SIGKILL');
        }, this.killGraceMs);
      }
      await exited;
    };
    const running: Running = { child, stop };
    this.running.add(running);
    const onAbort = (): void => void stop();
    options.signal.addEventListener('abort', onAbort, { once: true });

    return exited.then(async ({ code, signal, error }) => {
      await recorded;
      await rm(pidFile, { force: true }).catch(() => undefined);
      clearTimeout(killTimer);
      options.signal.removeEventListener('abort', onAbort);
      this.running.delete(running);
      if (metricsPort !== undefined) this.freeMetricsPorts.push(metricsPort);
      this.options.log?.('trainer exited', { cellId: cell.id, pid: child.pid, code, signal });
      if (error) throw new CellRunError(cell.id, `${what}: cannot start ${process.execPath}: ${error.message}`);
      if (code === TRAINER_EXIT_CODES.trained) return 'trained';
      if (stopRequested && !killedAfterGrace) {
        // Asked to stop: 143 is the trainer's "checkpoint kept"; a trainer killed by our SIGTERM
        // before it could handle it (still starting) loses nothing either.
        if (code === TRAINER_EXIT_CODES.interrupted || signal === 'SIGTERM') return 'interrupted';
      }
      const how = killedAfterGrace
        ? `did not stop within ${this.killGraceMs / 1000} s of SIGTERM and was killed; it resumes from its last complete checkpoint`
        : describeExit(code, signal);
      const last = tail.length > 0 ? `\nlast ${tail.length} lines of its stderr:\n${tail.join('\n')}` : '\n(no stderr)';
      const rerun = `rerun by hand: tsx ${this.entry} ${args.join(' ')}`;
      throw new CellRunError(cell.id, `${what} ${how}${last}\n${rerun}`, code !== TRAINER_EXIT_CODES.usage);
    });
  }
}

/** An exit in words a user can act on. */
function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal === 'SIGKILL' || code === 137) return 'was killed by SIGKILL (out of memory?)';
  if (signal) return `was killed by ${signal}`;
  switch (code) {
    case TRAINER_EXIT_CODES.failed:
      return 'failed (exit code 1)';
    case TRAINER_EXIT_CODES.usage:
      return 'could not start the cell (exit code 2: bad arguments, or no cells/<id>/cell.json in its store)';
    case TRAINER_EXIT_CODES.interrupted:
      return 'was stopped by a SIGTERM the executor did not send (exit code 143); its checkpoint is kept';
    default:
      return `exited with code ${code}`;
  }
}

/** Calls `onLine` for each line of a stream, the last one included when it has no newline. */
function collectLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') onLine(line);
  });
  stream.on('end', () => {
    if (rest.trim() !== '') onLine(rest);
    rest = '';
  });
}
