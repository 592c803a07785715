// The cluster executor: one batch/v1 Job per cell attempt, followed through one shared watch
// of the namespace's trainer Jobs and one of their Pods.
import { existsSync, readFileSync } from 'node:fs';
import {
  ApiException,
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  type V1ContainerStateTerminated,
  type V1Job,
  type V1Pod,
} from '@kubernetes/client-node';
import type { Cell } from '@transferlab/experiment';
import { currentTraceparent } from '@transferlab/platform';
import {
  ANNOTATIONS,
  LABELS,
  TRAINER_CONTAINER,
  type TrainerJobSettings,
  buildTrainerJob,
  selectorString,
  trainerJobName,
  trainerSelector,
} from './kubernetes-job.ts';
import { ResourceWatch } from './kubernetes-watch.ts';
import { CellRunError, type Executor } from './ports.ts';
import { TRAINER_EXIT_CODES } from './process-executor.ts';

/** What a trainer is doing, as a user would want to hear it: `reason` is Kubernetes' own word. */
export interface TrainerStatus {
  sweepId: string;
  jobName: string;
  /**
   * `Pending` (no pod yet, or not started), `Unschedulable` (no node can take it: no free GPU,
   * placement), `FailedCreate` (the Job controller cannot create the pod: a ResourceQuota, an
   * admission webhook), `Suspended` (a queue such as Kueue holds the Job), a container waiting
   * reason (`ContainerCreating`, `ErrImagePull`, `ImagePullBackOff`,
   * `CreateContainerConfigError`, ...), or `Running`.
   */
  reason: string;
  message: string;
  /**
   * The trainer waits its turn for capacity (no node with a free GPU yet, a quota used up, a
   * queue that has not admitted it): a queued cell, not a stuck one. No time limit applies
   * unless `queueTimeoutMs` is set.
   */
  queued: boolean;
}

export interface KubernetesExecutorOptions {
  /** Default: the pod's service account in a cluster, else KUBECONFIG or ~/.kube/config. */
  kubeConfig?: KubeConfig;
  settings: TrainerJobSettings;
  /**
   * How long a trainer may be stuck starting (container config, image pulling, a pod the Job
   * controller may not create for another reason than a quota) before its cell fails;
   * meanwhile `onStatus` says why. Default 30 minutes. A queued trainer (see
   * `TrainerStatus.queued`) is not stuck: `queueTimeoutMs` applies to it instead.
   */
  pendingTimeoutMs?: number;
  /**
   * How long a trainer may stay queued (Unschedulable: no node has a free GPU; FailedCreate
   * for an exceeded quota) before its cell fails. Default: no limit, the cell waits for
   * capacity. A Job held suspended by a queue (Kueue) is never timed out here.
   */
  queueTimeoutMs?: number;
  /**
   * How many failed pulls of the trainer image (ErrImagePull; the kubelet retries between them
   * with its own back-off, ImagePullBackOff, 10 s doubling up to 5 min) before the cell fails.
   * Default 6 (about 10 minutes). An invalid image name fails at once.
   */
  imagePullAttempts?: number;
  /** How often to look for the Job controller's FailedCreate events while a Job has no pod. Default 5 s. */
  eventPollMs?: number;
  /** Every change of a trainer's status (deduplicated). */
  onStatus?: (cellId: string, status: TrainerStatus) => void;
  /** Extra variables for one attempt's trainer, e.g. TRANSFERLAB_TRACEPARENT. */
  envFor?: (cell: Cell, options: { sweepId: string; attempt: number }) => Record<string, string> | undefined;
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** The watches' reconnect back-off and server-side timeout (see ResourceWatch). */
  watch?: { reconnectDelayMs?: { initialMs: number; maxMs: number }; timeoutSeconds?: number };
}

/** One trainer Job as `listSweepJobs` reports it. */
export interface TrainerJobSummary {
  name: string;
  cellId: string;
  cellName: string;
  attempt: number;
  state: JobState;
  /** Why it failed (the Job's Failed condition), when it did. */
  reason?: string;
}

export type JobState = 'active' | 'succeeded' | 'failed';

