// GPU-cluster capacity against the REAL control plane (scripts/kube-start.sh) and a REAL
// nats-server: the global trainer cap kept in the sweeps' KV bucket (across sweeps and across a
// controller restart), a Pending trainer as a queued cell that waits with no time limit until a
// GPU node joins, a ResourceQuota's refusal (FailedCreate) on the cell, and the trace context
// handed to trainer Jobs. As in kubernetes-executor.test.ts, only the node agent is simulated
// (test/support/simulated-kubelet.ts); the trainers are stand-in processes and the cell steps
// scripted: what is under test is scheduling, not training.
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BatchV1Api, CoreV1Api, type KubeConfig, type V1Job, makeInformer } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateSpec } from '@transferlab/experiment';
import { type Bus, LocalFolderStore, connectNatsBus } from '@transferlab/platform';
import { type Telemetry, startTelemetry } from '@transferlab/platform/telemetry';
import { KubernetesExecutor, type TrainerStatus, jobState } from '@transferlab/runner/controller/kubernetes-executor';
import { ANNOTATIONS, type TrainerJobSettings } from '@transferlab/runner/controller/kubernetes-job';
import type { CellSteps } from '@transferlab/runner/controller/ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import {
  type ControlPlane,
  controlPlane,
  createNamespace,
  installChartRbac,
  serviceAccountKubeConfig,
} from './support/kube-control-plane.ts';
import { REPO, freePort } from './support/servers.ts';
import { POOL_LABEL, SimulatedKubelet } from './support/simulated-kubelet.ts';

const run = promisify(execFile);
const node = (code: string): string[] => [process.execPath, '-e', code];
const STAND_INS: Record<string, string[]> = {
  // Runs until the file STAND_IN_RELEASE exists, then exits 0.
  'stand-in/hold:1': node(
    'const fs = require("fs"); setInterval(() => { if (fs.existsSync(process.env.STAND_IN_RELEASE)) process.exit(0); }, 50)',
  ),
  'stand-in/exit:1': node('process.exit(0)'),
};

/**
 * Four cells, none depending on another (base cells only), so only the caps limit what runs.
 * Cells are identified by what they train: sweeps of different widths share none.
 */
const baseSpec = (name: string, concurrency = 4, width = 0.25) =>
  validateSpec({
    name,
    dataset: { kind: 'mnist' },
    net: { kind: 'small', width },
    layers: [1],
    arms: ['baseA', 'baseB'],
    repeats: 2,
    concurrency,
  });

const steps: CellSteps = {
  createSplit: async () => {},
  transplant: async () => {},
  evaluate: async (cell) => ({ cellId: cell.id }) as Awaited<ReturnType<CellSteps['evaluate']>>,
  measure: async () => {
    throw new Error('these sweeps have no measure cells');
  },
};

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

let plane: ControlPlane;
let nats: { url: string; stop: () => Promise<void> };
let telemetry: Telemetry;
beforeAll(async () => {
  // Tracing on, so the controller's cell spans have a trace context to hand to the Jobs.
  telemetry = await startTelemetry({ service: 'kubernetes-queueing-test', metricsPort: 'off' });
  plane = await controlPlane();
  // A nats-server of its own: a restarted controller resumes every unfinished sweep of the
  // bucket, and other test files' sweeps must not be among them.
  {
    const dir = await mkdtemp(join(tmpdir(), 'tl-queue-nats-'));
    const { stdout } = await run('bash', [
      join(REPO, 'scripts/nats-start.sh'),
      dir,
      String(await freePort()),
      String(await freePort()),
    ]);
    const url = /^TRANSFERLAB_NATS_URL=(\S+)$/m.exec(stdout)?.[1];
    if (!url) throw new Error(`nats-start.sh printed no TRANSFERLAB_NATS_URL: ${stdout}`);
    nats = { url, stop: async () => void (await run('bash', [join(REPO, 'scripts/nats-stop.sh'), dir])) };
  }
}, 95 * 60_000);
afterAll(async () => {
  await nats?.stop();
  await plane?.stop();
  await telemetry?.shutdown();
});

