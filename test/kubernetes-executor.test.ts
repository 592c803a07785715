// The Kubernetes executor against a FAKE API server (test/support/fake-kube-apiserver.ts: no real
// kube-apiserver runs here), always through the real @kubernetes/client-node.
//
// - Unit-level: the fake alone, Job and Pod statuses set by hand, no training: watch recovery
//   (410 Gone, dropped connections), the reasons a user reads, cancel, adoption after a restart.
// - End to end: the fake's kubelet runs each Job's trainer (`run-cell`) as a local process on a
//   temporary store and a real nats-server; the SweepController drives a tiny MNIST sweep through
//   the executor, with one pod OOMKilled mid-cell and retried.
import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cell, type SweepSpec, expandGrid, validateSpec } from '@transferlab/experiment';
import { type Bus, LocalFolderStore, connectNatsBus, createInProcessBus, loadConfig } from '@transferlab/platform';
import { cellKeys, ensureSplits, evaluateCell, measureCell, readResult, transplantCell } from '@transferlab/runner';
import { KubernetesExecutor, type TrainerStatus } from '@transferlab/runner/controller/kubernetes-executor';
import { ANNOTATIONS, type TrainerJobSettings, buildTrainerJob } from '@transferlab/runner/controller/kubernetes-job';
import { CellRunError, type CellSteps } from '@transferlab/runner/controller/ports';
import { TRAINER_ENTRY } from '@transferlab/runner/controller/process-executor';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { controllerConfig, trainerJobSettings } from '../services/controller/src/config.ts';
import { FakeKubeApiServer, type JobTimelineEntry } from './support/fake-kube-apiserver.ts';
import { REPO } from './support/servers.ts';

const run = promisify(execFile);
const NAMESPACE = 'ml';
const IMAGE = 'transferlab/trainer:test';

const settings: TrainerJobSettings = {
  namespace: NAMESPACE,
  instance: 'test',
  image: IMAGE,
  gpus: 1,
  resources: { limits: { memory: '4Gi' } },
  configMapName: 'transferlab-trainer',
  s3Secret: { name: 'transferlab-s3', accessKeyKey: 'access-key', secretKeyKey: 'secret-key' },
  terminationGracePeriodSeconds: 10,
};

function kubeConfigFor(fake: FakeKubeApiServer): KubeConfig {
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'fake', server: fake.url, skipTLSVerify: true }],
    users: [{ name: 'test', token: 'not-a-real-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'test', namespace: NAMESPACE }],
    currentContext: 'fake',
  });
  return config;
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function failure(promise: Promise<unknown>): Promise<CellRunError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CellRunError);
  return error as CellRunError;
}

const COMPLETE = { succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] };
const failed = (reason = 'BackoffLimitExceeded', message = 'Job has reached the specified backoff limit') => ({
  failed: 1,
  conditions: [{ type: 'Failed', status: 'True', reason, message }],
});
const terminated = (exitCode: number, reason: string, message?: string) => ({
  phase: 'Failed',
  containerStatuses: [
    {
      name: 'trainer',
      image: IMAGE,
      imageID: '',
      ready: false,
      restartCount: 0,
      state: { terminated: { exitCode, reason, ...(message ? { message } : {}) } },
    },
  ],
});

// ---- unit-level: the fake with hand-set statuses ----------------------------------------------

const unitSpec = validateSpec({
  name: 'unit',
  dataset: { kind: 'mnist' },
  net: { kind: 'small', width: 0.25 },
  layers: [1, 2],
  arms: ['baseA', 'baseB', 'AnB'],
  repeats: 1,
  concurrency: 2,
});
const unitCells = expandGrid(unitSpec).cells;
const [cellA, cellB] = unitCells as [Cell, Cell];