interface Run {
  cell: Cell;
  sweepId: string;
  attempt: number;
  jobName: string;
  /** The latest copy of the Job: from the create or list call, then from the watch. */
  job: V1Job;
  /** When the executor had the Job in hand (created or found): a later list without it means it is gone. */
  confirmedAt: number;
  /** The watch has shown the Job: its disappearance from there means it was deleted. */
  seen: boolean;
  /** The trainer's pod has run: no more pending timeout. */
  started: boolean;
  /** Failed pulls of the image seen so far (transitions into ErrImagePull). */
  pullFailures: number;
  /** The Job controller's latest FailedCreate event, while the Job has no pod. */
  createFailure?: { message: string; at: number };
  eventTimer?: NodeJS.Timeout;
  queueTimer?: NodeJS.Timeout;
  /** The run is being ended (interrupted, or failing): events are no longer looked at. */
  ending: boolean;
  /**
   * Its pod's last state once the pod is gone: an evicted or deadline-stopped pod is deleted,
   * and the Job's Failed condition can arrive after that; its reason stays readable here.
   */
  departedPod?: V1Pod;
  lastStatus?: TrainerStatus;
  pendingTimer?: NodeJS.Timeout;
  finish: (outcome: 'trained' | 'interrupted' | CellRunError) => void;
}

const JOB_NAME_LABELS = ['batch.kubernetes.io/job-name', 'job-name'];
/** Image problems no pull retry can mend. */
const IMAGE_FATAL = new Set(['InvalidImageName', 'ErrImageNeverPull']);
/** A pull that failed; the kubelet backs off and tries again. */
const IMAGE_PULL_RETRIED = new Set(['ErrImagePull', 'ImagePullBackOff']);

/** A Job's state from its conditions: Complete, Failed, or neither yet. */
export function jobState(job: V1Job): JobState {
  const conditions = job.status?.conditions ?? [];
  if (conditions.some((c) => c.type === 'Complete' && c.status === 'True')) return 'succeeded';
  if (conditions.some((c) => c.type === 'Failed' && c.status === 'True')) return 'failed';
  return 'active';
}

/** The cluster's credentials: the pod's service account in a cluster, else KUBECONFIG or ~/.kube/config. */
export function defaultKubeConfig(): KubeConfig {
  const config = new KubeConfig();
  config.loadFromDefault();
  return config;
}

/** The namespace this process runs in, when it runs in a pod (its service account says so). */
export function inClusterNamespace(): string | undefined {
  const file = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';
  return existsSync(file) ? readFileSync(file, 'utf8').trim() || undefined : undefined;
}

/**
 * Runs each cell attempt as a Kubernetes Job (`buildTrainerJob`) and turns what the API server
 * shows about the Job and its pod into the outcome: Complete → 'trained'; Failed → a
 * CellRunError whose message says why (deadline, eviction or preemption, OOMKilled, exit code)
 * and whether a retry can help. A trainer waiting for capacity (Unschedulable, an exceeded
 * quota, a suspended Job) is a queued cell, reported through `onStatus`, with no time limit
 * unless `queueTimeoutMs` is set; one stuck starting (container config, another FailedCreate)
 * fails after `pendingTimeoutMs`; image pulls fail after `imagePullAttempts` failed pulls.
 *
 * An abort (cancel) deletes the Job with background propagation, so its pod goes too (SIGTERM:
 * the trainer checkpoints). A Job already there for the same sweep and cell is adopted, not
 * duplicated: after a controller restart the running trainers carry on. `close()` stops the
 * watches and leaves the Jobs running for the next controller.
 */
export class KubernetesExecutor implements Executor {
  private readonly batch: BatchV1Api;
  private readonly core: CoreV1Api;
  private readonly settings: TrainerJobSettings;
  private readonly namespace: string;
  private readonly pendingTimeoutMs: number;
  private readonly queueTimeoutMs: number | undefined;
  private readonly imagePullAttempts: number;
  private readonly runs = new Map<string, Run>();
  private readonly statusListeners: Array<(sweepId: string, cellId: string, status: string) => void> = [];
  private readonly jobs: ResourceWatch<V1Job>;
  private readonly pods: ResourceWatch<V1Pod>;
  private watching: Promise<void> | undefined;
  private keepJobs = false;
  private closed = false;

  constructor(private readonly options: KubernetesExecutorOptions) {
    this.settings = options.settings;
    this.namespace = options.settings.namespace;
    this.pendingTimeoutMs = options.pendingTimeoutMs ?? 30 * 60_000;
    this.queueTimeoutMs = options.queueTimeoutMs || undefined;
    this.imagePullAttempts = options.imagePullAttempts ?? 6;
    const kubeConfig = options.kubeConfig ?? defaultKubeConfig();
    this.batch = kubeConfig.makeApiClient(BatchV1Api);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    const labelSelector = selectorString(trainerSelector(this.settings));
    const common = {
      kubeConfig,
      labelSelector,
      log: options.log,
      reconnectDelayMs: options.watch?.reconnectDelayMs,
      timeoutSeconds: options.watch?.timeoutSeconds,
    };
    this.jobs = new ResourceWatch<V1Job>({
      ...common,
      kind: 'Job',
      path: `/apis/batch/v1/namespaces/${this.namespace}/jobs`,
      list: () => this.batch.listNamespacedJob({ namespace: this.namespace, labelSelector }),
      onChange: (_, job) => this.onJobChange(job),
      onResync: (listStartedAt) => this.onResync(listStartedAt),
    });
    this.pods = new ResourceWatch<V1Pod>({
      ...common,
      kind: 'Pod',
      path: `/api/v1/namespaces/${this.namespace}/pods`,
      list: () => this.core.listNamespacedPod({ namespace: this.namespace, labelSelector }),
      onChange: (type, pod) => this.onPodChange(type, pod),
      onResync: () => this.evaluateAll(),
    });
  }

