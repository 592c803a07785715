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
      // A worker that died meanwhile fails the job from its 'exit' handler; the send error adds nothing.
      slot.child.send({ type: 'run', jobId, payload } satisfies ToWorker, () => undefined);
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
 * AbortSignal that fires on an interrupt message, on SIGINT/SIGTERM, or when the parent goes
 * away (the IPC channel closes): in each case the job checkpoints at its next batch and the
 * worker then leaves on its own, so a killed parent never leaves a worker training for minutes.
 */
export function serveJobs(
  handler: (
    payload: unknown,
    context: { signal: AbortSignal; progress: (progress: unknown) => void },
  ) => Promise<unknown>,
): void {
  if (!process.send) throw new Error('serveJobs must run in a process forked with an IPC channel');
  // A parent that died closes the channel: a message then fails with EPIPE. The callback takes
  // that error (without it, it is thrown from the channel and kills the worker mid-checkpoint).
  const send = (message: FromWorker, then?: () => void): void => {
    if (!process.connected) return then?.();
    process.send!(message, () => then?.());
  };
  let current: AbortController | undefined;
  /** Set once the worker should leave: after the job in hand has checkpointed, or at once if idle. */
  let leaving = false;
  const leave = (): void => {
    if (process.connected) process.disconnect();
    process.exit(0);
  };
  const stop = (): void => {
    leaving = true;
    if (current) current.abort();
    else leave();
  };
  // Ctrl-C reaches every process of the terminal's group, SIGTERM comes from a supervisor:
  // checkpoint instead of dying mid-write, then go.
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('disconnect', stop);
  // One line instead of Node's default report, which prints the source line it was thrown
  // from: a minified TensorFlow.js line is tens of kilobytes.
  process.on('uncaughtException', (error) => {
    process.stderr.write(
      `worker ${process.pid}: ${error.stack?.split('\n').slice(0, 6).join('\n') ?? String(error)}\n`,
    );
    process.exit(1);
  });
  process.on('message', (message: ToWorker) => {
    if (message.type === 'interrupt') current?.abort();
    else if (message.type === 'exit') {
      if (process.connected) process.disconnect();
    } else if (message.type === 'run') {
      const controller = new AbortController();
      current = controller;
      if (leaving) controller.abort();
      const jobId = message.jobId;
      const settle = (message: FromWorker): void => {
        if (current === controller) current = undefined;
        send(message, () => {
          if (leaving) leave();
        });
      };
      handler(message.payload, {
        signal: controller.signal,
        progress: (progress) => send({ type: 'progress', jobId, progress }),
      })
        .then((result) => {
          if (controller.signal.aborted) settle({ type: 'interrupted', jobId });
          else settle({ type: 'done', jobId, result, peakRssBytes: process.resourceUsage().maxRSS * 1024 });
        })
        .catch((error: unknown) => {
          if (controller.signal.aborted) settle({ type: 'interrupted', jobId });
          else {
            const err = error instanceof Error ? error : new Error(String(error));
            settle({ type: 'failed', jobId, message: err.message, stack: err.stack });
          }
        });
    }
  });
  send({ type: 'ready', pid: process.pid });
}
