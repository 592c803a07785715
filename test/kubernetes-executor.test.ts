// The Kubernetes executor against a REAL control plane (scripts/kube-start.sh: etcd,
// kube-apiserver with token authentication and RBAC, kube-controller-manager, kube-scheduler),
// always through the real @kubernetes/client-node, as the chart's controller ServiceAccount
// (its Role and RoleBinding rendered from charts/transferlab and bound by the real RBAC).
//
// Only the node agent is simulated: test/support/simulated-kubelet.ts registers Node objects
// with nvidia.com/gpu capacity and runs each pod the real scheduler binds to them as a local
// process: stand-in containers (a few lines of Node) for the failure paths, the real trainer
// (`run-cell`) for the end-to-end sweep. Validation, admission (Pod Security "restricted"),
// scheduling, the Job controller, the garbage collector, eviction and watch history are real.
// Faults the real server cannot stage (a watch connection dropped mid-stream) are in
// kubernetes-watch-faults.test.ts, against a fake.
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  BatchV1Api,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  type V1Job,
  makeInformer,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cell, type SweepSpec, expandGrid, validateSpec } from '@transferlab/experiment';
import { type Bus, LocalFolderStore, connectNatsBus, createInProcessBus, loadConfig } from '@transferlab/platform';
import { cellKeys, ensureSplits, evaluateCell, measureCell, readResult, transplantCell } from '@transferlab/runner';
import {
  KubernetesExecutor,
  type TrainerStatus,
  describeJobFailure,
  jobState,
} from '@transferlab/runner/controller/kubernetes-executor';
import { ANNOTATIONS, type TrainerJobSettings, buildTrainerJob } from '@transferlab/runner/controller/kubernetes-job';
import { CellRunError, type CellSteps } from '@transferlab/runner/controller/ports';
import { TRAINER_ENTRY } from '@transferlab/runner/controller/process-executor';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { controllerConfig, trainerJobSettings } from '../services/controller/src/config.ts';
import {
  type ControlPlane,
  compactEtcd,
  controlPlane,
  createNamespace,
  installChartRbac,
  serviceAccountKubeConfig,
} from './support/kube-control-plane.ts';
import { REPO, freePort } from './support/servers.ts';
import { POOL_LABEL, SimulatedKubelet } from './support/simulated-kubelet.ts';

const IMAGE = 'transferlab/trainer:test';
const node = (code: string): string[] => [process.execPath, '-e', code];
/** Stand-in containers: what each image's entrypoint does here. */
const STAND_INS: Record<string, string[]> = {
  // Runs until stopped (SIGTERM: exit 143).
  'stand-in/sleeper:1': node('setInterval(() => {}, 1000)'),
  // Runs until the file STAND_IN_RELEASE exists, then exits 0.
  'stand-in/hold:1': node(
    'const fs = require("fs"); setInterval(() => { if (fs.existsSync(process.env.STAND_IN_RELEASE)) process.exit(0); }, 50)',
  ),
  // Exits at once with STAND_IN_EXIT (default 0) after printing STAND_IN_SAY.
  'stand-in/exit:1': node(
    'if (process.env.STAND_IN_SAY) console.error(process.env.STAND_IN_SAY); process.exit(Number(process.env.STAND_IN_EXIT ?? 0))',
  ),
};

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

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
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

// ---- no server: configuration and the failure messages' shapes ----------------------------