  /** The watches' counters (lists, watch requests, 410s, failures): for tests and logs. */
  get watchStats() {
    return { jobs: { ...this.jobs.stats }, pods: { ...this.pods.stats } };
  }

  onStatus(listener: (sweepId: string, cellId: string, status: string) => void): void {
    this.statusListeners.push(listener);
  }

  async run(
    cell: Cell,
    options: { sweepId: string; attempt: number; signal: AbortSignal },
  ): Promise<'trained' | 'interrupted'> {
    if (this.closed) throw new CellRunError(cell.id, 'the Kubernetes executor is closed');
    if (options.signal.aborted) return 'interrupted';
    const { sweepId, attempt } = options;
    try {
      await this.startWatching();
    } catch (error) {
      throw new CellRunError(
        cell.id,
        `cannot list trainer Jobs and Pods in namespace ${this.namespace}: ${describeApiError(error)} ` +
          '(the controller needs get/list/watch on jobs and pods there)',
      );
    }
    let job: V1Job;
    try {
      job = (await this.findJob(cell, sweepId, attempt)) ?? (await this.createJob(cell, sweepId, attempt));
    } catch (error) {
      const code = error instanceof ApiException ? error.code : undefined;
      // Forbidden or invalid: a configuration problem that a retry meets again.
      const retryable = code === undefined || code >= 500 || code === 429 || code === 409;
      throw new CellRunError(
        cell.id,
        `cannot create the trainer Job for cell ${cell.name} (attempt ${attempt}) in namespace ${this.namespace}: ${describeApiError(error)}`,
        retryable,
      );
    }
    if (this.closed) return 'interrupted';
    return this.follow(cell, job, options);
  }

  /**
   * From now on an abort leaves the run's Job running instead of deleting it. Call it when the
   * controller shuts down, before it aborts its sweeps: the next controller adopts the Jobs.
   */
  detach(): void {
    this.keepJobs = true;
  }

  /** Stops the watches. Jobs keep running; runs still waiting resolve 'interrupted'. */
  async close(): Promise<void> {
    this.closed = true;
    this.jobs.stop();
    this.pods.stop();
    for (const run of [...this.runs.values()]) run.finish('interrupted');
  }

  /** The trainer Jobs of a sweep, oldest first. */
  async listSweepJobs(sweepId: string): Promise<TrainerJobSummary[]> {
    return (await this.sweepJobs(sweepId)).map((job) => {
      const failed = job.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
      const labels = job.metadata?.labels ?? {};
      return {
        name: job.metadata?.name ?? '',
        cellId: job.metadata?.annotations?.[ANNOTATIONS.cellId] ?? labels[LABELS.cellId] ?? '',
        cellName: job.metadata?.annotations?.[ANNOTATIONS.cellName] ?? '',
        attempt: Number(labels[LABELS.attempt] ?? 0),
        state: jobState(job),
        ...(failed ? { reason: [failed.reason, failed.message].filter(Boolean).join(': ') } : {}),
      };
    });
  }

  /** Deletes every trainer Job of a sweep (background propagation: their pods go too); returns their names. */
  async deleteSweepJobs(sweepId: string): Promise<string[]> {
    const names = (await this.sweepJobs(sweepId)).map((job) => job.metadata?.name ?? '').filter(Boolean);
    for (const name of names) await this.deleteJob(name);
    return names;
  }

  private startWatching(): Promise<void> {
    this.watching ??= Promise.all([this.jobs.start(), this.pods.start()]).then(
      () => undefined,
      (error: unknown) => {
        this.watching = undefined;
        throw error;
      },
    );
    return this.watching;
  }