/** A namespace set up as the chart would (its RBAC, the trainers' ConfigMap and Secret); the controller's credentials. */
async function chartNamespace(prefix: string) {
  const namespace = await createNamespace(plane.admin, prefix, { restricted: true });
  const account = await installChartRbac(plane.admin, namespace, 'test');
  const core = plane.admin.makeApiClient(CoreV1Api);
  await core.createNamespacedConfigMap({
    namespace,
    body: { metadata: { name: 'transferlab-trainer' }, data: { TRANSFERLAB_STORE: '/nowhere' } },
  });
  await core.createNamespacedSecret({
    namespace,
    body: { metadata: { name: 'transferlab-s3' }, stringData: { 'access-key': 'a', 'secret-key': 's' } },
  });
  return { namespace, kubeConfig: await serviceAccountKubeConfig(plane.admin, namespace, account) };
}

function settingsFor(namespace: string, pool: string, overrides: Partial<TrainerJobSettings> = {}): TrainerJobSettings {
  return {
    namespace,
    instance: 'test',
    image: 'stand-in/exit:1',
    gpus: 1,
    resources: { limits: { memory: '1Gi' } },
    configMapName: 'transferlab-trainer',
    s3Secret: { name: 'transferlab-s3', accessKeyKey: 'access-key', secretKeyKey: 'secret-key' },
    terminationGracePeriodSeconds: 5,
    nodeSelector: { [POOL_LABEL]: pool },
    ...overrides,
  };
}

/**
 * The namespace's trainer Jobs as an admin watch sees them: the most that were active (created,
 * neither finished nor deleted) at once, and every Job created.
 */
async function activeJobs(admin: KubeConfig, namespace: string) {
  const batch = admin.makeApiClient(BatchV1Api);
  const informer = makeInformer<V1Job>(admin, `/apis/batch/v1/namespaces/${namespace}/jobs`, () =>
    batch.listNamespacedJob({ namespace }),
  );
  const active = new Set<string>();
  const created: V1Job[] = [];
  let most = 0;
  const update = (job: V1Job, gone = false) => {
    const name = job.metadata!.name!;
    if (!gone && jobState(job) === 'active') active.add(name);
    else active.delete(name);
    most = Math.max(most, active.size);
  };
  informer.on('add', (job) => {
    created.push(job);
    update(job);
  });
  informer.on('update', (job) => update(job));
  informer.on('delete', (job) => update(job, true));
  await informer.start();
  return { active, created, most: () => most, stop: () => informer.stop() };
}

describe('one trainer cap over every sweep, kept in the NATS KV bucket', () => {
  let kubelet: SimulatedKubelet;
  let bus: Bus;
  const pool = `cap-${process.pid}`;
  const release = join(tmpdir(), `tl-cap-release-${process.pid}`);

  beforeAll(async () => {
    // Plenty of GPUs: only the cap limits the trainers.
    kubelet = await SimulatedKubelet.start({
      kubeConfig: plane.admin,
      pool,
      nodes: [{ name: `${pool}-a`, gpus: 8 }],
      images: STAND_INS,
    });
    bus = await connectNatsBus({ servers: nats.url, name: 'kubernetes-queueing-test' });
  }, 60_000);
  afterAll(async () => {
    await kubelet?.close();
    await bus?.close();
  });

  it('two sweeps together never exceed it, nor after a controller restart with trainers still running', async () => {
    const { namespace, kubeConfig } = await chartNamespace('tl-cap');
    const jobs = await activeJobs(plane.admin, namespace);
    const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-cap-')));
    const holding = settingsFor(namespace, pool, { image: 'stand-in/hold:1', env: { STAND_IN_RELEASE: release } });
    const controllerWith = (executor: KubernetesExecutor) =>
      new SweepController({
        store,
        bus,
        steps,
        executor,
        trainerCap: 3,
        leases: { ttlMs: 3000, pollMs: 100 },
      });
    const first = new KubernetesExecutor({ kubeConfig, settings: holding });
    let controller = controllerWith(first);
    try {
      // Two sweeps of 4 cells, each allowed 4 at once: 8 could run; the cap lets 3.
      const sweeps = [
        await controller.start(baseSpec('cap-one'), { specDir: '.' }),
        await controller.start(baseSpec('cap-two', 4, 0.5), { specDir: '.' }),
      ];
      await until(() => jobs.active.size === 3, 'three trainer Jobs running');
      await new Promise((resolve) => setTimeout(resolve, 1500)); // more polls of the waiting cells
      expect(jobs.active.size).toBe(3);
      // The waiting cells say why they wait.
      const waiting = (await Promise.all(sweeps.map(async (s) => (await controller.get(s.id))!.cells)))
        .flat()
        .filter((record) => record.status?.startsWith('queued: all 3 trainer slots are taken'));
      expect(waiting.length).toBeGreaterThanOrEqual(5 - 3);

      // Restart as services/controller does at SIGTERM: the Jobs run on, their slots are kept.
      await controller.close({ detach: true });
      expect(jobs.active.size).toBe(3);
      controller = controllerWith(new KubernetesExecutor({ kubeConfig, settings: holding }));
      expect((await controller.resume()).sort()).toEqual(sweeps.map((s) => s.id).sort());
      await new Promise((resolve) => setTimeout(resolve, 2500)); // the resumed cells adopt, the rest poll
      expect(jobs.active.size).toBe(3);
      expect(jobs.most()).toBe(3);
      expect(jobs.created).toHaveLength(3); // adopted, not created again

      await writeFile(release, '');
      for (const sweep of sweeps) expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
      expect(jobs.most()).toBe(3);
      // One Job per cell over both controllers.
      expect(jobs.created).toHaveLength(8);
    } finally {
      await controller.close();
      await jobs.stop();
    }
  });
});

