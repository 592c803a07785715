// The scale run: a sweep's cells through SweepController + KubernetesExecutor against the real
// control plane, on kwok nodes (simulated by kwok: no process runs, its "fast" stages move each
// pod to Running and then Succeeded at once). What it measures is the controller's and the
// control plane's own cost per cell: cells per second, and API calls per cell as the real
// API server's audit log counts them for the controller's ServiceAccount.
//
// Run by test/kubernetes-scale.test.ts (small) and by scripts/kube-scale.ts (the 1,000-cell figures).
import { readFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore, createInProcessBus } from '@transferlab/platform';
import { KubernetesExecutor } from '@transferlab/runner/controller/kubernetes-executor';
import type { CellSteps } from '@transferlab/runner/controller/ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { createNamespace, installChartRbac, serviceAccountKubeConfig } from './kube-control-plane.ts';

export interface ScaleOptions {
  admin: KubeConfig;
  auditLog: string;
  nodes: number;
  gpusPerNode: number;
  /** Seeds of the default grid (30 cells each: 2 base cells, 4 transfer arms × 7 layers). */
  repeats: number;
  /** The sweep's concurrency. Default: every GPU of the pool. */
  concurrency?: number;
}

export interface ScaleResult {
  cells: number;
  state: string | undefined;
  seconds: number;
  cellsPerSecond: number;
  apiCalls: number;
  apiCallsPerCell: number;
  /** Calls per verb (create, get, list, watch, delete, ...). */
  byVerb: Record<string, number>;
}

const KWOK_TAINT = { key: 'kwok.x-k8s.io/node', value: 'fake', effect: 'NoSchedule' };

export async function runScale(options: ScaleOptions): Promise<ScaleResult> {
  const { admin } = options;
  const core = admin.makeApiClient(CoreV1Api);
  const namespace = await createNamespace(admin, 'tl-scale', { restricted: true });
  const account = await installChartRbac(admin, namespace, 'test');
  const kubeConfig = await serviceAccountKubeConfig(admin, namespace, account);
  const pool = namespace;
  const nodeNames: string[] = [];
  for (let i = 0; i < options.nodes; i += 1) {
    const name = `${pool}-kwok-${i}`;
    nodeNames.push(name);
    const capacity = { cpu: '64', memory: '512Gi', pods: '110', 'nvidia.com/gpu': String(options.gpusPerNode) };
    // kwok takes over nodes with its annotation (scripts/kube-start.sh): Ready, lease, pods.
    await core.createNode({
      body: {
        metadata: {
          name,
          annotations: { 'kwok.x-k8s.io/node': 'fake' },
          labels: { 'kubernetes.io/hostname': name, type: 'kwok', 'transferlab.io/simulated-pool': pool },
        },
        spec: { taints: [KWOK_TAINT] },
        status: { capacity, allocatable: capacity },
      },
    });
  }
  const spec = validateSpec({
    name: 'scale',
    dataset: { kind: 'mnist' },
    arms: ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+'],
    repeats: options.repeats,
    concurrency: options.concurrency ?? options.nodes * options.gpusPerNode,
  });
  const cells = expandGrid(spec).cells.length;
  const executor = new KubernetesExecutor({
    kubeConfig,
    settings: {
      namespace,
      instance: 'test',
      image: 'transferlab/trainer:kwok',
      gpus: 1,
      configMapName: 'transferlab-trainer',
      nodeSelector: { 'transferlab.io/simulated-pool': pool },
      tolerations: [{ key: KWOK_TAINT.key, operator: 'Exists', effect: 'NoSchedule' }],
    },
  });
  const steps: CellSteps = {
    createSplit: async () => {},
    transplant: async () => {},
    evaluate: async (cell) => ({ cellId: cell.id }) as Awaited<ReturnType<CellSteps['evaluate']>>,
    measure: async () => {
      throw new Error('the scale sweep has no measure cells');
    },
  };
  const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-scale-')));
  const controller = new SweepController({ store, bus: createInProcessBus(), steps, executor });
  const user = `system:serviceaccount:${namespace}:${account}`;
  try {
    const startedAt = Date.now();
    const sweep = await controller.start(spec, { specDir: '.' });
    const final = await controller.wait(sweep.id);
    const seconds = (Date.now() - startedAt) / 1000;
    await controller.close();
    await executor.close();
    const byVerb: Record<string, number> = {};
    let apiCalls = 0;
    for (const line of (await readFile(options.auditLog, 'utf8')).split('\n')) {
      if (!line.includes(user)) continue;
      const event = JSON.parse(line) as { user?: { username?: string }; verb?: string };
      if (event.user?.username !== user) continue;
      apiCalls += 1;
      byVerb[event.verb ?? '?'] = (byVerb[event.verb ?? '?'] ?? 0) + 1;
    }
    return {
      cells,
      state: final?.state,
      seconds,
      cellsPerSecond: cells / seconds,
      apiCalls,
      apiCallsPerCell: apiCalls / cells,
      byVerb,
    };
  } finally {
    await controller.close().catch(() => undefined);
    await executor.close().catch(() => undefined);
    for (const name of nodeNames) await core.deleteNode({ name }).catch(() => undefined);
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
  }
}