  private async sweepJobs(sweepId: string, cellId?: string): Promise<V1Job[]> {
    const labelSelector = selectorString(trainerSelector(this.settings, sweepId, cellId));
    const list = await this.batch.listNamespacedJob({ namespace: this.namespace, labelSelector });
    // Labels hold at most 63 characters of an id: the annotations hold all of it.
    return list.items
      .filter((job) => {
        const annotations = job.metadata?.annotations ?? {};
        return (
          annotations[ANNOTATIONS.sweepId] === sweepId &&
          (cellId === undefined || annotations[ANNOTATIONS.cellId] === cellId)
        );
      })
      .sort((a, b) => attemptOf(a) - attemptOf(b));
  }

  /**
   * A Job this sweep already has for the cell: one still running (whatever its attempt: a
   * restarted controller counts a new attempt for the cell it was running), else one that
   * completed (its trained net is in the store). Failed Jobs are history.
   */
  private async findJob(cell: Cell, sweepId: string, attempt: number): Promise<V1Job | undefined> {
    const jobs = await this.sweepJobs(sweepId, cell.id);
    const found =
      jobs.filter((job) => jobState(job) === 'active').pop() ??
      jobs.filter((job) => jobState(job) === 'succeeded').pop();
    if (found) {
      this.options.log?.('adopting an existing trainer Job', {
        cellId: cell.id,
        job: found.metadata?.name,
        state: jobState(found),
        attempt,
      });
    }
    return found;
  }

  private async createJob(cell: Cell, sweepId: string, attempt: number): Promise<V1Job> {
    // The trainer's spans join the trace of the cell's span (the controller's `cell`), as a
    // trainer process's do (process-executor.ts).
    const traceparent = currentTraceparent();
    const env = {
      ...(traceparent ? { TRANSFERLAB_TRACEPARENT: traceparent } : {}),
      ...this.options.envFor?.(cell, { sweepId, attempt }),
    };
    const body = buildTrainerJob(cell, {
      sweepId,
      attempt,
      settings: this.settings,
      ...(Object.keys(env).length > 0 ? { env } : {}),
    });
    try {
      const job = await this.batch.createNamespacedJob({ namespace: this.namespace, body });
      this.options.log?.('trainer Job created', { cellId: cell.id, job: job.metadata?.name, attempt });
      return job;
    } catch (error) {
      // Created meanwhile (a race with another call, or a Job of this attempt that failed): follow it.
      if (error instanceof ApiException && error.code === 409) {
        return this.batch.readNamespacedJob({ name: body.metadata!.name!, namespace: this.namespace });
      }
      throw error;
    }
  }

  private follow(
    cell: Cell,
    job: V1Job,
    options: { sweepId: string; attempt: number; signal: AbortSignal },
  ): Promise<'trained' | 'interrupted'> {
    return new Promise((resolve, reject) => {
      const jobName = job.metadata?.name ?? trainerJobName(options.sweepId, cell.id, options.attempt);
      const onAbort = (): void => void this.interrupt(run);
      const run: Run = {
        cell,
        sweepId: options.sweepId,
        attempt: attemptOf(job) || options.attempt,
        jobName,
        job,
        confirmedAt: Date.now(),
        seen: false,
        started: false,
        ending: false,
        pullFailures: 0,
        finish: (outcome) => {
          if (this.runs.get(jobName) !== run) return;
          this.runs.delete(jobName);
          clearTimeout(run.pendingTimer);
          clearTimeout(run.queueTimer);
          clearTimeout(run.eventTimer);
          options.signal.removeEventListener('abort', onAbort);
          if (outcome instanceof Error) reject(outcome);
          else resolve(outcome);
        },
      };
      const previous = this.runs.get(jobName);
      if (previous) previous.finish(new CellRunError(cell.id, `another run took over trainer Job ${jobName}`));
      this.runs.set(jobName, run);
      options.signal.addEventListener('abort', onAbort, { once: true });
      if (options.signal.aborted) onAbort();
      else this.evaluate(run);
    });
  }

  private async interrupt(run: Run): Promise<void> {
    if (this.runs.get(run.jobName) !== run) return; // already settled
    run.ending = true;
    if (!this.keepJobs) {
      await this.deleteJob(run.jobName).catch((error: unknown) =>
        this.options.log?.('cannot delete trainer Job', { job: run.jobName, error: describeApiError(error) }),
      );
    }
    run.finish('interrupted');
  }

  private async deleteJob(name: string): Promise<void> {
    try {
      // Background: the Job goes now and the garbage collector removes its pod (the default for
      // batch/v1 Jobs would orphan the pod, which would train on).
      await this.batch.deleteNamespacedJob({ name, namespace: this.namespace, propagationPolicy: 'Background' });
      this.options.log?.('trainer Job deleted', { job: name });
    } catch (error) {
      if (!(error instanceof ApiException && error.code === 404)) throw error;
    }
  }