describe('a Pending trainer is a queued cell', () => {
  const pool = `starved-${process.pid}`;
  const kubelets: SimulatedKubelet[] = [];
  afterAll(async () => {
    for (const kubelet of kubelets) await kubelet.close();
  });

  it('a GPU-starved sweep queues with the scheduler’s reason, past the pending timeout, and finishes when a GPU node joins', async () => {
    const { namespace, kubeConfig } = await chartNamespace('tl-starved');
    const bus = await connectNatsBus({ servers: nats.url, name: 'kubernetes-queueing-starved' });
    // A node of the pool with no GPU: the scheduler says Insufficient nvidia.com/gpu.
    kubelets.push(
      await SimulatedKubelet.start({
        kubeConfig: plane.admin,
        pool,
        nodes: [{ name: `${pool}-cpu`, gpus: 0 }],
        images: STAND_INS,
      }),
    );
    const statuses: TrainerStatus[] = [];
    const controller = new SweepController({
      store: new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-starved-'))),
      bus,
      steps,
      executor: new KubernetesExecutor({
        kubeConfig,
        settings: settingsFor(namespace, pool),
        // Start-up problems would fail the cell in 1 s; waiting for a GPU is not one.
        pendingTimeoutMs: 1000,
        onStatus: (_, status) => statuses.push(status),
      }),
    });
    try {
      const sweep = await controller.start(baseSpec('starved', 2), { specDir: '.' });
      const queuedCells = async () =>
        (await controller.get(sweep.id))!.cells.filter((record) => record.status?.startsWith('queued: Unschedulable:'));
      await until(async () => (await queuedCells()).length === 2, 'two cells queued', 60_000).catch(async (error) => {
        const cells = (await controller.get(sweep.id))!.cells;
        throw new Error(`${(error as Error).message}: ${cells.map((r) => `${r.state} ${r.status}`).join('; ')}`);
      });
      const [queued] = await queuedCells();
      expect(queued!.state).toBe('training');
      expect(queued!.status).toMatch(/0\/\d+ nodes are available: .*Insufficient nvidia\.com\/gpu/);
      expect(statuses.every((status) => status.reason !== 'Unschedulable' || status.queued)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 3000)); // three pending timeouts
      expect((await controller.get(sweep.id))!.sweep.state).toBe('running');
      expect((await controller.get(sweep.id))!.cells.filter((r) => r.state === 'failed')).toEqual([]);

      // Capacity appears: a GPU node joins the pool; the scheduler places the queued pods.
      kubelets.push(
        await SimulatedKubelet.start({
          kubeConfig: plane.admin,
          pool,
          nodes: [{ name: `${pool}-gpu`, gpus: 1 }],
          images: STAND_INS,
        }),
      );
      const final = await controller.wait(sweep.id);
      expect(final?.state).toBe('succeeded');
      const current = await controller.get(sweep.id);
      expect(current!.cells.every((record) => record.attempts === 1)).toBe(true);
    } finally {
      await controller.close();
      await bus.close();
    }
  });

  it('a ResourceQuota refusing the pod (FailedCreate) shows on the cell, queued, and the cell runs once the quota allows', async () => {
    const { namespace, kubeConfig } = await chartNamespace('tl-quota');
    const core = plane.admin.makeApiClient(CoreV1Api);
    await core.createNamespacedResourceQuota({
      namespace,
      body: { metadata: { name: 'gpus' }, spec: { hard: { 'requests.nvidia.com/gpu': '0' } } },
    });
    // Quota admission refuses pods only once the quota controller has computed its usage.
    await until(
      async () => (await core.readNamespacedResourceQuota({ name: 'gpus', namespace })).status?.hard !== undefined,
      'the quota status',
    );
    const kubelet = await SimulatedKubelet.start({
      kubeConfig: plane.admin,
      pool: `${pool}-q`,
      nodes: [{ name: `${pool}-q-gpu`, gpus: 1 }],
      images: STAND_INS,
    });
    kubelets.push(kubelet);
    const bus = await connectNatsBus({ servers: nats.url, name: 'kubernetes-queueing-quota' });
    const controller = new SweepController({
      store: new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-quota-'))),
      bus,
      steps,
      executor: new KubernetesExecutor({
        kubeConfig,
        settings: settingsFor(namespace, `${pool}-q`),
        pendingTimeoutMs: 1000,
        eventPollMs: 200,
      }),
    });
    try {
      const sweep = await controller.start(validateSpec({ ...baseSpec('quota', 1), repeats: 1, arms: ['baseA'] }), {
        specDir: '.',
      });
      let status = '';
      await until(
        async () => {
          status = (await controller.get(sweep.id))!.cells[0]?.status ?? '';
          return status.startsWith('queued: FailedCreate:');
        },
        'the FailedCreate status on the cell',
        60_000,
      );
      expect(status).toContain('exceeded quota: gpus');
      expect(status).toContain('requests.nvidia.com/gpu');
      await new Promise((resolve) => setTimeout(resolve, 2000)); // past the pending timeout: queued, not stuck
      expect((await controller.get(sweep.id))!.cells[0]?.state).toBe('training');

      await core.replaceNamespacedResourceQuota({
        name: 'gpus',
        namespace,
        body: { metadata: { name: 'gpus' }, spec: { hard: { 'requests.nvidia.com/gpu': '1' } } },
      });
      // The Job controller retries the pod on its own back-off.
      expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
    } finally {
      await controller.close();
      await bus.close();
    }
  }, 180_000);
});