describe('the controller configuration of trainer Jobs', () => {
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

describe('describeJobFailure: kubelet-side endings the simulated kubelet does not stage', () => {
  const job = (reason = 'BackoffLimitExceeded'): V1Job => ({
    metadata: { name: 'tl-x-a1' },
    status: { conditions: [{ type: 'Failed', status: 'True', reason }] },
  });
  const settings = { configMapName: 'transferlab-trainer' };

  it('a pod evicted by the kubelet under node pressure', () => {
    const failed = describeJobFailure(
      job(),
      [{ status: { phase: 'Failed', reason: 'Evicted', message: 'The node was low on resource: memory.' } }],
      settings,
    );
    expect(failed).toEqual({ message: expect.stringContaining('was evicted') as string, retryable: true });
    expect(failed.message).toContain('low on resource: memory');
  });

  it('a Failed Job whose pod left no trace', () => {
    const failed = describeJobFailure(job(), [], settings);
    expect(failed.retryable).toBe(true);
    expect(failed.message).toContain('its pod left no exit status; kubectl describe job tl-x-a1');
  });
});

// ---- the real control plane -----------------------------------------------------------------

let plane: ControlPlane;
beforeAll(async () => {
  plane = await controlPlane();
}, 95 * 60_000);
afterAll(async () => {
  await plane?.stop();
});

/** A namespace set up as the chart would: its RBAC, the trainers' ConfigMap and Secret. */
async function chartNamespace(prefix: string, config: Record<string, string> = {}) {
  const namespace = await createNamespace(plane.admin, prefix, { restricted: true });
  const account = await installChartRbac(plane.admin, namespace, 'test');
  const core = plane.admin.makeApiClient(CoreV1Api);
  await core.createNamespacedConfigMap({
    namespace,
    body: { metadata: { name: 'transferlab-trainer' }, data: { TRANSFERLAB_STORE: '/nowhere', ...config } },
  });
  await core.createNamespacedSecret({
    namespace,
    body: { metadata: { name: 'transferlab-s3' }, stringData: { 'access-key': 'a', 'secret-key': 's' } },
  });
  const kubeConfig = await serviceAccountKubeConfig(plane.admin, namespace, account);
  return { namespace, account, kubeConfig };
}

function settingsFor(namespace: string, pool: string, overrides: Partial<TrainerJobSettings> = {}): TrainerJobSettings {
  return {
    namespace,
    instance: 'test',
    image: IMAGE,
    gpus: 1,
    resources: { limits: { memory: '4Gi' } },
    configMapName: 'transferlab-trainer',
    s3Secret: { name: 'transferlab-s3', accessKeyKey: 'access-key', secretKeyKey: 'secret-key' },
    terminationGracePeriodSeconds: 5,
    nodeSelector: { [POOL_LABEL]: pool },
    ...overrides,
  };
}

/** What happened to a namespace's Jobs, in the order an admin watch saw it. */
interface TimelineEntry {
  at: number;
  event: 'created' | 'succeeded' | 'failed' | 'deleted';
  name: string;
  annotations: Record<string, string>;
}

async function jobTimeline(admin: KubeConfig, namespace: string) {
  const batch = admin.makeApiClient(BatchV1Api);
  const informer = makeInformer<V1Job>(admin, `/apis/batch/v1/namespaces/${namespace}/jobs`, () =>
    batch.listNamespacedJob({ namespace }),
  );
  const entries: TimelineEntry[] = [];
  const ended = new Set<string>();
  const record = (event: TimelineEntry['event'], job: V1Job) =>
    entries.push({ at: Date.now(), event, name: job.metadata!.name!, annotations: job.metadata?.annotations ?? {} });
  const onChange = (job: V1Job) => {
    const state = jobState(job);
    if (state !== 'active' && !ended.has(job.metadata!.uid!)) {
      ended.add(job.metadata!.uid!);
      record(state, job);
    }
  };
  informer.on('add', (job) => {
    record('created', job);
    onChange(job);
  });
  informer.on('update', onChange);
  informer.on('delete', (job) => record('deleted', job));
  await informer.start();
  return { entries, stop: () => informer.stop() };
}

describe('KubernetesExecutor against the real control plane, as the chart’s ServiceAccount', () => {
  let namespace: string;
  let kubeConfig: KubeConfig;
  let kubelet: SimulatedKubelet;
  let batch: BatchV1Api;
  let timeline: Awaited<ReturnType<typeof jobTimeline>>;
  const pool = `unit-${process.pid}`;
  const executors: KubernetesExecutor[] = [];
  const release = join(tmpdir(), `tl-k8s-release-${process.pid}`);

  beforeAll(async () => {
    ({ namespace, kubeConfig } = await chartNamespace('tl-unit'));
    batch = plane.admin.makeApiClient(BatchV1Api);
    kubelet = await SimulatedKubelet.start({
      kubeConfig: plane.admin,
      pool,
      nodes: [
        { name: `${pool}-a`, gpus: 1 },
        { name: `${pool}-b`, gpus: 1 },
      ],
      images: STAND_INS,
    });
    timeline = await jobTimeline(plane.admin, namespace);
  }, 60_000);
  afterAll(async () => {
    for (const executor of executors) await executor.close();
    await timeline?.stop();
    await kubelet?.close();
  });

  function executor(
    options: {
      settings?: Partial<TrainerJobSettings>;
      pendingTimeoutMs?: number;
      queueTimeoutMs?: number;
      imagePullAttempts?: number;
      onStatus?: (cellId: string, s: TrainerStatus) => void;
      timeoutSeconds?: number;
      as?: KubeConfig;
      namespace?: string;
    } = {},
  ) {
    const instance = new KubernetesExecutor({
      kubeConfig: options.as ?? kubeConfig,
      settings: settingsFor(options.namespace ?? namespace, pool, options.settings),
      watch: {
        reconnectDelayMs: { initialMs: 20, maxMs: 200 },
        ...(options.timeoutSeconds ? { timeoutSeconds: options.timeoutSeconds } : {}),
      },
      ...(options.pendingTimeoutMs ? { pendingTimeoutMs: options.pendingTimeoutMs } : {}),
      ...(options.queueTimeoutMs ? { queueTimeoutMs: options.queueTimeoutMs } : {}),
      ...(options.imagePullAttempts ? { imagePullAttempts: options.imagePullAttempts } : {}),
      ...(options.onStatus ? { onStatus: options.onStatus } : {}),
    });
    executors.push(instance);
    return instance;
  }

  /** Starts a run of `cell` in a sweep of its own; resolves once its Job exists. */
  async function started(instance: KubernetesExecutor, cell: Cell, sweepId: string, attempt = 1) {
    const signal = new AbortController();
    const outcome = instance.run(cell, { sweepId, attempt, signal: signal.signal });
    outcome.catch(() => undefined); // inspected by the test
    let name = '';
    await until(async () => {
      name = (await instance.listSweepJobs(sweepId))[0]?.name ?? '';
      return name !== '';
    }, `the Job of ${sweepId}`);
    return { outcome, name, abort: () => signal.abort() };
  }

  const podsOf = async (jobName: string) =>
    (
      await plane.admin
        .makeApiClient(CoreV1Api)
        .listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${jobName}` })
    ).items;

  it('creates Jobs the API server accepts under strict field validation, for the chart’s settings too', async () => {
    // What the chart gives the controller (charts/transferlab/templates/_trainer.tpl), GPU pool settings included.
    const config = loadConfig(controllerConfig, {
      TRANSFERLAB_EXECUTOR: 'kubernetes',
      TRANSFERLAB_K8S_NAMESPACE: namespace,
      TRANSFERLAB_K8S_INSTANCE: 'release',
      TRANSFERLAB_K8S_TRAINER_IMAGE: 'registry.example/transferlab-trainer-gpu:0.1.0',
      TRANSFERLAB_K8S_IMAGE_PULL_POLICY: 'IfNotPresent',
      TRANSFERLAB_K8S_IMAGE_PULL_SECRETS: '[{"name":"regcred"}]',
      TRANSFERLAB_K8S_SERVICE_ACCOUNT: 'test-transferlab-trainer',
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
      // Kueue and the extras a cluster may need.
      TRANSFERLAB_K8S_LABELS: '{"kueue.x-k8s.io/queue-name":"gpu-queue"}',
      TRANSFERLAB_K8S_ANNOTATIONS: '{"example.com/team":"vision"}',
      TRANSFERLAB_K8S_SUSPEND: 'true',
      TRANSFERLAB_K8S_VOLUMES: '[{"name":"datasets","persistentVolumeClaim":{"claimName":"datasets","readOnly":true}}]',
      TRANSFERLAB_K8S_VOLUME_MOUNTS: '[{"name":"datasets","mountPath":"/data","readOnly":true}]',
    });
    const chartSettings = trainerJobSettings(config, config.k8sNamespace!);
    const asController = kubeConfig.makeApiClient(BatchV1Api);
    for (const [jobSettings, cell] of [
      [chartSettings, cellA],
      [settingsFor(namespace, pool), cellB],
      [settingsFor(namespace, pool, { gpus: 0, resources: undefined, s3Secret: undefined }), unitCells[2]!],
    ] as const) {
      const body = buildTrainerJob(cell, { sweepId: 'validate-1', attempt: 1, settings: jobSettings });
      expect(() => new Job(body as ConstructorParameters<typeof Job>[0]).validate()).not.toThrow();
      // Strict: an unknown or duplicated field is an error, not a warning. (Pod Security
      // "restricted" is enforced on the pods the Job controller makes: the other tests' pods pass it.)
      const created = await asController.createNamespacedJob({
        namespace,
        body,
        dryRun: 'All',
        fieldValidation: 'Strict',
      });
      expect(created.metadata?.name).toBe(body.metadata?.name);
      if (jobSettings === chartSettings) {
        expect(created.spec?.suspend).toBe(true);
        expect(created.metadata?.labels?.['kueue.x-k8s.io/queue-name']).toBe('gpu-queue');
        expect(created.spec?.template.metadata?.annotations?.['example.com/team']).toBe('vision');
        expect(created.spec?.template.spec?.containers[0]?.volumeMounts).toContainEqual({
          name: 'datasets',
          mountPath: '/data',
          readOnly: true,
        });
      }
      expect(created.spec?.template.spec?.containers[0]?.resources).toEqual(
        body.spec?.template.spec?.containers[0]?.resources,
      );
    }
  });

  it('is refused by RBAC outside the namespace its Role covers, and says so', async () => {
    const other = await createNamespace(plane.admin, 'tl-no-rbac');
    const error = await failure(
      executor({ namespace: other }).run(cellA, {
        sweepId: 'rbac-1',
        attempt: 1,
        signal: new AbortController().signal,
      }),
    );
    expect(error.message).toContain(`cannot list trainer Jobs and Pods in namespace ${other}: HTTP 403`);
    expect(error.message).toMatch(/system:serviceaccount:tl-unit-[a-z0-9]+:test-transferlab-controller/);
    expect(error.message).toContain('cannot list resource');
  });

  it('runs a Job to completion: the real Job controller marks it Complete', async () => {
    const statuses: string[] = [];
    const instance = executor({
      settings: { image: 'stand-in/exit:1' },
      onStatus: (_, status) => statuses.push(status.reason),
    });
    const { outcome, name } = await started(instance, cellA, 'complete-1');
    expect(name).toMatch(/^tl-complete-1-[0-9a-f]{10}-a1$/);
    expect(await outcome).toBe('trained');
    expect((await batch.readNamespacedJob({ name, namespace })).status?.succeeded).toBe(1);
  });

  it('survives a real compaction: the resumed watch gets 410 Gone, lists again and sees the completion', async () => {
    const file = `${release}-gone`;
    // Each watch request lasts 1 s, so the executor resumes from its last resourceVersion soon after the compaction.
    const instance = executor({
      settings: { image: 'stand-in/hold:1', env: { STAND_IN_RELEASE: file } },
      timeoutSeconds: 1,
    });
    const { outcome, name } = await started(instance, cellA, 'gone-1');
    await until(async () => (await podsOf(name)).some((pod) => pod.status?.phase === 'Running'), 'the pod running');
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the Job's own status settles (ready: 1)
    const lists = instance.watchStats.jobs.lists;
    // Writes after the executor's last seen version, then compact past them.
    await plane.admin.makeApiClient(CoreV1Api).createNamespacedConfigMap({
      namespace,
      body: { metadata: { generateName: 'bump-' }, data: {} },
    });
    await compactEtcd(plane.etcdUrl);
    await until(() => instance.watchStats.jobs.gone >= 1, 'a 410 Gone on the Job watch', 15_000);
    await writeFile(file, '');
    expect(await outcome).toBe('trained');
    expect(instance.watchStats.jobs.lists).toBeGreaterThan(lists);
  });

  it('reports Unschedulable from the real scheduler while the GPUs are taken, then runs when one frees', async () => {
    const file = `${release}-queue`;
    const statuses: TrainerStatus[] = [];
    const instance = executor({
      settings: { image: 'stand-in/hold:1', env: { STAND_IN_RELEASE: file } },
      onStatus: (_, status) => statuses.push(status),
    });
    // Two nodes with one GPU each: two holders take them, the third waits.
    const holders = [await started(instance, cellA, 'queue-1'), await started(instance, cellB, 'queue-2')];
    const third = await started(instance, unitCells[2]!, 'queue-3');
    await until(() => statuses.some((s) => s.jobName === third.name && s.reason === 'Unschedulable'), 'Unschedulable');
    const unschedulable = statuses.find((s) => s.jobName === third.name && s.reason === 'Unschedulable')!;
    expect(unschedulable.message).toMatch(/0\/\d+ nodes are available: .*2 Insufficient nvidia\.com\/gpu/);
    await writeFile(file, '');
    for (const holder of [...holders, third]) expect(await holder.outcome).toBe('trained');
    expect(statuses.some((s) => s.jobName === third.name && s.reason === 'Running')).toBe(true);
  });

  it('queues a Job created suspended (as Kueue wants) past the pending timeout, and runs it once admitted', async () => {
    const statuses: TrainerStatus[] = [];
    const instance = executor({
      settings: { image: 'stand-in/exit:1', suspend: true, labels: { 'kueue.x-k8s.io/queue-name': 'gpu-queue' } },
      pendingTimeoutMs: 1000,
      onStatus: (_, status) => statuses.push(status),
    });
    const { outcome, name } = await started(instance, cellA, 'suspended-1');
    let settled = false;
    void outcome.finally(() => (settled = true));
    await until(() => statuses.some((s) => s.reason === 'Suspended'), 'the Suspended status');
    await new Promise((resolve) => setTimeout(resolve, 2500)); // past the pending timeout
    expect(settled).toBe(false);
    expect(await podsOf(name)).toEqual([]); // the real Job controller made no pod
    // Kueue admits a workload by unsuspending its Job.
    await batch.patchNamespacedJob(
      { name, namespace, body: { spec: { suspend: false } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(await outcome).toBe('trained');
    expect(statuses.map((s) => s.reason)).toContain('Running');
    const job = await batch.readNamespacedJob({ name, namespace });
    expect(job.spec?.template.metadata?.labels?.['kueue.x-k8s.io/queue-name']).toBe('gpu-queue');
  });

  it('fails a cell queued longer than a queue timeout set for it, with the scheduler’s reason', async () => {
    // The pending timeout (start-up problems) does not apply to a queued trainer; the queue timeout does.
    const instance = executor({ settings: { gpus: 8 }, pendingTimeoutMs: 1000, queueTimeoutMs: 5000 });
    const since = Date.now();
    const { outcome, name } = await started(instance, cellA, 'unschedulable-1');
    const error = await failure(outcome);
    expect(Date.now() - since).toBeGreaterThanOrEqual(4500);
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('was queued for more than');
    expect(error.message).toContain('Insufficient nvidia.com/gpu');
    expect(error.message).toContain('asks for 8 nvidia.com/gpu');
    await until(async () => (await instance.listSweepJobs('unschedulable-1')).length === 0, `${name} deleted`);
  });

  it('a drained node: the eviction gives DisruptionTarget, the cell fails retryable', async () => {
    const instance = executor({ settings: { image: 'stand-in/sleeper:1' } });
    const { outcome, name } = await started(instance, cellA, 'drain-1');
    await until(async () => (await podsOf(name)).some((pod) => pod.status?.phase === 'Running'), 'the pod running');
    const pod = (await podsOf(name))[0]!;
    const core = plane.admin.makeApiClient(CoreV1Api);
    const nodeName = pod.spec!.nodeName!;
    // kubectl drain: cordon, then evict through the Eviction API.
    await core.patchNode(
      { name: nodeName, body: { spec: { unschedulable: true } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    try {
      await core.createNamespacedPodEviction({
        name: pod.metadata!.name!,
        namespace,
        body: { metadata: { name: pod.metadata!.name!, namespace } },
      });
      const error = await failure(outcome);
      expect(error.retryable).toBe(true);
      expect(error.message).toContain('was evicted');
      expect(error.message).toContain('EvictionByEvictionAPI');
    } finally {
      await core.patchNode(
        { name: nodeName, body: { spec: { unschedulable: false } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    }
  });

  it.each([
    {
      case: 'OOMKilled',
      image: 'stand-in/sleeper:1',
      env: {},
      oom: true,
      retryable: true,
      says: ['was OOMKilled', 'its limit (4Gi)', 'resumes from its last checkpoint'],
    },
    {
      case: 'exit code 2',
      image: 'stand-in/exit:1',
      env: { STAND_IN_EXIT: '2', STAND_IN_SAY: 'no cell definition at cells/x/cell.json' },
      oom: false,
      retryable: false,
      says: ['exit code 2', 'ConfigMap transferlab-trainer', 'no cell definition at cells/x/cell.json'],
    },
    {
      case: 'exit code 1 with its log tail',
      image: 'stand-in/exit:1',
      env: { STAND_IN_EXIT: '1', STAND_IN_SAY: 'RangeError: boom' },
      oom: false,
      retryable: true,
      says: ['failed (exit code 1)', 'last lines of its log:\nRangeError: boom'],
    },
    {
      case: 'another exit code',
      image: 'stand-in/exit:1',
      env: { STAND_IN_EXIT: '139' },
      oom: false,
      retryable: true,
      says: ['exited with code 139'],
    },
  ] as Array<{
    case: string;
    image: string;
    env: Record<string, string>;
    oom: boolean;
    retryable: boolean;
    says: string[];
  }>)(
    'turns a failed Job into a reason a user can act on: $case',
    async ({ case: label, image, env, oom, retryable, says }) => {
      const sweepId = `fail-${label.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
      const instance = executor({ settings: { image, env } });
      const { outcome, name } = await started(instance, cellA, sweepId);
      if (oom) {
        await until(async () => kubelet.running().some((key) => key.includes(`/${name}-`)), 'the container running');
        const pod = (await podsOf(name))[0]!;
        kubelet.oomKill(namespace, pod.metadata!.name!);
      }
      const error = await failure(outcome);
      expect(error.retryable).toBe(retryable);
      expect(error.cellId).toBe(cellA.id);
      expect(error.message).toContain(`trainer Job ${namespace}/${name} (cell ${cellA.name}, attempt 1)`);
      for (const text of says) expect(error.message).toContain(text);
    },
  );

  it('fails a Job that runs past activeDeadlineSeconds with DeadlineExceeded (retryable)', async () => {
    const statuses: string[] = [];
    const instance = executor({
      settings: { image: 'stand-in/sleeper:1', activeDeadlineSeconds: 2 },
      onStatus: (_, status) => statuses.push(status.reason),
    });
    const error = await failure(
      instance.run(cellA, { sweepId: 'deadline-1', attempt: 1, signal: new AbortController().signal }),
    );
    expect(statuses).toContain('Running');
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('activeDeadlineSeconds (2 s)');
  });

  it('lets the kubelet retry a failed image pull with back-off, then fails, not retryable, after the limit', async () => {
    const statuses: TrainerStatus[] = [];
    const instance = executor({
      settings: { image: 'stand-in/missing:1' },
      imagePullAttempts: 3,
      onStatus: (_, status) => statuses.push(status),
    });
    const error = await failure(
      instance.run(cellA, { sweepId: 'pull-1', attempt: 1, signal: new AbortController().signal }),
    );
    const reasons = statuses.map((status) => status.reason);
    expect(reasons.filter((reason) => reason === 'ErrImagePull')).toHaveLength(2); // the third ends it
    expect(reasons).toContain('ImagePullBackOff');
    expect(statuses.find((s) => s.reason === 'ImagePullBackOff')?.message).toContain('failed pulls: 1 of at most 3');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('cannot pull its image stand-in/missing:1: 3 pulls failed');
    expect(error.message).toContain('ErrImagePull: failed to pull and unpack image');
    await until(async () => (await instance.listSweepJobs('pull-1')).length === 0, 'the Job deleted');
  });

  it('runs the trainer once a pull that failed succeeds on a later try (the registry came back)', async () => {
    const statuses: string[] = [];
    const instance = executor({
      settings: { image: 'stand-in/late:1' },
      onStatus: (_, status) => statuses.push(status.reason),
    });
    const { outcome } = await started(instance, cellA, 'pull-2');
    await until(() => statuses.includes('ImagePullBackOff'), 'a failed pull');
    kubelet.addImage('stand-in/late:1', STAND_INS['stand-in/exit:1']!);
    expect(await outcome).toBe('trained');
    expect(statuses).toContain('Running');
  });

  it('surfaces a missing ConfigMap (CreateContainerConfigError) and fails after the pending timeout', async () => {
    const statuses: string[] = [];
    const instance = executor({
      settings: { image: 'stand-in/sleeper:1', configMapName: 'not-there' },
      pendingTimeoutMs: 5000,
      onStatus: (_, status) => statuses.push(status.reason),
    });
    const error = await failure(
      instance.run(cellA, { sweepId: 'config-1', attempt: 1, signal: new AbortController().signal }),
    );
    expect(statuses).toContain('CreateContainerConfigError');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('configmap "not-there" not found');
    expect(error.message).toContain('check that ConfigMap not-there and Secret transferlab-s3 exist');
  });

  it('reports a Job deleted behind its back as a retryable failure', async () => {
    const instance = executor({ settings: { image: 'stand-in/sleeper:1' } });
    const { outcome, name } = await started(instance, cellA, 'deleted-1');
    await new Promise((resolve) => setTimeout(resolve, 200)); // let the watch see it
    await batch.deleteNamespacedJob({ name, namespace, propagationPolicy: 'Background' });
    const error = await failure(outcome);
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('was deleted before it finished');
  });

  it('adopts a Job an earlier controller left for the same cell instead of creating another', async () => {
    const sweepId = 'adopt-1';
    const file = `${release}-adopt`;
    const holding = settingsFor(namespace, pool, { image: 'stand-in/hold:1', env: { STAND_IN_RELEASE: file } });
    // Attempt 1 still running (an earlier controller made it); the restarted controller asks for attempt 2.
    await batch.createNamespacedJob({
      namespace,
      body: buildTrainerJob(cellA, { sweepId, attempt: 1, settings: holding }),
    });
    // And a Job of the same attempt that completed while no controller watched.
    const done = buildTrainerJob(cellB, {
      sweepId,
      attempt: 1,
      settings: settingsFor(namespace, pool, { image: 'stand-in/exit:1' }),
    });
    await batch.createNamespacedJob({ namespace, body: done });
    await until(
      async () => jobState(await batch.readNamespacedJob({ name: done.metadata!.name!, namespace })) === 'succeeded',
      'the earlier Job completing',
    );
    const created = () =>
      timeline.entries.filter((e) => e.event === 'created' && e.annotations[ANNOTATIONS.sweepId] === sweepId);
    expect(created()).toHaveLength(2);

    const instance = executor({ settings: { image: 'stand-in/hold:1', env: { STAND_IN_RELEASE: file } } });
    const signal = new AbortController().signal;
    const running = instance.run(cellA, { sweepId, attempt: 2, signal });
    expect(await instance.run(cellB, { sweepId, attempt: 1, signal })).toBe('trained');
    await writeFile(file, '');
    expect(await running).toBe('trained');
    expect(created()).toHaveLength(2);
  });

  it('on abort deletes the Job with background propagation (its pod goes too); close() leaves Jobs alone', async () => {
    const instance = executor({ settings: { image: 'stand-in/sleeper:1' } });
    const first = await started(instance, cellA, 'abort-1');
    await until(async () => (await podsOf(first.name)).length === 1, 'the pod');
    first.abort();
    expect(await first.outcome).toBe('interrupted');
    // The garbage collector removes the pod (the simulated kubelet stops its process first).
    await until(async () => (await podsOf(first.name)).length === 0, 'the pod collected');
    const second = await started(instance, cellB, 'abort-2');
    instance.detach();
    second.abort();
    expect(await second.outcome).toBe('interrupted');
    await instance.close();
    expect(
      (await batch.readNamespacedJob({ name: second.name, namespace })).metadata?.deletionTimestamp,
    ).toBeUndefined();
    expect(
      (await failure(instance.run(cellA, { sweepId: 'x', attempt: 1, signal: new AbortController().signal }))).message,
    ).toContain('closed');
    await batch.deleteNamespacedJob({ name: second.name, namespace, propagationPolicy: 'Background' });
  });

  it('lists and deletes a sweep’s Jobs', async () => {
    const instance = executor();
    const sweepId = 'leftover-1';
    await batch.createNamespacedJob({
      namespace,
      body: buildTrainerJob(cellA, {
        sweepId,
        attempt: 1,
        settings: settingsFor(namespace, pool, { image: 'stand-in/sleeper:1' }),
      }),
    });
    const failing = buildTrainerJob(cellB, {
      sweepId,
      attempt: 1,
      settings: settingsFor(namespace, pool, { image: 'stand-in/exit:1', env: { STAND_IN_EXIT: '1' } }),
    });
    await batch.createNamespacedJob({ namespace, body: failing });
    await until(async () => (await instance.listSweepJobs(sweepId)).some((job) => job.state === 'failed'), 'a failure');
    const listed = await instance.listSweepJobs(sweepId);
    expect(listed.map((job) => [job.cellName, job.attempt, job.state])).toEqual(
      expect.arrayContaining([
        [cellA.name, 1, 'active'],
        [cellB.name, 1, 'failed'],
      ]),
    );
    expect(listed.find((job) => job.state === 'failed')?.reason).toContain('BackoffLimitExceeded');
    expect(await instance.deleteSweepJobs(sweepId)).toHaveLength(2);
    await until(async () => (await instance.listSweepJobs(sweepId)).length === 0, 'the Jobs gone');
  });

  describe('with the SweepController (scripted steps; stand-in trainers)', () => {
    const steps: CellSteps = {
      createSplit: async () => {},
      transplant: async () => {},
      evaluate: async (cell) => ({ cellId: cell.id }) as Awaited<ReturnType<CellSteps['evaluate']>>,
      measure: async () => {
        throw new Error('this sweep has no measure cells');
      },
    };
    const sweepJobs = (sweepId: string, event: TimelineEntry['event']) =>
      timeline.entries.filter((e) => e.event === event && e.annotations[ANNOTATIONS.sweepId] === sweepId);

    it('cancel deletes the running Jobs', async () => {
      const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-k8s-cancel-')));
      const controller = new SweepController({
        store,
        bus: createInProcessBus(),
        steps,
        executor: executor({ settings: { image: 'stand-in/sleeper:1' } }),
      });
      const sweep = await controller.start(unitSpec, { specDir: '.' });
      await until(() => sweepJobs(sweep.id, 'created').length === 2, 'two Jobs');
      await controller.cancel(sweep.id);
      await until(() => sweepJobs(sweep.id, 'deleted').length === 2, 'both Jobs deleted');
      expect((await controller.get(sweep.id))?.sweep.state).toBe('cancelled');
      await controller.close();
    });

    it('a restarted controller adopts the running Jobs: no duplicates, and the sweep finishes', async () => {
      const file = `${release}-restart`;
      const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-k8s-restart-')));
      const bus: Bus = createInProcessBus(); // KV outlives the controller, as NATS KV would
      const holding = { image: 'stand-in/hold:1', env: { STAND_IN_RELEASE: file } };
      const first = executor({ settings: holding });
      const controller = new SweepController({ store, bus, steps, executor: first });
      const sweep = await controller.start(unitSpec, { specDir: '.' });
      await until(() => sweepJobs(sweep.id, 'created').length === 2, 'two Jobs');
      // Shutdown as services/controller does it: keep the Jobs, stop driving.
      first.detach();
      await controller.close();

      const restarted = new SweepController({ store, bus, steps, executor: executor({ settings: holding }) });
      expect(await restarted.resume()).toEqual([sweep.id]);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(sweepJobs(sweep.id, 'created')).toHaveLength(2); // adopted, not duplicated
      expect(sweepJobs(sweep.id, 'deleted')).toHaveLength(0);
      await writeFile(file, '');
      expect((await restarted.wait(sweep.id))?.state).toBe('succeeded');
      // One Job per cell over both controllers.
      expect(sweepJobs(sweep.id, 'created')).toHaveLength(unitCells.length);
      await restarted.close();
    });
  });
});

// ---- end to end: the simulated kubelet runs the real trainer ----------------------------------

const run = promisify(execFile);

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

describe('a tiny sweep end to end: SweepController + KubernetesExecutor + the real control plane + the real trainer', () => {
  let nats: { url: string; stop: () => Promise<void> };
  let bus: Bus;
  let kubelet: SimulatedKubelet;
  let controller: SweepController | undefined;
  const pool = `e2e-${process.pid}`;
  const output = new Map<string, string[]>();

  beforeAll(async () => {
    nats = await startNats();
    bus = await connectNatsBus({ servers: nats.url, name: 'k8s-executor-test' });
    kubelet = await SimulatedKubelet.start({
      kubeConfig: plane.admin,
      pool,
      nodes: [
        { name: `${pool}-a`, gpus: 1 },
        { name: `${pool}-b`, gpus: 1 },
      ],
      // The trainer image's entrypoint is the trainer's main: here, from the sources through tsx.
      images: { [IMAGE]: [process.execPath, '--import', import.meta.resolve('tsx'), TRAINER_ENTRY] },
      cwd: REPO,
      onOutput: (pod, line) => {
        if (!output.has(pod)) output.set(pod, []);
        output.get(pod)!.push(line);
      },
    });
  }, 180_000);
  afterAll(async () => {
    await controller?.close(); // when the test failed half-way
    await kubelet?.close();
    await bus?.close();
    await nats?.stop();
  });

  it('runs the cells as Jobs in dependency order within the concurrency limit; an OOMKilled pod is retried and resumes', async () => {
    const root = await mkdtemp(join(tmpdir(), 'tl-k8s-e2e-'));
    const store = new LocalFolderStore(root);
    // What the chart's ConfigMap and Secret would hold; the local folder stands in for S3.
    const { namespace, kubeConfig } = await chartNamespace('tl-e2e', {
      TRANSFERLAB_STORE: root,
      TRANSFERLAB_NATS_URL: nats.url,
      TRANSFERLAB_PROGRESS_INTERVAL_MS: '200',
      // The test kills baseA's pod between its epoch-1 checkpoint and the end of epoch 2. On
      // tensorflow that tiny epoch ends within milliseconds, before the kill lands on a busy
      // machine; wasm leaves the window the test was written for. The backends are tested elsewhere.
      TRANSFERLAB_BACKEND: 'wasm',
    });
    const timeline = await jobTimeline(plane.admin, namespace);
    const core = plane.admin.makeApiClient(CoreV1Api);

    const steps: CellSteps = {
      createSplit: async (task, options) => void (await ensureSplits(store, [task], { specDir: options.specDir })),
      transplant: async (cell) => void (await transplantCell(store, cell)),
      evaluate: (cell) => evaluateCell(store, cell),
      measure: (cell) => measureCell(store, cell),
    };
    const statuses: Array<{ cellId: string; reason: string }> = [];
    const executor = new KubernetesExecutor({
      kubeConfig,
      settings: settingsFor(namespace, pool, { terminationGracePeriodSeconds: 10 }),
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

    try {
      const sweep = await controller.start(e2eSpec, { specDir: REPO });
      // Kill baseA's first pod as the OOM killer would, once it has checkpointed epoch 1 of 2.
      const baseAPod = async () =>
        (await core.listNamespacedPod({ namespace })).items.find(
          (pod) => pod.metadata?.annotations?.[ANNOTATIONS.cellId] === baseA.id,
        );
      await until(async () => (await baseAPod()) !== undefined, "baseA's pod", 60_000);
      const firstPod = (await baseAPod())!;
      const checkpoint = `${cellKeys.checkpoint(baseA.id)}/manifest.json`;
      await until(async () => (await store.stat(checkpoint)) !== undefined, 'baseA checkpoint', 120_000);
      kubelet.oomKill(namespace, firstPod.metadata!.name!);

      const final = await controller.wait(sweep.id);
      const current = await controller.get(sweep.id);
      const summary = current?.cells.map((record) => `${record.cell.name}: ${record.state} ${record.error ?? ''}`);
      expect(final?.state, summary?.join('\n')).toBe('succeeded');

      // Every cell has its result in the store.
      for (const cell of plan.cells) expect(await readResult(store, cell.id)).toBeDefined();

      const entries = timeline.entries.filter((entry) => entry.annotations[ANNOTATIONS.sweepId] === sweep.id);
      const cellOf = (entry: TimelineEntry) => entry.annotations[ANNOTATIONS.cellId];

      // baseA: attempt 1 OOMKilled (Failed), attempt 2 a new Job that resumed from the checkpoint.
      const baseAJobs = entries.filter((e) => e.event === 'created' && cellOf(e) === baseA.id).map((e) => e.name);
      expect(baseAJobs.map((name) => name.slice(-3))).toEqual(['-a1', '-a2']);
      expect(entries.some((e) => e.event === 'failed' && e.name === baseAJobs[0])).toBe(true);
      const baseARecord = current!.cells.find((record) => record.cell.id === baseA.id)!;
      expect(baseARecord.attempts).toBe(2);
      expect(baseARecord.error ?? '').toBe(''); // cleared on success
      expect(failures).toHaveLength(1);
      expect(failures[0]).toContain(
        `trainer Job ${namespace}/${baseAJobs[0]} (cell baseA seed=1, attempt 1) was OOMKilled`,
      );
      const secondPod = [...output.keys()].find((pod) => pod.startsWith(`${baseAJobs[1]}-`))!;
      const resumed = output.get(secondPod)!.find((line) => line.includes('resuming from checkpoint'));
      expect(resumed, `attempt 2 did not resume:\n${output.get(secondPod)!.join('\n')}`).toBeDefined();
      expect(JSON.parse(resumed!)).toMatchObject({ epoch: 1 });

      // Dependency order: no transfer Job before its base cell's Job completed.
      for (const cell of plan.cells.filter((c) => c.kind === 'transfer')) {
        const createdAt = entries.find((e) => e.event === 'created' && cellOf(e) === cell.id)!.at;
        const sourceDone = entries.find((e) => e.event === 'succeeded' && cellOf(e) === cell.sourceCellId)!.at;
        expect(createdAt).toBeGreaterThanOrEqual(sourceDone);
      }
      // Never more than the sweep's concurrency (2) Jobs at once.
      let active = 0;
      let most = 0;
      for (const entry of entries) {
        active += entry.event === 'created' ? 1 : entry.event === 'deleted' ? 0 : -1;
        most = Math.max(most, active);
      }
      expect(most).toBeLessThanOrEqual(2);
      expect(entries.filter((e) => e.event === 'created')).toHaveLength(plan.cells.length + 1);
      expect(statuses.some((s) => s.reason === 'Running')).toBe(true);
    } finally {
      await controller.close();
      controller = undefined;
      await timeline.stop();
    }
  });
});