  private onJobChange(job: V1Job): void {
    const run = this.runs.get(job.metadata?.name ?? '');
    if (run) this.evaluate(run);
  }

  private onPodChange(type: string, pod: V1Pod): void {
    const run = this.runs.get(podJobName(pod) ?? '');
    if (!run) return;
    if (type === 'DELETED') run.departedPod = pod;
    this.evaluate(run);
  }

  /** After a (re-)list of Jobs: a run whose Job the list lacks, though it existed before the list began, lost it. */
  private onResync(listStartedAt: number): void {
    for (const run of this.runs.values()) {
      if (this.jobs.get(run.jobName) === undefined && run.confirmedAt < listStartedAt) run.seen = true;
    }
    this.evaluateAll();
  }

  private evaluateAll(): void {
    for (const run of [...this.runs.values()]) this.evaluate(run);
  }

  /** Decides what the latest Job and Pod objects mean for a run. */
  private evaluate(run: Run): void {
    if (run.ending || this.closed) return;
    const cached = this.jobs.get(run.jobName);
    if (cached) {
      run.job = cached;
      run.seen = true;
    } else if (run.seen) {
      this.fail(
        run,
        'its Job was deleted before it finished (kubectl delete, or a namespace clean-up); a retry resumes from the checkpoint',
        true,
      );
      return;
    }
    const state = jobState(run.job);
    if (state === 'succeeded') {
      run.ending = true;
      run.finish('trained');
      return;
    }
    if (state === 'failed') {
      run.ending = true;
      void this.describeFailure(run).then(({ message, retryable }) => run.finish(this.error(run, message, retryable)));
      return;
    }
    const suspended = isSuspended(run.job);
    const pods = this.podsOf(run.jobName);
    if (pods.length > 0 || suspended) {
      run.createFailure = undefined;
      clearTimeout(run.eventTimer);
      run.eventTimer = undefined;
    } else if (!run.eventTimer) {
      // No pod: the Job controller may be unable to create it; it says why only in an event.
      this.watchCreateEvents(run);
    }
    const status = suspended
      ? {
          reason: 'Suspended',
          message: 'its Job is suspended until a queue (e.g. Kueue) admits it; no timeout runs meanwhile',
          queued: true,
        }
      : pods.length === 0 && run.createFailure
        ? createFailureStatus(run.createFailure.message)
        : podStatus(pods);
    if (IMAGE_FATAL.has(status.reason)) {
      this.fail(run, `cannot use its image ${this.settings.image} (${describe(status)}); ${IMAGE_HINT}`, false, {
        deleteJob: true,
      });
      return;
    }
    if (status.reason === 'ErrImagePull' && run.lastStatus?.reason !== 'ErrImagePull') {
      run.pullFailures += 1;
      if (run.pullFailures >= this.imagePullAttempts) {
        this.fail(
          run,
          `cannot pull its image ${this.settings.image}: ${run.pullFailures} pulls failed, the kubelet backing off ` +
            `between them (${describe(status)}); ${IMAGE_HINT}`,
          false,
          { deleteJob: true },
        );
        return;
      }
    }
    if (IMAGE_PULL_RETRIED.has(status.reason)) {
      status.message = `${status.message}${status.message ? ' ' : ''}(failed pulls: ${run.pullFailures} of at most ${this.imagePullAttempts})`;
    }
    this.report(run, status);
    if (status.reason === 'Running') {
      run.started = true;
      clearTimeout(run.pendingTimer);
      clearTimeout(run.queueTimer);
      run.pendingTimer = undefined;
      run.queueTimer = undefined;
    } else if (status.queued) {
      // Queued is not stuck: no pending timeout; a queue timeout only when one is set, and never
      // for a Job a queue (Kueue) holds suspended.
      clearTimeout(run.pendingTimer);
      run.pendingTimer = undefined;
      if (suspended) {
        clearTimeout(run.queueTimer);
        run.queueTimer = undefined;
      } else if (this.queueTimeoutMs !== undefined && !run.queueTimer) {
        run.queueTimer = setTimeout(() => this.timedOut(run, this.queueTimeoutMs!, 'queued'), this.queueTimeoutMs);
      }
    } else if (!run.started && !run.pendingTimer) {
      clearTimeout(run.queueTimer);
      run.queueTimer = undefined;
      run.pendingTimer = setTimeout(() => this.timedOut(run, this.pendingTimeoutMs, 'pending'), this.pendingTimeoutMs);
    }
  }

