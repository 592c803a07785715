import { type ChildProcess, fork } from 'node:child_process';

/** Messages from the parent to a worker process. */
export type ToWorker = { type: 'run'; jobId: string; payload: unknown } | { type: 'interrupt' } | { type: 'exit' };

/** Messages from a worker process to the parent. */
export type FromWorker =
  | { type: 'ready'; pid: number }
  | { type: 'progress'; jobId: string; progress: unknown }
  | { type: 'done'; jobId: string; result: unknown; peakRssBytes: number }
  | { type: 'interrupted'; jobId: string }
  | { type: 'failed'; jobId: string; message: string; stack?: string };

export class JobInterruptedError extends Error {
  constructor(readonly jobId: string) {
    super(`job ${jobId} was interrupted; it resumes from its last checkpoint on the next run`);
    this.name = 'JobInterruptedError';
  }
}

export class JobFailedError extends Error {
  constructor(
    readonly jobId: string,
    message: string,
    readonly workerStack?: string,
  ) {
    super(message);
    this.name = 'JobFailedError';
  }
}

interface Slot {
  child: ChildProcess;
  /** Set synchronously when acquired, so two callers never get the same idle worker. */
  reserved: boolean;
  busy?: { jobId: string; resolve: (value: JobOutcome) => void; reject: (error: Error) => void };
  peakRssBytes: number;
}

export interface JobOutcome {
  result: unknown;
  peakRssBytes: number;
}

export interface WorkerPoolOptions {
  /** How many worker processes at most (one cell each at a time). */
  size: number;
  /** The worker module: a file that calls `serveJobs`. */
  entry: string;
  onProgress?: (jobId: string, progress: unknown) => void;
  env?: NodeJS.ProcessEnv;
}

/**
 * Child processes, one cell each at a time: the embedded executor. Workers are reused across
 * jobs because loading TensorFlow.js costs a second or two per process.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly waiting: Array<() => void> = [];
  private closed = false;
  /** The largest resident set any worker reached, in bytes. */
  peakRssBytes = 0;

  constructor(private readonly options: WorkerPoolOptions) {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new Error(`worker pool size must be a positive integer, got ${options.size}`);
    }
  }

  async run(jobId: string, payload: unknown): Promise<JobOutcome> {
    const slot = await this.acquire();
    return new Promise<JobOutcome>((resolve, reject) => {
      slot.busy = { jobId, resolve, reject };
      slot.child.send({ type: 'run', jobId, payload } satisfies ToWorker);
    });
  }

  /** Asks every worker to checkpoint and stop its job. */
  interrupt(): void {
    for (const slot of this.slots) {
      if (slot.child.connected) slot.child.send({ type: 'interrupt' } satisfies ToWorker, () => undefined);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(
        (slot) =>
          new Promise<void>((resolve) => {
            if (slot.child.exitCode !== null || slot.child.signalCode !== null) return resolve();
            // A worker that does not leave within the grace period is killed: close() always returns.
            const timer = setTimeout(() => slot.child.kill('SIGKILL'), 15_000);
            slot.child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            // The worker may be leaving already: a failed send is no error here.
            if (slot.child.connected) slot.child.send({ type: 'exit' } satisfies ToWorker, () => undefined);
            else slot.child.kill();
          }),
      ),
    );
  }

  private async acquire(): Promise<Slot> {
    for (;;) {
      if (this.closed) throw new Error('worker pool is closed');
      const idle = this.slots.find((slot) => !slot.reserved && slot.child.connected);
      if (idle) {
        idle.reserved = true;
        return idle;
      }
      if (this.slots.length < this.options.size) {
        const slot = this.spawn();
        slot.reserved = true;
        return slot;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private spawn(): Slot {
    // Workers run the TypeScript sources through tsx, resolved from here so any cwd works.
    const tsx = import.meta.resolve('tsx');
    const child = fork(this.options.entry, [], {
      execArgv: ['--import', tsx],
      env: { ...process.env, ...this.options.env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const slot: Slot = { child, reserved: false, peakRssBytes: 0 };
    this.slots.push(slot);
    child.on('message', (message: FromWorker) => this.onMessage(slot, message));
    child.on('exit', (code, signal) => {
      this.slots.splice(this.slots.indexOf(slot), 1);
      const busy = slot.busy;
      slot.busy = undefined;
      slot.reserved = false;
      if (busy) {
        const how = signal ? `signal ${signal}` : `exit code ${code}`;
        busy.reject(
          new JobFailedError(
            busy.jobId,
            `worker process ${child.pid} died with ${how} while running job ${busy.jobId}`,
          ),
        );
      }
      this.release();
    });
    return slot;
  }

  private onMessage(slot: Slot, message: FromWorker): void {
    const busy = slot.busy;
    if (message.type === 'ready') return;
    if (!busy || message.jobId !== busy.jobId) return;
    if (message.type === 'progress') {
      this.options.onProgress?.(message.jobId, message.progress);
      return;
    }
    slot.busy = undefined;
    slot.reserved = false;
    if (message.type === 'done') {
      slot.peakRssBytes = Math.max(slot.peakRssBytes, message.peakRssBytes);
      this.peakRssBytes = Math.max(this.peakRssBytes, message.peakRssBytes);
      busy.resolve({ result: message.result, peakRssBytes: message.peakRssBytes });
    } else if (message.type === 'interrupted') {
      busy.reject(new JobInterruptedError(message.jobId));
    } else {
      busy.reject(new JobFailedError(message.jobId, message.message, message.stack));
    }
    this.release();
  }

  private release(): void {
    this.waiting.shift()?.();
  }
}

/**
 * The worker side: call from the worker module with the job handler. The handler gets an
 * AbortSignal that fires on an interrupt message or SIGINT/SIGTERM.
 */
export function serveJobs(
  handler: (
    payload: unknown,
    context: { signal: AbortSignal; progress: (progress: unknown) => void },
  ) => Promise<unknown>,
): void {
  if (!process.send) throw new Error('serveJobs must run in a process forked with an IPC channel');
  const send = (message: FromWorker): void => {
    process.send?.(message);
  };
  let current: AbortController | undefined;
  const interrupt = (): void => current?.abort();
  // Ctrl-C reaches every process of the terminal's group: checkpoint instead of dying mid-write.
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  process.on('message', (message: ToWorker) => {
    if (message.type === 'interrupt') interrupt();
    else if (message.type === 'exit') {
      if (process.connected) process.disconnect();
    } else if (message.type === 'run') {
      const controller = new AbortController();
      current = controller;
      const jobId = message.jobId;
      handler(message.payload, {
        signal: controller.signal,
        progress: (progress) => send({ type: 'progress', jobId, progress }),
      })
        .then((result) => {
          if (controller.signal.aborted) send({ type: 'interrupted', jobId });
          else send({ type: 'done', jobId, result, peakRssBytes: process.resourceUsage().maxRSS * 1024 });
        })
        .catch((error: unknown) => {
          if (controller.signal.aborted) send({ type: 'interrupted', jobId });
          else {
            const err = error instanceof Error ? error : new Error(String(error));
            send({ type: 'failed', jobId, message: err.message, stack: err.stack });
          }
        })
        .finally(() => {
          if (current === controller) current = undefined;
        });
    }
  });
  send({ type: 'ready', pid: process.pid });
}