describe('telemetry reaches trainer Jobs', () => {
  it('each Job carries TRANSFERLAB_TRACEPARENT: the sweep’s trace, its own cell span', async () => {
    const { namespace, kubeConfig } = await chartNamespace('tl-trace');
    const pool = `trace-${process.pid}`;
    const kubelet = await SimulatedKubelet.start({
      kubeConfig: plane.admin,
      pool,
      nodes: [{ name: `${pool}-a`, gpus: 4 }],
      images: STAND_INS,
    });
    const bus = await connectNatsBus({ servers: nats.url, name: 'kubernetes-queueing-trace' });
    const controller = new SweepController({
      store: new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-trace-'))),
      bus,
      steps,
      executor: new KubernetesExecutor({ kubeConfig, settings: settingsFor(namespace, pool) }),
    });
    try {
      const sweep = await controller.start(baseSpec('trace', 2), { specDir: '.' });
      expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
      const jobs = (await plane.admin.makeApiClient(BatchV1Api).listNamespacedJob({ namespace })).items.filter(
        (job) => job.metadata?.annotations?.[ANNOTATIONS.sweepId] === sweep.id,
      );
      expect(jobs).toHaveLength(4);
      const parents = jobs.map(
        (job) =>
          job.spec?.template.spec?.containers[0]?.env?.find((v) => v.name === 'TRANSFERLAB_TRACEPARENT')?.value ?? '',
      );
      for (const parent of parents) expect(parent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(new Set(parents.map((parent) => parent.split('-')[1])).size).toBe(1); // one trace: the sweep's
      expect(new Set(parents.map((parent) => parent.split('-')[2])).size).toBe(4); // each cell's own span
    } finally {
      await controller.close();
      await bus.close();
      await kubelet.close();
    }
  });
});