  /** While the run's Job has no pod: the Job controller's latest FailedCreate event, polled. */
  private watchCreateEvents(run: Run): void {
    const poll = async (): Promise<void> => {
      if (this.runs.get(run.jobName) !== run || run.ending) return;
      try {
        const events = await this.core.listNamespacedEvent({
          namespace: this.namespace,
          fieldSelector: `involvedObject.kind=Job,involvedObject.name=${run.jobName},reason=FailedCreate`,
        });
        const latest = events.items
          .map((event) => ({
            message: event.message ?? '',
            at: new Date(event.lastTimestamp ?? event.eventTime ?? event.metadata?.creationTimestamp ?? 0).getTime(),
          }))
          .sort((a, b) => b.at - a.at)[0];
        if (latest && latest.message !== run.createFailure?.message) {
          run.createFailure = latest;
          this.evaluate(run);
        }
      } catch (error) {
        // Reading events is a nicety: a Role without it costs the reason, not the run.
        this.options.log?.('cannot list the trainer Job’s events', {
          job: run.jobName,
          error: describeApiError(error),
        });
      }
      if (this.runs.get(run.jobName) === run && run.eventTimer) {
        run.eventTimer = setTimeout(() => void poll(), this.options.eventPollMs ?? 5000);
      }
    };
    // Not at once: the Job controller normally makes the pod within a second, and a list per
    // Job would double the API calls of a large sweep.
    run.eventTimer = setTimeout(() => void poll(), this.options.eventPollMs ?? 5000);
  }

  private timedOut(run: Run, limitMs: number, kind: 'queued' | 'pending'): void {
    if (run.ending || run.started) return;
    const last = run.lastStatus;
    const minutes = Math.round((limitMs / 60_000) * 10) / 10;
    const why = last ? describe(last) : 'Pending';
    const what = kind === 'queued' ? 'was queued for more than' : 'did not start within';
    this.fail(run, `${what} ${minutes} min (${why}); ${pendingHint(last?.reason, this.settings)}`, false, {
      deleteJob: true,
    });
  }

  private fail(run: Run, message: string, retryable: boolean, options: { deleteJob?: boolean } = {}): void {
    run.ending = true;
    const error = this.error(run, message, retryable);
    if (!options.deleteJob) {
      run.finish(error);
      return;
    }
    void this.deleteJob(run.jobName)
      .catch((deleteError: unknown) =>
        this.options.log?.('cannot delete trainer Job', { job: run.jobName, error: describeApiError(deleteError) }),
      )
      .then(() => run.finish(error));
  }

  private error(run: Run, message: string, retryable: boolean): CellRunError {
    const what = `trainer Job ${this.namespace}/${run.jobName} (cell ${run.cell.name}, attempt ${run.attempt})`;
    return new CellRunError(run.cell.id, `${what} ${message}`, retryable);
  }

  private report(run: Run, status: { reason: string; message: string; queued: boolean }): void {
    const last = run.lastStatus;
    if (last && last.reason === status.reason && last.message === status.message) return;
    run.lastStatus = { sweepId: run.sweepId, jobName: run.jobName, ...status };
    this.options.onStatus?.(run.cell.id, run.lastStatus);
    // What GetSweep shows on the cell: a queued cell says so first.
    const text = `${status.queued ? 'queued: ' : ''}${describe(status)}`;
    for (const listener of this.statusListeners) listener(run.sweepId, run.cell.id, text);
  }

  private podsOf(jobName: string): V1Pod[] {
    return this.pods.list().filter((pod) => podJobName(pod) === jobName);
  }

  /** Why a Failed Job failed: from its condition and, freshly listed, its pod. */
  private async describeFailure(run: Run): Promise<{ message: string; retryable: boolean }> {
    let pods = this.podsOf(run.jobName);
    try {
      // The pod watch may lag behind the Job's: ask for the pod's final state.
      // `job-name` is the Job controller's label on its pods (also as batch.kubernetes.io/job-name since 1.27).
      const labelSelector = selectorString({ ...trainerSelector(this.settings), 'job-name': run.jobName });
      const list = await this.core.listNamespacedPod({ namespace: this.namespace, labelSelector });
      const fresh = list.items.filter((pod) => podJobName(pod) === run.jobName);
      if (fresh.length > 0) pods = fresh;
    } catch (error) {
      this.options.log?.('cannot list the failed Job’s pods', { job: run.jobName, error: describeApiError(error) });
    }
    if (pods.length === 0 && run.departedPod) pods = [run.departedPod];
    return describeJobFailure(run.job, pods, this.settings);
  }
}

