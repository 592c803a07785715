// Network faults the real control plane cannot stage (kubernetes-executor.test.ts runs everything
// else against a real kube-apiserver): a watch connection that breaks mid-stream. These run
// against the FAKE API server in test/support/fake-kube-apiserver.ts, through the real
// @kubernetes/client-node.
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { KubernetesExecutor } from '@transferlab/runner/controller/kubernetes-executor';
import { ANNOTATIONS, type TrainerJobSettings } from '@transferlab/runner/controller/kubernetes-job';
import { FakeKubeApiServer } from './support/fake-kube-apiserver.ts';

const NAMESPACE = 'ml';
const settings: TrainerJobSettings = {
  namespace: NAMESPACE,
  instance: 'test',
  image: 'transferlab/trainer:test',
  gpus: 1,
  configMapName: 'transferlab-trainer',
};
const [cell] = expandGrid(
  validateSpec({
    name: 'faults',
    dataset: { kind: 'mnist' },
    net: { kind: 'small', width: 0.25 },
    layers: [1],
    arms: ['baseA'],
  }),
).cells as [Cell];
const COMPLETE = { succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] };

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('KubernetesExecutor watch faults (FAKE API server)', () => {
  let fake: FakeKubeApiServer;
  let executor: KubernetesExecutor;

  beforeAll(async () => {
    fake = await FakeKubeApiServer.start();
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'fake', server: fake.url, skipTLSVerify: true }],
      users: [{ name: 'test', token: 'not-a-real-token' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'test', namespace: NAMESPACE }],
      currentContext: 'fake',
    });
    executor = new KubernetesExecutor({
      kubeConfig,
      settings,
      watch: { reconnectDelayMs: { initialMs: 20, maxMs: 200 } },
    });
  });
  afterAll(async () => {
    await executor?.close();
    await fake?.close();
  });

  it('reconnects after a dropped watch connection and replays what it missed', async () => {
    const outcome = executor.run(cell, { sweepId: 'drop-1', attempt: 1, signal: new AbortController().signal });
    let name = '';
    await until(() => {
      name =
        fake.jobs(NAMESPACE).find((j) => j.metadata?.annotations?.[ANNOTATIONS.sweepId] === 'drop-1')?.metadata?.name ??
        '';
      return name !== '' && fake.openWatches >= 2;
    }, 'the Job and both watches');
    const watches = fake.watchRequests.Job;
    fake.dropWatches();
    fake.setJobStatus(NAMESPACE, name, COMPLETE); // happens while the client is away
    expect(await outcome).toBe('trained');
    expect(fake.watchRequests.Job).toBeGreaterThan(watches);
  });
});