describe('the controller configuration of trainer Jobs', () => {
  // What the chart gives the controller (charts/transferlab/templates/_trainer.tpl).
  const chartEnv = {
    TRANSFERLAB_EXECUTOR: 'kubernetes',
    TRANSFERLAB_K8S_NAMESPACE: 'ml',
    TRANSFERLAB_K8S_INSTANCE: 'release',
    TRANSFERLAB_K8S_TRAINER_IMAGE: 'registry.example/transferlab-trainer-gpu:0.1.0',
    TRANSFERLAB_K8S_IMAGE_PULL_POLICY: 'IfNotPresent',
    TRANSFERLAB_K8S_IMAGE_PULL_SECRETS: '[{"name":"regcred"}]',
    TRANSFERLAB_K8S_SERVICE_ACCOUNT: 'release-trainer',
    TRANSFERLAB_K8S_CONFIG_MAP: 'release-config',
    TRANSFERLAB_K8S_S3_SECRET: 'release-s3',
    TRANSFERLAB_K8S_S3_ACCESS_KEY_KEY: 'accesskey',
    TRANSFERLAB_K8S_S3_SECRET_KEY_KEY: 'secretkey',
    TRANSFERLAB_K8S_GPU_RESOURCE: 'nvidia.com/gpu',
    TRANSFERLAB_K8S_GPU_COUNT: '2',
    TRANSFERLAB_K8S_CPU: '8',
    TRANSFERLAB_K8S_MEMORY: '48Gi',
    TRANSFERLAB_K8S_NODE_SELECTOR: '{"nvidia.com/gpu.present":"true"}',
    TRANSFERLAB_K8S_TOLERATIONS: '[{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}]',
    TRANSFERLAB_K8S_AFFINITY: '{}',
    TRANSFERLAB_K8S_RUNTIME_CLASS_NAME: 'nvidia',
    TRANSFERLAB_K8S_ACTIVE_DEADLINE_SECONDS: '172800',
    TRANSFERLAB_K8S_TTL_SECONDS_AFTER_FINISHED: '3600',
  };

  it('turns the TRANSFERLAB_K8S_* variables into Job settings whose Jobs validate', () => {
    const config = loadConfig(controllerConfig, chartEnv);
    expect(config.executor).toBe('kubernetes');
    const jobSettings = trainerJobSettings(config, config.k8sNamespace!);
    const job = buildTrainerJob(cellA, { sweepId: 'sweep-1', attempt: 1, settings: jobSettings });
    expect(() => new Job(job as ConstructorParameters<typeof Job>[0]).validate()).not.toThrow();
    const pod = job.spec!.template.spec!;
    expect(job.metadata!.namespace).toBe('ml');
    expect(job.metadata!.labels!['app.kubernetes.io/instance']).toBe('release');
    expect(pod.containers[0]!.resources).toEqual({
      requests: { cpu: '8', memory: '48Gi' },
      limits: { memory: '48Gi', 'nvidia.com/gpu': '2' },
    });
    expect(pod.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
    expect(pod.affinity).toBeUndefined(); // {} is no affinity
    expect(pod.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    expect(pod.serviceAccountName).toBe('release-trainer');
    expect(job.spec!.activeDeadlineSeconds).toBe(172800);
    expect(pod.containers[0]!.env).toContainEqual({
      name: 'TRANSFERLAB_S3_SECRET_KEY',
      valueFrom: { secretKeyRef: { name: 'release-s3', key: 'secretkey' } },
    });
  });

  it('names the variable at fault', () => {
    expect(() => loadConfig(controllerConfig, { TRANSFERLAB_K8S_NODE_SELECTOR: '{oops' })).toThrow(
      /TRANSFERLAB_K8S_NODE_SELECTOR: must be JSON/,
    );
    expect(() => loadConfig(controllerConfig, { TRANSFERLAB_K8S_TOLERATIONS: '{"not":"a list"}' })).toThrow(
      /TRANSFERLAB_K8S_TOLERATIONS/,
    );
    const noImage = loadConfig(controllerConfig, { TRANSFERLAB_EXECUTOR: 'kubernetes' });
    expect(() => trainerJobSettings(noImage, 'ml')).toThrow(/TRANSFERLAB_K8S_TRAINER_IMAGE: required/);
    expect(loadConfig(controllerConfig, {}).executor).toBe('process');
  });
});

describe('KubernetesExecutor against the fake API server (no training)', () => {
  let fake: FakeKubeApiServer;
  const executors: KubernetesExecutor[] = [];

  beforeAll(async () => {
    fake = await FakeKubeApiServer.start();
  });
  afterAll(async () => {
    for (const executor of executors) await executor.close();
    await fake.close();
  });

  function executor(
    options: { pendingTimeoutMs?: number; onStatus?: (cellId: string, s: TrainerStatus) => void } = {},
  ) {
    const instance = new KubernetesExecutor({
      kubeConfig: kubeConfigFor(fake),
      settings,
      watch: { reconnectDelayMs: { initialMs: 20, maxMs: 200 } },
      ...options,
    });
    executors.push(instance);
    return instance;
  }

  /** Starts a run of `cell` in a sweep of its own and returns it with the Job it created. */
  async function started(instance: KubernetesExecutor, cell: Cell, sweepId: string, attempt = 1) {
    const signal = new AbortController();
    const outcome = instance.run(cell, { sweepId, attempt, signal: signal.signal });
    outcome.catch(() => undefined); // inspected by the test
    let name = '';
    await until(() => {
      const job = fake.jobs(NAMESPACE).find((j) => j.metadata?.annotations?.[ANNOTATIONS.sweepId] === sweepId);
      name = job?.metadata?.name ?? '';
      return name !== '';
    }, `the Job of ${sweepId}`);
    return { outcome, name, abort: () => signal.abort() };
  }

  it('creates the Job and resolves trained when it completes', async () => {
    const { outcome, name } = await started(executor(), cellA, 'complete-1');
    expect(name).toMatch(/^tl-complete-1-[0-9a-f]{10}-a1$/);
    fake.setJobStatus(NAMESPACE, name, COMPLETE);
    expect(await outcome).toBe('trained');
  });

  it('after 410 Gone lists again and still sees the completion', async () => {
    const instance = executor();
    const { outcome, name } = await started(instance, cellA, 'gone-1');
    const lists = fake.listRequests.Job;
    fake.expireWatches(); // open watches get ERROR 410; resuming from the old version gets 410 too
    fake.setJobStatus(NAMESPACE, name, COMPLETE); // happens while the client is away
    expect(await outcome).toBe('trained');
    expect(fake.listRequests.Job).toBeGreaterThan(lists);
    expect(instance.watchStats.jobs.gone).toBeGreaterThanOrEqual(1);
  });

  it('reconnects after a dropped watch connection and replays what it missed', async () => {
    const instance = executor();
    const { outcome, name } = await started(instance, cellA, 'drop-1');
    const watches = fake.watchRequests.Job;
    fake.dropWatches();
    fake.setJobStatus(NAMESPACE, name, COMPLETE);
    expect(await outcome).toBe('trained');
    expect(fake.watchRequests.Job).toBeGreaterThan(watches);
  });

  it('reports an unschedulable pod through onStatus, keeps waiting, then fails after the pending timeout', async () => {
    const statuses: TrainerStatus[] = [];
    const instance = executor({ pendingTimeoutMs: 600, onStatus: (_, status) => statuses.push(status) });
    const startedAt = Date.now();
    const { outcome, name } = await started(instance, cellA, 'unschedulable-1');
    fake.addPod(NAMESPACE, name, {
      phase: 'Pending',
      conditions: [
        {
          type: 'PodScheduled',
          status: 'False',
          reason: 'Unschedulable',
          message: '0/3 nodes are available: 3 Insufficient nvidia.com/gpu.',
        },
      ],
    });
    await until(() => statuses.some((s) => s.reason === 'Unschedulable'), 'the Unschedulable status');
    expect(statuses.find((s) => s.reason === 'Unschedulable')).toMatchObject({
      jobName: name,
      sweepId: 'unschedulable-1',
      message: '0/3 nodes are available: 3 Insufficient nvidia.com/gpu.',
    });
    const error = await failure(outcome);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(550);
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('did not start within');
    expect(error.message).toContain('Insufficient nvidia.com/gpu');
    expect(error.message).toContain('asks for 1 nvidia.com/gpu');
    expect(fake.deletions).toContainEqual({ kind: 'Job', namespace: NAMESPACE, name, propagationPolicy: 'Background' });
  });

  it('does not time out a pod that starts running before the pending timeout', async () => {
    const statuses: string[] = [];
    const instance = executor({ pendingTimeoutMs: 300, onStatus: (_, status) => statuses.push(status.reason) });
    const { outcome, name } = await started(instance, cellA, 'late-start-1');
    const pod = fake.addPod(NAMESPACE, name, {
      phase: 'Pending',
      conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: 'no GPU' }],
    });
    await until(() => statuses.includes('Unschedulable'), 'Unschedulable');
    fake.setPodStatus(NAMESPACE, pod.metadata!.name!, { phase: 'Running' });
    await until(() => statuses.includes('Running'), 'Running');
    await new Promise((resolve) => setTimeout(resolve, 400));
    fake.setJobStatus(NAMESPACE, name, COMPLETE);
    expect(await outcome).toBe('trained');
  });

  it('fails at once, not retryable, when the image cannot be pulled (ImagePullBackOff)', async () => {
    const { outcome, name } = await started(executor(), cellA, 'pull-1');
    const pod = fake.addPod(NAMESPACE, name, { phase: 'Pending' });
    fake.setPodStatus(NAMESPACE, pod.metadata!.name!, {
      phase: 'Pending',
      containerStatuses: [
        {
          name: 'trainer',
          image: IMAGE,
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${IMAGE}"` } },
        },
      ],
    });
    const error = await failure(outcome);
    expect(error.retryable).toBe(false);
    expect(error.message).toContain(`cannot pull its image ${IMAGE}`);
    expect(error.message).toContain('ImagePullBackOff');
    expect(fake.deletions.filter((d) => d.name === name)).toEqual([
      { kind: 'Job', namespace: NAMESPACE, name, propagationPolicy: 'Background' },
    ]);
  });

  it.each([
    {
      case: 'OOMKilled',
      pod: terminated(137, 'OOMKilled'),
      job: failed(),
      retryable: true,
      says: ['was OOMKilled', 'its limit (4Gi)', 'resumes from its last checkpoint'],
    },
    {
      case: 'exit code 2',
      pod: terminated(2, 'Error', 'no cell definition at cells/x/cell.json'),
      job: failed(),
      retryable: false,
      says: ['exit code 2', 'ConfigMap transferlab-trainer', 'no cell definition at cells/x/cell.json'],
    },
    {
      case: 'exit code 1 with its log tail',
      pod: terminated(1, 'Error', 'RangeError: boom'),
      job: failed(),
      retryable: true,
      says: ['failed (exit code 1)', 'last lines of its log:\nRangeError: boom'],
    },
    {
      case: 'another exit code',
      pod: terminated(139, 'Error'),
      job: failed(),
      retryable: true,
      says: ['exited with code 139'],
    },
    {
      case: 'evicted by the kubelet',
      pod: { phase: 'Failed', reason: 'Evicted', message: 'The node was low on resource: memory.' },
      job: failed(),
      retryable: true,
      says: ['was evicted', 'low on resource: memory'],
    },
    {
      case: 'preempted (DisruptionTarget)',
      pod: {
        ...terminated(143, 'Error'),
        conditions: [
          {
            type: 'DisruptionTarget',
            status: 'True',
            reason: 'PreemptionByScheduler',
            message: 'Preempted in order to admit critical pod',
          },
        ],
      },
      job: failed(),
      retryable: true,
      says: ['was preempted', 'PreemptionByScheduler'],
    },
    {
      case: 'deadline exceeded',
      pod: terminated(143, 'Error'),
      job: failed('DeadlineExceeded', 'Job was active longer than specified deadline'),
      retryable: true,
      says: ['activeDeadlineSeconds', 'DeadlineExceeded'],
    },
  ])('turns a failed Job into a reason a user can act on: $case', async ({ case: name, pod, job, retryable, says }) => {
    const sweepId = `fail-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
    const { outcome, name: jobName } = await started(executor(), cellA, sweepId);
    const added = fake.addPod(NAMESPACE, jobName, { phase: 'Running' });
    fake.setPodStatus(NAMESPACE, added.metadata!.name!, pod);
    fake.setJobStatus(NAMESPACE, jobName, job);
    const error = await failure(outcome);
    expect(error.retryable).toBe(retryable);
    expect(error.cellId).toBe(cellA.id);
    expect(error.message).toContain(`trainer Job ${NAMESPACE}/${jobName} (cell ${cellA.name}, attempt 1)`);
    for (const text of says) expect(error.message).toContain(text);
  });

  it('reports a Job deleted behind its back as a retryable failure', async () => {
    const { outcome, name } = await started(executor(), cellA, 'deleted-1');
    await new Promise((resolve) => setTimeout(resolve, 50)); // let the watch see it
    const response = await fetch(`${fake.url}/apis/batch/v1/namespaces/${NAMESPACE}/jobs/${name}`, {
      method: 'DELETE',
    });
    expect(response.status).toBe(200);
    const error = await failure(outcome);
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('was deleted before it finished');
  });

  it('adopts a Job an earlier controller left for the same cell instead of creating another', async () => {
    const sweepId = 'adopt-1';
    // Attempt 1 still running (an earlier controller made it); the restarted controller asks for attempt 2.
    fake.createJob(NAMESPACE, buildTrainerJob(cellA, { sweepId, attempt: 1, settings }));
    // And a Job of the same attempt that already completed while no controller watched.
    const done = buildTrainerJob(cellB, { sweepId, attempt: 1, settings });
    fake.createJob(NAMESPACE, done);
    fake.setJobStatus(NAMESPACE, done.metadata!.name!, COMPLETE);
    const before = fake.timeline.filter((entry) => entry.event === 'created').length;

    const instance = executor();
    const signal = new AbortController().signal;
    const running = instance.run(cellA, { sweepId, attempt: 2, signal });
    expect(await instance.run(cellB, { sweepId, attempt: 1, signal })).toBe('trained');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(fake.timeline.filter((entry) => entry.event === 'created').length).toBe(before);
    fake.setJobStatus(NAMESPACE, buildTrainerJob(cellA, { sweepId, attempt: 1, settings }).metadata!.name!, COMPLETE);
    expect(await running).toBe('trained');
    expect(
      fake.jobs(NAMESPACE).filter((job) => job.metadata?.annotations?.[ANNOTATIONS.sweepId] === sweepId),
    ).toHaveLength(2);
  });

  it('on abort deletes the Job with background propagation and resolves interrupted; close() leaves Jobs alone', async () => {
    const instance = executor();
    const first = await started(instance, cellA, 'abort-1');
    first.abort();
    expect(await first.outcome).toBe('interrupted');
    expect(fake.deletions).toContainEqual({
      kind: 'Job',
      namespace: NAMESPACE,
      name: first.name,
      propagationPolicy: 'Background',
    });
    const second = await started(instance, cellB, 'abort-2');
    instance.detach();
    second.abort();
    expect(await second.outcome).toBe('interrupted');
    await instance.close();
    expect(fake.job(NAMESPACE, second.name)).toBeDefined();
    expect(fake.deletions.some((d) => d.name === second.name)).toBe(false);
    expect(
      (await failure(instance.run(cellA, { sweepId: 'x', attempt: 1, signal: new AbortController().signal }))).message,
    ).toContain('closed');
  });

  it('lists and deletes a sweep’s Jobs (background propagation)', async () => {
    const instance = executor();
    const sweepId = 'leftover-1';
    for (const cell of [cellA, cellB])
      fake.createJob(NAMESPACE, buildTrainerJob(cell, { sweepId, attempt: 1, settings }));
    fake.setJobStatus(NAMESPACE, buildTrainerJob(cellB, { sweepId, attempt: 1, settings }).metadata!.name!, failed());
    const listed = await instance.listSweepJobs(sweepId);
    expect(listed.map((job) => [job.cellName, job.attempt, job.state])).toEqual(
      expect.arrayContaining([
        [cellA.name, 1, 'active'],
        [cellB.name, 1, 'failed'],
      ]),
    );
    expect(listed.find((job) => job.state === 'failed')?.reason).toContain('BackoffLimitExceeded');
    const deleted = await instance.deleteSweepJobs(sweepId);
    expect(deleted).toHaveLength(2);
    for (const name of deleted) {
      expect(fake.deletions).toContainEqual({
        kind: 'Job',
        namespace: NAMESPACE,
        name,
        propagationPolicy: 'Background',
      });
    }
    expect(await instance.listSweepJobs(sweepId)).toEqual([]);
  });

  describe('with the SweepController (scripted steps, Jobs completed by the test)', () => {
    const steps: CellSteps = {
      createSplit: async () => {},
      transplant: async () => {},
      evaluate: async (cell) => ({ cellId: cell.id }) as Awaited<ReturnType<CellSteps['evaluate']>>,
      measure: async () => {
        throw new Error('this sweep has no measure cells');
      },
    };

    /** Plays the Job controller: completes every active Job of the sweep after `ms`. */
    function autoComplete(sweepId: string, ms: number): () => void {
      const seen = new Map<string, number>();
      const timer = setInterval(() => {
        for (const job of fake.jobs(NAMESPACE)) {
          const name = job.metadata!.name!;
          if (job.metadata?.annotations?.[ANNOTATIONS.sweepId] !== sweepId || job.status?.conditions?.length) continue;
          if (!seen.has(name)) seen.set(name, Date.now());
          else if (Date.now() - seen.get(name)! >= ms) fake.setJobStatus(NAMESPACE, name, COMPLETE);
        }
      }, 10);
      return () => clearInterval(timer);
    }

    const sweepJobs = (sweepId: string, event: JobTimelineEntry['event']) =>
      fake.timeline.filter((e) => e.event === event && e.annotations[ANNOTATIONS.sweepId] === sweepId);

    it('cancel deletes the running Jobs with background propagation', async () => {
      const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-k8s-cancel-')));
      const controller = new SweepController({ store, bus: createInProcessBus(), steps, executor: executor() });
      const sweep = await controller.start(unitSpec, { specDir: '.' });
      await until(() => sweepJobs(sweep.id, 'created').length === 2, 'two Jobs');
      await controller.cancel(sweep.id);
      const created = sweepJobs(sweep.id, 'created').map((e) => e.name);
      expect(created).toHaveLength(2);
      for (const name of created) {
        expect(fake.deletions).toContainEqual({
          kind: 'Job',
          namespace: NAMESPACE,
          name,
          propagationPolicy: 'Background',
        });
      }
      expect(fake.jobs(NAMESPACE).filter((j) => j.metadata?.annotations?.[ANNOTATIONS.sweepId] === sweep.id)).toEqual(
        [],
      );
      expect((await controller.get(sweep.id))?.sweep.state).toBe('cancelled');
      await controller.close();
    });

    it('a restarted controller adopts the running Jobs: no duplicates, and the sweep finishes', async () => {
      const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-k8s-restart-')));
      const bus: Bus = createInProcessBus(); // KV outlives the controller, as NATS KV would
      const first = executor();
      const controller = new SweepController({ store, bus, steps, executor: first });
      const sweep = await controller.start(unitSpec, { specDir: '.' });
      await until(() => sweepJobs(sweep.id, 'created').length === 2, 'two Jobs');
      // Shutdown as services/controller does it: keep the Jobs, stop driving.
      first.detach();
      await controller.close();
      expect(fake.deletions.filter((d) => sweepJobs(sweep.id, 'created').some((e) => e.name === d.name))).toEqual([]);

      const restarted = new SweepController({ store, bus, steps, executor: executor() });
      expect(await restarted.resume()).toEqual([sweep.id]);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(sweepJobs(sweep.id, 'created')).toHaveLength(2); // adopted, not duplicated
      const stop = autoComplete(sweep.id, 30);
      try {
        expect((await restarted.wait(sweep.id))?.state).toBe('succeeded');
      } finally {
        stop();
      }
      // One Job per cell over both controllers.
      expect(sweepJobs(sweep.id, 'created')).toHaveLength(unitCells.length);
      await restarted.close();
    });
  });
});

// ---- the fake kubelet with stand-in containers: the paths the real trainer rarely takes ------

describe('KubernetesExecutor with the fake kubelet running stand-in containers', () => {
  let fake: FakeKubeApiServer;
  const executors: KubernetesExecutor[] = [];

  beforeAll(async () => {
    fake = await FakeKubeApiServer.start({
      kubelet: {
        images: {
          // Trains forever (until the deadline's SIGTERM).
          'stand-in/sleeper:1': [process.execPath, '-e', 'setInterval(() => {}, 1000)'],
          // Dies as a crashed trainer: a log line, exit 1.
          'stand-in/crash:1': [process.execPath, '-e', 'console.error("RangeError: stand-in crash"); process.exit(1)'],
        },
      },
    });
    fake.putConfigMap(NAMESPACE, settings.configMapName, { TRANSFERLAB_STORE: '/nowhere' });
    fake.putSecret(NAMESPACE, 'transferlab-s3', { 'access-key': 'a', 'secret-key': 's' });
  });
  afterAll(async () => {
    for (const executor of executors) await executor.close();
    await fake.close();
  });

  function runWith(overrides: Partial<TrainerJobSettings>, options: { pendingTimeoutMs?: number } = {}) {
    const statuses: string[] = [];
    const executor = new KubernetesExecutor({
      kubeConfig: kubeConfigFor(fake),
      settings: { ...settings, ...overrides },
      onStatus: (_, status) => statuses.push(status.reason),
      ...options,
    });
    executors.push(executor);
    const sweepId = `stand-in-${executors.length}`;
    const outcome = executor.run(cellA, { sweepId, attempt: 1, signal: new AbortController().signal });
    return { outcome, statuses };
  }

  it('fails a Job that runs past activeDeadlineSeconds with DeadlineExceeded (retryable)', async () => {
    const { outcome, statuses } = runWith({ image: 'stand-in/sleeper:1', activeDeadlineSeconds: 1 });
    const error = await failure(outcome);
    expect(statuses).toContain('Running');
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('activeDeadlineSeconds (1 s)');
  });

  it('puts the log tail of a crashed trainer in the error (FallbackToLogsOnError)', async () => {
    const error = await failure(runWith({ image: 'stand-in/crash:1' }).outcome);
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('failed (exit code 1)');
    expect(error.message).toContain('RangeError: stand-in crash');
  });

  it('fails, not retryable, on an image the kubelet cannot pull (ErrImagePull, then ImagePullBackOff)', async () => {
    const { outcome, statuses } = runWith({ image: 'stand-in/missing:1' });
    const error = await failure(outcome);
    expect(statuses).toContain('ErrImagePull');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('cannot pull its image stand-in/missing:1 (ImagePullBackOff');
  });

  it('surfaces a missing ConfigMap (CreateContainerConfigError) and fails after the pending timeout', async () => {
    const { outcome, statuses } = runWith(
      { image: 'stand-in/sleeper:1', configMapName: 'not-there' },
      { pendingTimeoutMs: 400 },
    );
    const error = await failure(outcome);
    expect(statuses).toContain('CreateContainerConfigError');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('configmap "not-there" not found');
    expect(error.message).toContain('check that ConfigMap not-there and Secret transferlab-s3 exist');
  });
});

// ---- end to end: the fake kubelet runs the real trainer ---------------------------------------

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise((done) => server.close(done));
  return port;
}

/** The nats-server: TRANSFERLAB_NATS_URL when set, else one started (and stopped) through scripts/. */
async function startNats(): Promise<{ url: string; stop: () => Promise<void> }> {
  if (process.env.TRANSFERLAB_NATS_URL) return { url: process.env.TRANSFERLAB_NATS_URL, stop: async () => {} };
  const dir = await mkdtemp(join(tmpdir(), 'tl-k8s-nats-'));
  const { stdout } = await run('bash', [
    join(REPO, 'scripts/nats-start.sh'),
    dir,
    String(await freePort()),
    String(await freePort()),
  ]);
  const url = /^TRANSFERLAB_NATS_URL=(\S+)$/m.exec(stdout)?.[1];
  if (!url) throw new Error(`nats-start.sh printed no TRANSFERLAB_NATS_URL: ${stdout}`);
  return { url, stop: async () => void (await run('bash', [join(REPO, 'scripts/nats-stop.sh'), dir])) };
}

const e2eSpec: SweepSpec = validateSpec({
  name: 'k8s-e2e',
  dataset: { kind: 'mnist' },
  split: { kind: 'random', trainPerClass: 20, valPerClass: 5, testPerClass: 5 },
  net: { kind: 'small', width: 0.25 },
  training: { batchSize: 10, learningRate: 0.01, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 },
  base: { maxEpochs: 2, patience: 2 },
  layers: [1, 2],
  arms: ['baseA', 'baseB', 'AnB'],
  repeats: 1,
  concurrency: 2,
});

describe('a tiny sweep end to end: SweepController + KubernetesExecutor + the fake kubelet running the trainer', () => {
  let fake: FakeKubeApiServer;
  let nats: { url: string; stop: () => Promise<void> };
  let bus: Bus;
  let controller: SweepController | undefined;
  const output = new Map<string, string[]>();

  beforeAll(async () => {
    nats = await startNats();
    bus = await connectNatsBus({ servers: nats.url, name: 'k8s-executor-test' });
    fake = await FakeKubeApiServer.start({
      kubelet: {
        // The trainer image's entrypoint is the trainer's main: here, from the sources through tsx.
        images: { [IMAGE]: [process.execPath, '--import', import.meta.resolve('tsx'), TRAINER_ENTRY] },
        cwd: REPO,
        onOutput: (pod, line) => {
          if (!output.has(pod)) output.set(pod, []);
          output.get(pod)!.push(line);
        },
      },
    });
  });
  afterAll(async () => {
    await controller?.close(); // when the test failed half-way
    await fake?.close();
    await bus?.close();
    await nats?.stop();
  });

  it('runs the cells as Jobs in dependency order within the concurrency limit; an OOMKilled pod is retried and resumes', async () => {
    const root = await mkdtemp(join(tmpdir(), 'tl-k8s-e2e-'));
    const store = new LocalFolderStore(root);
    // What the chart's ConfigMap and Secret would hold; the local folder stands in for S3.
    fake.putConfigMap(NAMESPACE, settings.configMapName, {
      TRANSFERLAB_STORE: root,
      TRANSFERLAB_NATS_URL: nats.url,
      TRANSFERLAB_PROGRESS_INTERVAL_MS: '200',
    });
    fake.putSecret(NAMESPACE, 'transferlab-s3', { 'access-key': 'unused-here', 'secret-key': 'unused-here' });

    const steps: CellSteps = {
      createSplit: async (task, options) => void (await ensureSplits(store, [task], { specDir: options.specDir })),
      transplant: async (cell) => void (await transplantCell(store, cell)),
      evaluate: (cell) => evaluateCell(store, cell),
      measure: (cell) => measureCell(store, cell),
    };
    const statuses: Array<{ cellId: string; reason: string }> = [];
    const executor = new KubernetesExecutor({
      kubeConfig: kubeConfigFor(fake),
      settings,
      onStatus: (cellId, status) => statuses.push({ cellId, reason: status.reason }),
    });
    const failures: string[] = [];
    controller = new SweepController({
      store,
      bus,
      steps,
      executor,
      log: (message, fields) => {
        if (message === 'cell failed') failures.push(String(fields?.error));
      },
    });
    const plan = expandGrid(e2eSpec);
    const baseA = plan.cells.find((cell) => cell.arm === 'baseA')!;

    const sweep = await controller.start(e2eSpec, { specDir: REPO });
    // Kill baseA's first pod as the OOM killer would, once it has checkpointed epoch 1 of 2.
    await until(
      () => fake.pods(NAMESPACE).some((pod) => pod.metadata?.annotations?.[ANNOTATIONS.cellId] === baseA.id),
      "baseA's pod",
      60_000,
    );
    const firstPod = fake.pods(NAMESPACE).find((pod) => pod.metadata?.annotations?.[ANNOTATIONS.cellId] === baseA.id)!;
    const checkpoint = `${cellKeys.checkpoint(baseA.id)}/manifest.json`;
    const deadline = Date.now() + 60_000;
    while (!(await store.stat(checkpoint))) {
      if (Date.now() > deadline) throw new Error('baseA wrote no checkpoint');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    fake.killPod(NAMESPACE, firstPod.metadata!.name!, { reason: 'OOMKilled' });

    const final = await controller.wait(sweep.id);
    const current = await controller.get(sweep.id);
    const summary = current?.cells.map((record) => `${record.cell.name}: ${record.state} ${record.error ?? ''}`);
    expect(final?.state, summary?.join('\n')).toBe('succeeded');

    // Every cell has its result in the store.
    for (const cell of plan.cells) expect(await readResult(store, cell.id)).toBeDefined();

    const timeline = fake.timeline.filter((entry) => entry.annotations[ANNOTATIONS.sweepId] === sweep.id);
    const cellOf = (entry: JobTimelineEntry) => entry.annotations[ANNOTATIONS.cellId];

    // baseA: attempt 1 OOMKilled (Failed), attempt 2 a new Job that resumed from the checkpoint.
    const baseAJobs = timeline.filter((e) => e.event === 'created' && cellOf(e) === baseA.id).map((e) => e.name);
    expect(baseAJobs.map((name) => name.slice(-3))).toEqual(['-a1', '-a2']);
    expect(timeline.some((e) => e.event === 'failed' && e.name === baseAJobs[0])).toBe(true);
    const baseARecord = current!.cells.find((record) => record.cell.id === baseA.id)!;
    expect(baseARecord.attempts).toBe(2);
    expect(baseARecord.error ?? '').toBe(''); // cleared on success
    expect(failures).toHaveLength(1);
    expect(failures[0]).toContain(
      `trainer Job ${NAMESPACE}/${baseAJobs[0]} (cell baseA seed=1, attempt 1) was OOMKilled`,
    );
    const secondPod = [...output.keys()].find((pod) => pod.startsWith(`${baseAJobs[1]}-`))!;
    const resumed = output.get(secondPod)!.find((line) => line.includes('resuming from checkpoint'));
    expect(resumed, `attempt 2 did not resume:\n${output.get(secondPod)!.join('\n')}`).toBeDefined();
    expect(JSON.parse(resumed!)).toMatchObject({ epoch: 1 });

    // Dependency order: no transfer Job before its base cell's Job completed.
    for (const cell of plan.cells.filter((c) => c.kind === 'transfer')) {
      const createdAt = timeline.find((e) => e.event === 'created' && cellOf(e) === cell.id)!.at;
      const sourceDone = timeline.find((e) => e.event === 'succeeded' && cellOf(e) === cell.sourceCellId)!.at;
      expect(createdAt).toBeGreaterThanOrEqual(sourceDone);
    }
    // Never more than the sweep's concurrency (2) Jobs at once.
    let active = 0;
    let most = 0;
    for (const entry of timeline) {
      active += entry.event === 'created' ? 1 : entry.event === 'deleted' ? 0 : -1;
      most = Math.max(most, active);
    }
    expect(most).toBeLessThanOrEqual(2);
    expect(timeline.filter((e) => e.event === 'created')).toHaveLength(plan.cells.length + 1);
    expect(statuses.some((s) => s.reason === 'Running')).toBe(true);

    await controller.close();
    controller = undefined;
  });
});