/** A Failed Job in words a user can act on, and whether a new attempt (resuming from the checkpoint) can help. */
export function describeJobFailure(
  job: V1Job,
  pods: V1Pod[],
  settings: Pick<TrainerJobSettings, 'configMapName' | 'resources'>,
): { message: string; retryable: boolean } {
  const failed = job.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
  if (failed?.reason === 'DeadlineExceeded') {
    const limit = job.spec?.activeDeadlineSeconds;
    return {
      message:
        `ran longer than its activeDeadlineSeconds${limit !== undefined ? ` (${limit} s)` : ''} and was stopped ` +
        '(DeadlineExceeded); a retry resumes from its last checkpoint. Raise trainer.activeDeadlineSeconds ' +
        '(TRANSFERLAB_K8S_ACTIVE_DEADLINE_SECONDS) if one attempt cannot finish the cell',
      retryable: true,
    };
  }
  const pod = [...pods].sort((a, b) => created(b) - created(a))[0];
  const disruption = pod?.status?.conditions?.find((c) => c.type === 'DisruptionTarget' && c.status === 'True');
  if (disruption || pod?.status?.reason === 'Evicted' || pod?.status?.reason === 'Preempting') {
    const why = disruption
      ? `${disruption.reason ?? 'DisruptionTarget'}${disruption.message ? `: ${disruption.message}` : ''}`
      : `${pod?.status?.reason}${pod?.status?.message ? `: ${pod.status.message}` : ''}`;
    const preempted = /preempt/i.test(why);
    return {
      message:
        `${preempted ? 'was preempted' : 'was evicted'} (${why}); a retry resumes from its last checkpoint` +
        (preempted ? ' (a higher-priority pod needed the node: see trainer.priorityClassName)' : ''),
      retryable: true,
    };
  }
  const container = pod?.status?.containerStatuses?.find((c) => c.name === TRAINER_CONTAINER);
  const terminated = container?.state?.terminated ?? container?.lastState?.terminated;
  if (terminated?.reason === 'OOMKilled') {
    const limit = settings.resources?.limits?.memory;
    return {
      message:
        `was OOMKilled: it used more memory than its limit${limit ? ` (${limit})` : ''}; a retry resumes from its ` +
        'last checkpoint. If it happens again, raise trainer.memory (TRANSFERLAB_K8S_MEMORY) or lower the batch size',
      retryable: true,
    };
  }
  if (terminated) return describeExit(terminated, settings);
  const condition = failed ? `${failed.reason ?? 'Failed'}${failed.message ? `: ${failed.message}` : ''}` : 'Failed';
  return {
    message: `failed (${condition}) and its pod left no exit status; kubectl describe job ${job.metadata?.name}`,
    retryable: true,
  };
}

function describeExit(
  terminated: V1ContainerStateTerminated,
  settings: Pick<TrainerJobSettings, 'configMapName'>,
): { message: string; retryable: boolean } {
  const code = terminated.exitCode;
  const tail = terminated.message?.trim() ? `\nlast lines of its log:\n${terminated.message.trim()}` : '';
  const detail =
    terminated.reason && !['Error', 'Completed'].includes(terminated.reason) ? ` (${terminated.reason})` : '';
  switch (code) {
    case TRAINER_EXIT_CODES.usage:
      return {
        message:
          'could not start the cell (exit code 2): bad arguments, or no cells/<id>/cell.json in its store; ' +
          `check that ConfigMap ${settings.configMapName} names the controller's store${tail}`,
        retryable: false,
      };
    case TRAINER_EXIT_CODES.failed:
      return { message: `failed (exit code 1); a retry resumes from its last checkpoint${tail}`, retryable: true };
    case TRAINER_EXIT_CODES.interrupted:
      return {
        message:
          'was stopped by a SIGTERM the controller did not send (exit code 143: node shutdown, or its pod was ' +
          `deleted); its checkpoint is kept and a retry resumes from it${tail}`,
        retryable: true,
      };
    case 137:
      return {
        message: `was killed (SIGKILL, exit code 137${detail}); a retry resumes from its last checkpoint${tail}`,
        retryable: true,
      };
    default:
      return { message: `exited with code ${code}${detail}${tail}`, retryable: true };
  }
}

/** A Job held back by `spec.suspend` (created so, for Kueue, or suspended later): no pod runs. */
function isSuspended(job: V1Job): boolean {
  if (job.spec?.suspend === true) return true;
  return (job.status?.conditions ?? []).some((c) => c.type === 'Suspended' && c.status === 'True');
}

interface PodWait {
  reason: string;
  message: string;
  queued: boolean;
}

/** Where a trainer's pod stands while its Job is unfinished. */
function podStatus(pods: V1Pod[]): PodWait {
  const pod = [...pods].sort((a, b) => created(b) - created(a))[0];
  if (!pod) return { reason: 'Pending', message: 'waiting for the Job controller to create its pod', queued: false };
  const phase = pod.status?.phase;
  if (phase === 'Running' || phase === 'Succeeded' || phase === 'Failed') {
    return {
      reason: 'Running',
      message: `pod ${pod.metadata?.name} ${phase === 'Running' ? 'is running' : 'ended'}`,
      queued: false,
    };
  }
  // The scheduler's verdict (PodScheduled=False, reason Unschedulable): no node has room for it
  // now, typically no free GPU; it places the pod when one frees or a node joins.
  const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False') {
    const reason = scheduled.reason ?? 'Unschedulable';
    return { reason, message: scheduled.message ?? '', queued: reason === 'Unschedulable' };
  }
  const container = pod.status?.containerStatuses?.find((c) => c.name === TRAINER_CONTAINER);
  const waiting = container?.state?.waiting;
  if (waiting?.reason) return { reason: waiting.reason, message: waiting.message ?? '', queued: false };
  return { reason: 'Pending', message: `pod ${pod.metadata?.name} is starting`, queued: false };
}

/**
 * The Job controller could not create the pod. A ResourceQuota that is used up frees when other
 * pods end, and the Job controller keeps trying: queued. Anything else (an admission webhook,
 * Pod Security) is a configuration problem under the pending timeout.
 */
function createFailureStatus(message: string): PodWait {
  return { reason: 'FailedCreate', message, queued: /exceeded quota/i.test(message) };
}

function describe(status: { reason: string; message: string }): string {
  return status.message ? `${status.reason}: ${status.message}` : status.reason;
}

const IMAGE_HINT =
  "check the trainer image name and tag (the chart's trainer.image, TRANSFERLAB_K8S_TRAINER_IMAGE), that the " +
  'registry is reachable from the nodes, and the image pull secrets';

function pendingHint(reason: string | undefined, settings: TrainerJobSettings): string {
  switch (reason) {
    case 'Unschedulable':
      return (
        `no node could take it: it asks for ${settings.gpus} ${settings.gpuResource ?? 'nvidia.com/gpu'}` +
        `${settings.nodeSelector ? ' with a nodeSelector' : ''}${settings.tolerations ? ' and tolerations' : ''}; ` +
        'free GPUs, check the placement settings, or raise TRANSFERLAB_K8S_QUEUE_TIMEOUT_SECONDS (0: no limit) to wait longer'
      );
    case 'FailedCreate':
      return (
        'the Job controller could not create its pod (kubectl describe job shows the events); for a ResourceQuota, ' +
        'raise it or raise TRANSFERLAB_K8S_QUEUE_TIMEOUT_SECONDS (0: no limit) to wait longer'
      );
    case 'CreateContainerConfigError':
      return `check that ConfigMap ${settings.configMapName}${settings.s3Secret ? ` and Secret ${settings.s3Secret.name}` : ''} exist with the keys the trainer references`;
    case 'ErrImagePull':
    case 'ImagePullBackOff':
    case 'ContainerCreating':
      return `its image ${settings.image} is still not pulled or started; kubectl describe pod shows why`;
    default:
      return 'kubectl describe pod shows why; raise TRANSFERLAB_K8S_PENDING_TIMEOUT_SECONDS to wait longer';
  }
}

function podJobName(pod: V1Pod): string | undefined {
  const labels = pod.metadata?.labels ?? {};
  for (const key of JOB_NAME_LABELS) if (labels[key]) return labels[key];
  return pod.metadata?.ownerReferences?.find((owner) => owner.kind === 'Job')?.name;
}

function attemptOf(job: V1Job): number {
  return Number(job.metadata?.labels?.[LABELS.attempt] ?? 0) || 0;
}

function created(object: { metadata?: { creationTimestamp?: Date | string } }): number {
  const at = object.metadata?.creationTimestamp;
  return at ? new Date(at).getTime() : 0;
}

/** An API error in one line: the server's Status message when there is one. */
export function describeApiError(error: unknown): string {
  if (error instanceof ApiException) {
    // The client hands over the server's Status as text (or, for some codes, nothing).
    let body = error.body as { message?: string; reason?: string } | string | undefined;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body) as { message?: string };
      } catch {
        // plain text: shown as it is
      }
    }
    const text = typeof body === 'string' ? body.slice(0, 500) : (body?.message ?? body?.reason ?? '');
    return `HTTP ${error.code}${text ? `: ${text}` : ''}`;
  }
  return (error as Error)?.message ?? String(error);
}
